// The cluster panel: every feedd node heartbeating into this store (this one too), its role,
// state and exchanges; a node whose heartbeat stopped is marked stale.

import { exchangeColour, exchangeLabel, fmtAge } from "./api.js";
import { status } from "./store.js";

const ROLE_ORDER = { all: 0, collector: 1, api: 2 };

export const ClusterPanel = {
  name: "ClusterPanel",
  setup() {
    return { status };
  },
  computed: {
    nodes() {
      const list = (this.status && this.status.cluster) || [];
      return [...list].sort(
        (a, b) =>
          (ROLE_ORDER[a.role] ?? 9) - (ROLE_ORDER[b.role] ?? 9) ||
          String(a.host).localeCompare(String(b.host)) ||
          (a.pid || 0) - (b.pid || 0),
      );
    },
    stale() {
      return this.nodes.filter((n) => n.stale).length;
    },
  },
  methods: {
    exchangeColour,
    exchangeLabel,
    fmtAge,
    // "stale" outranks what the node last said of itself: it may be long dead.
    shown(node) {
      if (node.stale) return "stale";
      if (node.state === "stopped") return "stopped";
      return node.health || node.state || "?";
    },
    badge(node) {
      const s = this.shown(node);
      return s === "stale" ? "h-down" : s === "healthy" ? "h-healthy" : s === "stopped" ? "h-disabled" : "h-degraded";
    },
    exchanges(node) {
      return Object.entries(node.exchanges || {}).map(([name, ex]) => ({ name, ...ex }));
    },
  },
  template: `
  <section class="panel cluster" aria-label="cluster">
    <header class="panel-head"><h2>Cluster</h2>
      <span class="muted" data-field="node-count">{{ nodes.length }} node{{ nodes.length === 1 ? "" : "s" }}</span>
      <span v-if="stale" class="badge h-down" data-field="stale-count">{{ stale }} stale</span></header>
    <div class="cluster-body"><table class="grid">
      <colgroup><col style="width: 31%"><col style="width: 23%"><col style="width: 19%"><col style="width: 9%"><col style="width: 18%"></colgroup>
      <thead><tr><th>node</th><th>role</th><th>state</th><th title="exchanges collected (dim: not healthy)">ex</th><th class="num" title="last heartbeat">beat</th></tr></thead>
      <tbody>
        <tr v-for="node in nodes" :key="node.node_id" :data-node="node.node_id" :data-role="node.role"
            :class="{ stale: node.stale, self: node.self }">
          <td class="ellipsis" :title="node.node_id + ' · v' + node.version">{{ node.host }}:{{ node.pid }}<small v-if="node.self" class="muted" title="this node"> ●</small></td>
          <td class="ellipsis" data-field="role">{{ node.role }}</td>
          <td><span class="badge" :class="badge(node)" data-field="state">{{ shown(node) }}</span></td>
          <td data-field="exchanges">
            <span v-for="ex in exchanges(node)" :key="ex.name" class="dot" :class="'x-' + ex.health"
                  :data-exchange="ex.name" :style="{ background: exchangeColour(ex.name) }"
                  :title="exchangeLabel(ex.name) + ': ' + ex.state + ' · ' + ex.connections + ' conn'"></span>
            <span v-if="!exchanges(node).length" class="muted">—</span>
          </td>
          <td class="num" data-field="age" :class="{ warn: node.stale }">{{ fmtAge(node.age_s) }}</td>
        </tr>
        <tr v-if="!nodes.length"><td colspan="5" class="placeholder">no heartbeat yet</td></tr>
      </tbody>
    </table></div>
  </section>`,
};
