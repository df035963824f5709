// The symbols manager (a tab per exchange: search the venue's tradable symbols, add/remove,
// SAVE, ENABLE/DISABLE) and the confirmation dialog for dangerous actions.

import { api, ApiError, exchangeColour, exchangeLabel, isSymbol } from "./api.js";
import { status } from "./store.js";
import { writeLocal } from "./terminal.js";

const LIST_LIMIT = 300;

function describe(err) {
  if (err instanceof ApiError) {
    const where = err.field ? ` (${err.field})` : "";
    return err.status ? `${err.message}${where} — HTTP ${err.status}` : err.message;
  }
  return String(err);
}

export async function command(method, path, body) {
  writeLocal(`> ${method} ${path}${body === undefined ? "" : " " + JSON.stringify(body)}`);
  try {
    const result = await api(path, { method, body });
    writeLocal(`< ${JSON.stringify(result)}`);
    return result;
  } catch (err) {
    writeLocal(`< ${describe(err)}`, "error");
    throw err;
  }
}

export const SymbolsManager = {
  name: "SymbolsManager",
  emits: ["close"],
  setup() {
    return { status };
  },
  data() {
    return {
      exchanges: [], // from GET /exchanges
      active: "",
      tabs: {}, // name -> {listed, configured, draft, loading, error, listError, ...}
      loadError: "",
    };
  },
  computed: {
    tab() {
      return this.tabs[this.active] || null;
    },
    live() {
      const doc = this.status;
      const ex = doc && (doc.exchanges || []).find((e) => e.name === this.active);
      return ex || null;
    },
    info() {
      return this.exchanges.find((e) => e.name === this.active) || null;
    },
    enabled() {
      if (this.live && typeof this.live.enabled === "boolean") return this.live.enabled;
      return this.info ? this.info.enabled : false;
    },
    liveState() {
      return this.live ? this.live.state : this.info ? this.info.state : "unknown";
    },
    liveHealth() {
      return this.live ? this.live.health : this.info ? this.info.health : "";
    },
    added() {
      const t = this.tab;
      return t ? t.draft.filter((s) => !t.configured.includes(s)) : [];
    },
    removed() {
      const t = this.tab;
      return t ? t.configured.filter((s) => !t.draft.includes(s)) : [];
    },
    dirty() {
      return this.added.length > 0 || this.removed.length > 0;
    },
    matches() {
      const t = this.tab;
      if (!t || !t.listed) return [];
      const q = t.query.trim().toUpperCase();
      const draft = new Set(t.draft);
      return t.listed.filter((s) => (!q || s.includes(q)) && (!t.notAdded || !draft.has(s)));
    },
    shown() {
      return this.matches.slice(0, LIST_LIMIT);
    },
    watchText() {
      const t = this.tab;
      if (!t || !t.watch) return "";
      const state = this.liveState;
      // A quick restart can fall between two status ticks: two ticks later, live is live.
      const settled = t.watch.seenRestart || t.watch.ticks >= 2;
      if (settled && state === "live") return `${exchangeLabel(this.active)} is live again`;
      if (state === "disabled") return `${exchangeLabel(this.active)} is disabled`;
      return `${exchangeLabel(this.active)} restarting — ${state}…`;
    },
  },
  watch: {
    status() {
      const t = this.tab;
      if (!t || !t.watch) return;
      t.watch.ticks += 1;
      if (this.liveState !== "live") t.watch.seenRestart = true;
    },
  },
  async mounted() {
    window.addEventListener("keydown", this.onKey);
    await this.refreshExchanges();
    const first = this.exchanges.find((e) => e.enabled) || this.exchanges[0];
    if (first) this.select(first.name);
  },
  beforeUnmount() {
    window.removeEventListener("keydown", this.onKey);
  },
  methods: {
    exchangeColour,
    exchangeLabel,
    onKey(e) {
      if (e.key === "Escape") this.$emit("close");
    },
    async refreshExchanges() {
      try {
        const doc = await api("/exchanges");
        this.exchanges = doc.exchanges || [];
        this.loadError = "";
      } catch (err) {
        this.loadError = "Could not load the exchanges: " + describe(err);
      }
    },
    tabFor(name) {
      if (!this.tabs[name]) {
        const info = this.exchanges.find((e) => e.name === name);
        const configured = info ? [...(info.symbols || [])] : [];
        this.tabs[name] = {
          listed: null,
          configured,
          draft: [...configured],
          query: "",
          notAdded: false,
          manual: "",
          loading: false,
          listError: "",
          error: "",
          badSymbol: "",
          message: "",
          saving: false,
          toggling: false,
          watch: null,
        };
      }
      return this.tabs[name];
    },
    select(name) {
      this.active = name;
      const t = this.tabFor(name);
      if (!t.listed && !t.loading) this.loadListed(name);
    },
    async loadListed(name) {
      const t = this.tabFor(name);
      t.loading = true;
      t.listError = "";
      try {
        const doc = await api(`/exchangeSymbols/${encodeURIComponent(name)}`);
        t.listed = doc.listed || [];
        const wasClean = t.draft.join() === t.configured.join();
        t.configured = [...(doc.configured || [])];
        if (wasClean) t.draft = [...t.configured];
      } catch (err) {
        t.listError =
          err instanceof ApiError && err.status === 503
            ? `${exchangeLabel(name)}'s list of tradable symbols is unavailable right now ` +
              `(${err.message}). You can still add a symbol by name.`
            : "Could not load the tradable symbols: " + describe(err);
      } finally {
        t.loading = false;
      }
    },
    add(symbol) {
      const t = this.tab;
      const s = symbol.trim().toUpperCase();
      t.error = "";
      if (!s) return;
      if (!isSymbol(s)) {
        t.error = `"${symbol}" is not a symbol name (expected e.g. BTCUSDT or 币安人生USDT)`;
        return;
      }
      if (t.listed && t.listed.length && !t.listed.includes(s)) {
        t.error = `${s} is not listed on ${exchangeLabel(this.active)}`;
        return;
      }
      if (!t.draft.includes(s)) t.draft.push(s);
    },
    addManual() {
      const t = this.tab;
      const exact = t.manual.trim().toUpperCase();
      if (!exact && this.matches.length === 1) this.add(this.matches[0]);
      else this.add(exact);
      if (!t.error) t.manual = "";
    },
    addAllShown() {
      for (const s of this.shown) if (!this.tab.draft.includes(s)) this.tab.draft.push(s);
    },
    remove(symbol) {
      const t = this.tab;
      t.draft = t.draft.filter((s) => s !== symbol);
      if (t.badSymbol === symbol) t.badSymbol = "";
    },
    restore(symbol) {
      if (!this.tab.draft.includes(symbol)) this.tab.draft.push(symbol);
    },
    revert() {
      const t = this.tab;
      t.draft = [...t.configured];
      t.error = "";
      t.badSymbol = "";
    },
    async save() {
      const name = this.active;
      const t = this.tab;
      t.saving = true;
      t.error = "";
      t.badSymbol = "";
      t.message = "";
      const symbols = [...t.draft];
      try {
        const res = await command("POST", "/exchangeSymbols", { exchange: name, symbols });
        t.configured = [...(res.symbols || symbols)];
        t.draft = [...t.configured];
        const restarted = res.restarted || [];
        t.message = restarted.length
          ? `saved; restarting ${restarted.map(exchangeLabel).join(", ")}`
          : "saved; nothing to restart";
        t.watch = restarted.includes(name) ? { seenRestart: false, ticks: 0 } : null;
        this.refreshExchanges();
      } catch (err) {
        t.error = describe(err);
        const m = err instanceof ApiError && /^symbols\[(\d+)\]$/.exec(err.field || "");
        if (m) t.badSymbol = symbols[Number(m[1])] || "";
      } finally {
        t.saving = false;
      }
    },
    async toggle() {
      const name = this.active;
      const t = this.tab;
      t.toggling = true;
      t.error = "";
      t.message = "";
      try {
        const res = await command("POST", "/toggleExchange", { exchange: name, enabled: !this.enabled });
        t.message = res.enabled ? "enabled; starting" : "disabled";
        t.watch = res.enabled ? { seenRestart: false, ticks: 0 } : null;
        const info = this.exchanges.find((e) => e.name === name);
        if (info) info.enabled = res.enabled;
        this.refreshExchanges();
      } catch (err) {
        t.error = describe(err);
      } finally {
        t.toggling = false;
      }
    },
  },
  template: `
  <div class="modal-back" @click.self="$emit('close')">
    <div class="modal manager" role="dialog" aria-modal="true" aria-label="Symbols manager">
      <header class="modal-head">
        <h2>Symbols manager</h2><span class="spacer"></span>
        <button type="button" class="btn tiny" aria-label="close" @click="$emit('close')">✕</button>
      </header>
      <div v-if="loadError" class="alert error">{{ loadError }}</div>
      <nav class="tabs" role="tablist">
        <button v-for="ex in exchanges" :key="ex.name" type="button" role="tab" class="tab"
                :class="{ active: ex.name === active, off: !ex.enabled }" :data-exchange="ex.name"
                :aria-selected="ex.name === active" @click="select(ex.name)">
          <span class="dot" :style="{ background: exchangeColour(ex.name) }"></span>{{ exchangeLabel(ex.name) }}
          <small>{{ ex.enabled ? (ex.symbols || []).length : "off" }}</small>
        </button>
      </nav>
      <section v-if="tab" class="tab-body" :data-exchange="active">
        <div class="ex-head">
          <span class="badge" :class="'h-' + liveHealth" data-field="state">{{ liveState }}</span>
          <span class="muted" v-if="live">{{ live.connections }} conn · {{ live.streams_subscribed }}/{{ live.streams }} streams</span>
          <span class="watch" v-if="watchText" data-field="watch">{{ watchText }}</span>
          <span class="spacer"></span>
          <button type="button" class="btn" :class="enabled ? 'danger' : 'ok'" data-action="toggle"
                  :disabled="tab.toggling" @click="toggle">{{ enabled ? "DISABLE" : "ENABLE" }}</button>
        </div>
        <div class="cols">
          <div class="col">
            <h3>Collected <span class="muted">({{ tab.draft.length }})</span></h3>
            <ul class="symlist configured" data-list="configured">
              <li v-for="s in tab.draft" :key="s" :data-symbol="s"
                  :class="{ added: !tab.configured.includes(s), bad: s === tab.badSymbol }">
                <span>{{ s }}</span>
                <button type="button" class="btn tiny" :aria-label="'remove ' + s" @click="remove(s)">✕</button>
              </li>
              <li v-for="s in removed" :key="'r' + s" class="removed" :data-symbol="s">
                <span>{{ s }}</span>
                <button type="button" class="btn tiny" @click="restore(s)">undo</button>
              </li>
              <li v-if="!tab.draft.length && !removed.length" class="muted">none</li>
            </ul>
          </div>
          <div class="col">
            <h3>Tradable on {{ exchangeLabel(active) }}
              <span class="muted" v-if="tab.listed">({{ matches.length }}/{{ tab.listed.length }})</span></h3>
            <div class="row">
              <input v-model="tab.query" class="input" type="search" placeholder="search, e.g. BTC"
                     name="listed-search" aria-label="search tradable symbols" @keydown.enter="addManual">
              <label class="chk"><input type="checkbox" v-model="tab.notAdded" name="not-added"> not added</label>
              <button type="button" class="btn tiny" @click="loadListed(active)" :disabled="tab.loading">reload</button>
            </div>
            <div v-if="tab.loading" class="muted">loading the venue's symbols…</div>
            <div v-if="tab.listError" class="alert warn">{{ tab.listError }}</div>
            <ul class="symlist listed" data-list="listed" v-if="tab.listed">
              <li v-for="s in shown" :key="s" :data-symbol="s" :class="{ in: tab.draft.includes(s) }">
                <span>{{ s }}</span>
                <button v-if="!tab.draft.includes(s)" type="button" class="btn tiny ok" :aria-label="'add ' + s"
                        @click="add(s)">+ add</button>
                <span v-else class="muted">added</span>
              </li>
              <li v-if="matches.length > shown.length" class="muted">
                {{ matches.length - shown.length }} more — refine the search</li>
            </ul>
            <div class="row">
              <input v-model="tab.manual" class="input" placeholder="add by name, e.g. SOLUSDT" name="manual-symbol"
                     aria-label="add a symbol by name" @keydown.enter="addManual">
              <button type="button" class="btn tiny" @click="addManual">add</button>
              <button type="button" class="btn tiny" v-if="tab.query && shown.length" @click="addAllShown">
                add all {{ shown.length }}</button>
            </div>
          </div>
        </div>
        <div v-if="tab.error" class="alert error" role="alert" data-field="error">{{ tab.error }}</div>
        <footer class="modal-foot">
          <span class="diff" v-if="dirty"><span class="up">+{{ added.length }}</span> <span class="down">−{{ removed.length }}</span> unsaved</span>
          <span class="muted" v-else-if="tab.message" data-field="message">{{ tab.message }}</span>
          <span class="spacer"></span>
          <button type="button" class="btn" :disabled="!dirty || tab.saving" @click="revert">REVERT</button>
          <button type="button" class="btn primary" data-action="save" :disabled="!dirty || tab.saving" @click="save">
            {{ tab.saving ? "SAVING…" : "SAVE" }}</button>
        </footer>
      </section>
    </div>
  </div>`,
};

export const ConfirmDialog = {
  name: "ConfirmDialog",
  props: { dialog: { type: Object, required: true } },
  emits: ["close"],
  data() {
    return { typed: "", busy: false, error: "" };
  },
  computed: {
    ready() {
      return !this.dialog.requireText || this.typed === this.dialog.requireText;
    },
  },
  mounted() {
    (this.$refs.input || this.$refs.confirm).focus();
  },
  methods: {
    async confirm() {
      if (!this.ready) return;
      this.busy = true;
      this.error = "";
      try {
        await this.dialog.action();
        this.$emit("close");
      } catch (err) {
        this.error = describe(err);
      } finally {
        this.busy = false;
      }
    },
  },
  template: `
  <div class="modal-back" @click.self="$emit('close')" @keydown.esc="$emit('close')">
    <div class="modal confirm" role="alertdialog" aria-modal="true" :aria-label="dialog.title">
      <header class="modal-head"><h2>{{ dialog.title }}</h2></header>
      <p>{{ dialog.text }}</p>
      <label v-if="dialog.requireText" class="confirm-type">Type <b>{{ dialog.requireText }}</b> to confirm
        <input ref="input" v-model="typed" class="input" name="confirm-text" autocomplete="off"
               @keydown.enter="confirm"></label>
      <div v-if="error" class="alert error" role="alert">{{ error }}</div>
      <footer class="modal-foot">
        <span class="spacer"></span>
        <button type="button" class="btn" @click="$emit('close')">CANCEL</button>
        <button ref="confirm" type="button" class="btn danger" data-action="confirm"
                :disabled="!ready || busy" @click="confirm">{{ busy ? "…" : dialog.confirmLabel }}</button>
      </footer>
    </div>
  </div>`,
};
