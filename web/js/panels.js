// The console's read-only panels: system monitor, workers (one row per exchange) and the
// symbols table, whose rows keep Vue for structure and the store's live cells for prices.

import {
  chartUrl,
  exchangeColour,
  exchangeLabel,
  fmtAge,
  fmtBytes,
  fmtDuration,
  fmtNum,
} from "./api.js";
import { CoverageStrip } from "./coverage.js";
import { registerCells, rows, status, ui, unregisterCells } from "./store.js";

const CHART_INTERVALS = ["1m", "5m", "15m", "1h", "4h"];

const pct = (v) => (v === null || v === undefined ? "—" : v.toFixed(1) + "%");

export const SystemPanel = {
  name: "SystemPanel",
  setup() {
    return { status };
  },
  computed: {
    sys() {
      return (this.status && this.status.system) || {};
    },
    writer() {
      return (this.status && this.status.writer) || {};
    },
    diskPercent() {
      const s = this.sys;
      return s.disk_total ? ((s.disk_total - s.disk_free) / s.disk_total) * 100 : null;
    },
  },
  methods: {
    pct,
    fmtBytes,
    fmtDuration,
    fmtNum,
    ms: (v) => (typeof v === "number" ? (v < 10 ? v.toFixed(1) : v.toFixed(0)) + " ms" : "—"),
  },
  template: `
  <section class="panel system" aria-label="system monitor">
    <header class="panel-head"><h2>System</h2><span class="spacer"></span>
      <span class="muted" :title="sys.platform">{{ status ? "v" + status.version : "" }}</span></header>
    <div class="kv" v-if="status">
      <div class="k">CPU</div>
      <div class="v" data-field="cpu"><span class="meter"><i :style="{ width: (sys.cpu_percent || 0) + '%' }"></i></span>
        {{ pct(sys.cpu_percent) }} <span class="muted">× {{ sys.cpu_count }} cores</span></div>
      <div class="k">Memory</div>
      <div class="v" data-field="memory"><span class="meter"><i :style="{ width: (sys.memory_percent || 0) + '%' }"></i></span>
        {{ fmtBytes(sys.memory_used) }} <span class="muted">/ {{ fmtBytes(sys.memory_total) }}</span></div>
      <div class="k">Process</div>
      <div class="v" data-field="process">RSS {{ fmtBytes(sys.process_rss) }} · heap {{ fmtBytes(sys.process_heap) }}
        · {{ pct(sys.process_cpu_percent) }}</div>
      <div class="k">Database</div>
      <div class="v" data-field="db">{{ fmtBytes(sys.db_size) }}
        <span class="muted">· {{ fmtNum(writer.committed, 0) }} rows · queue {{ writer.pending }}</span></div>
      <div class="k">Writer</div>
      <div class="v" data-field="writer" :class="writer.healthy === false ? 'bad' : ''">
        {{ writer.healthy === false ? "UNHEALTHY" : "ok" }} · p50 {{ ms(writer.latency_p50_ms) }} · p99 {{ ms(writer.latency_p99_ms) }}
        <span v-if="writer.last_error" class="bad" :title="writer.last_error"> · {{ writer.last_error }}</span></div>
      <template v-if="status.nats"><div class="k">NATS</div>
      <div class="v" data-field="nats" :class="status.nats.connected ? '' : 'bad'" :title="status.nats.url + ' · ' + status.nats.stream">
        {{ status.nats.connected ? "connected" : "DISCONNECTED" }} · {{ fmtNum(status.nats.published, 0) }} published · backlog {{ status.nats.backlog }}
        <span v-if="status.nats.dropped_forming" class="muted"> · {{ fmtNum(status.nats.dropped_forming, 0) }} forming dropped</span>
        <span v-if="!status.nats.connected && status.nats.last_error" class="bad" :title="status.nats.last_error"> · {{ status.nats.last_error }}</span></div></template>
      <div class="k">Disk</div>
      <div class="v" data-field="disk"><span class="meter"><i :style="{ width: (diskPercent || 0) + '%' }"></i></span>
        {{ fmtBytes(sys.disk_free) }} free <span class="muted">/ {{ fmtBytes(sys.disk_total) }}</span></div>
      <div class="k">Uptime</div>
      <div class="v" data-field="uptime">{{ fmtDuration(sys.uptime_s) }}
        <span class="muted">· {{ sys.threads }} threads · {{ sys.open_fds }} fds</span></div>
      <div class="k">Platform</div>
      <div class="v ellipsis" data-field="platform" :title="sys.platform">{{ sys.platform }}</div>
    </div>
    <div v-else class="placeholder">waiting for the first status…</div>
  </section>`,
};

export const WorkersPanel = {
  name: "WorkersPanel",
  setup() {
    return { status };
  },
  computed: {
    exchanges() {
      return (this.status && this.status.exchanges) || [];
    },
  },
  methods: {
    exchangeColour,
    exchangeLabel,
    fmtAge,
    fmtNum,
    fmtBytes,
    pct,
  },
  template: `
  <section class="panel workers" aria-label="workers">
    <header class="panel-head"><h2>Workers</h2></header>
    <table class="grid">
      <thead><tr>
        <th>exchange</th><th>state</th><th class="num">conn</th><th class="num">streams</th>
        <th class="num">msg/s</th><th class="num">candles/s</th><th class="num">CPU</th>
        <th class="num">reconn</th><th class="num">gaps</th>
        <th class="num">backfill</th><th class="num">last msg</th><th>last error</th>
      </tr></thead>
      <tbody>
        <tr v-for="ex in exchanges" :key="ex.name" :data-exchange="ex.name"
            :class="'health-' + ex.health">
          <td class="ex"><span class="dot" :style="{ background: exchangeColour(ex.name) }"></span>{{ exchangeLabel(ex.name) }}</td>
          <td><span class="badge" :class="'h-' + ex.health" data-field="state">{{ ex.state }}</span></td>
          <td class="num" data-field="connections">{{ ex.connections }}</td>
          <td class="num" data-field="streams">{{ ex.streams_subscribed }}/{{ ex.streams }}</td>
          <td class="num" data-field="messages_per_s">{{ fmtNum(ex.messages_per_s) }}</td>
          <td class="num" data-field="candles_per_s">{{ fmtNum(ex.candles_per_s) }}</td>
          <td class="num" data-field="cpu">{{ pct(ex.cpu_percent) }}</td>
          <td class="num" data-field="reconnects" :class="{ warn: ex.reconnects }">{{ ex.reconnects }}</td>
          <td class="num" data-field="gaps">{{ ex.gaps_healed }}</td>
          <td class="num" data-field="backfill">{{ ex.backfill_pending }}</td>
          <td class="num" data-field="age" :class="{ warn: ex.last_message_age_s > 5 }">{{ fmtAge(ex.last_message_age_s) }}</td>
          <td class="err ellipsis" :title="ex.last_error || ''">{{ ex.last_error || "" }}</td>
        </tr>
        <tr v-if="!exchanges.length"><td colspan="13" class="placeholder">no exchanges configured</td></tr>
      </tbody>
    </table>
  </section>`,
};

// One symbol row. Vue renders its structure and status; the price cells are empty in the
// template and painted by the store, so a candle never re-renders a row.
const SymbolRow = {
  name: "SymbolRow",
  components: { CoverageStrip },
  props: { row: { type: Object, required: true } },
  setup() {
    return { CHART_INTERVALS };
  },
  mounted() {
    const r = this.$refs;
    this.cells = { row: this.$el, px: r.px, chg: r.chg, hi: r.hi, lo: r.lo, vol: r.vol, time: r.time };
    registerCells(this.row.key, this.cells);
  },
  beforeUnmount() {
    unregisterCells(this.row.key, this.cells);
  },
  computed: {
    colour() {
      return exchangeColour(this.row.exchange);
    },
    label() {
      return exchangeLabel(this.row.exchange);
    },
    progress() {
      return this.row.progress === null || this.row.progress === undefined
        ? null
        : Math.round(this.row.progress * 100);
    },
  },
  methods: {
    open(interval) {
      const url = chartUrl(this.row.exchange, this.row.symbol, interval);
      const w = window.open(url, "_blank", "popup=yes,width=1100,height=680");
      if (w) w.opener = null;
    },
    href(interval) {
      return chartUrl(this.row.exchange, this.row.symbol, interval);
    },
    backfill() {
      const { exchange, symbol, interval } = this.row;
      ui.backfillTarget = { exchange, symbol, interval };
    },
  },
  template: `
  <div class="srow" role="row" :data-key="row.key" :data-symbol="row.symbol"
       :data-exchange="row.exchange" :data-state="row.state">
    <span class="c sym" role="cell">{{ row.symbol }}<small v-if="row.interval !== '1m'"> {{ row.interval }}</small></span>
    <span class="c ex" role="cell" :style="{ color: colour }">{{ label }}</span>
    <span class="c st" role="cell" :title="row.error || ''">
      <span class="badge" :class="'s-' + row.state">{{ row.state }}</span>
      <span v-if="progress !== null" class="prog" :title="progress + '%'"><i :style="{ width: progress + '%' }"></i></span>
      <small v-if="progress !== null">{{ progress }}%</small>
    </span>
    <span ref="px" class="c num px" role="cell">—</span>
    <span ref="chg" class="c num chg" role="cell"></span>
    <span ref="hi" class="c num hi" role="cell"></span>
    <span ref="lo" class="c num lo" role="cell"></span>
    <span ref="vol" class="c num vol" role="cell"></span>
    <span ref="time" class="c num time" role="cell"></span>
    <span class="c cov" role="cell">
      <CoverageStrip :exchange="row.exchange" :symbol="row.symbol" :interval="row.interval" />
      <button type="button" class="btn tiny bf" data-action="backfill" :title="'backfill ' + row.symbol + '…'"
              :aria-label="'backfill ' + row.symbol" @click="backfill">⟲</button>
    </span>
    <span class="c charts" role="cell">
      <a v-for="iv in CHART_INTERVALS" :key="iv" class="btn tiny" :href="href(iv)" target="_blank"
         rel="noopener" :data-interval="iv" @click.prevent="open(iv)">{{ iv }}</a>
    </span>
  </div>`,
};

export const SymbolsPanel = {
  name: "SymbolsPanel",
  components: { SymbolRow },
  setup() {
    return { rows };
  },
  data() {
    return { query: "", exchange: "", state: "" };
  },
  computed: {
    exchanges() {
      return [...new Set(this.rows.map((r) => r.exchange))].sort();
    },
    states() {
      return [...new Set(this.rows.map((r) => r.state))].sort();
    },
    visible() {
      const q = this.query.trim().toUpperCase();
      if (!q && !this.exchange && !this.state) return this.rows;
      return this.rows.filter(
        (r) =>
          (!q || r.symbol.includes(q)) &&
          (!this.exchange || r.exchange === this.exchange) &&
          (!this.state || r.state === this.state),
      );
    },
    counts() {
      const c = {};
      for (const r of this.rows) c[r.state] = (c[r.state] || 0) + 1;
      return Object.entries(c).sort();
    },
  },
  methods: { exchangeLabel },
  template: `
  <section class="panel symbols" aria-label="symbols">
    <header class="panel-head">
      <h2>Symbols</h2>
      <span class="muted" data-field="count">{{ visible.length }}/{{ rows.length }}</span>
      <span v-for="[s, n] in counts" :key="s" class="badge" :class="'s-' + s">{{ n }} {{ s }}</span>
      <span class="spacer"></span>
      <input v-model="query" class="input small" type="search" placeholder="filter symbol"
             name="symbol-filter" aria-label="filter symbols">
      <select v-model="exchange" class="input small" name="exchange-filter" aria-label="exchange">
        <option value="">all exchanges</option>
        <option v-for="e in exchanges" :key="e" :value="e">{{ exchangeLabel(e) }}</option>
      </select>
      <select v-model="state" class="input small" name="state-filter" aria-label="state">
        <option value="">any state</option>
        <option v-for="s in states" :key="s" :value="s">{{ s }}</option>
      </select>
    </header>
    <div class="stable" role="table" aria-label="symbols table">
      <div class="srow head" role="row">
        <span class="c sym">symbol</span><span class="c ex">exchange</span><span class="c st">status</span>
        <span class="c num">last</span><span class="c num chg">chg</span><span class="c num hi">high</span>
        <span class="c num lo">low</span><span class="c num vol">volume</span><span class="c num time" title="candle open time, UTC">time</span>
        <span class="c cov" title="stored history, first to last candle; holes in red (click one to backfill it)">coverage</span>
        <span class="c charts">chart</span>
      </div>
      <div class="sbody">
        <SymbolRow v-for="row in visible" :key="row.key" :row="row" />
        <div v-if="!rows.length" class="placeholder">no symbols yet — add some with SYMBOLS</div>
      </div>
    </div>
  </section>`,
};
