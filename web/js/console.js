// index.html, the console: one /ws for status, logs and candles; panels; dangerous actions.

import { api, ApiError, fmtTime, getToken, LiveSocket, onAuthRequired, setToken } from "./api.js";
import { ClusterPanel } from "./cluster.js";
import { refreshCoverage } from "./coverage.js";
import { refreshJobs } from "./jobs.js";
import { BackfillForm, JobsPanel } from "./jobs_panel.js";
import { ConfirmDialog, command, SymbolsManager } from "./manager.js";
import { SymbolsPanel, SystemPanel, WorkersPanel } from "./panels.js";
import { applyStatus, onCandles, status, ui } from "./store.js";
import { TapePanel, TerminalPanel, writeLocal, writeLogs } from "./terminal.js";

const { createApp } = window.Vue;

let socket = null;

function onMessage(msg) {
  switch (msg.type) {
    case "candles":
      onCandles(msg.data);
      break;
    case "status":
      applyStatus(msg.data);
      break;
    case "logs":
      writeLogs(msg.data);
      break;
    case "error":
      writeLocal(`/ws: ${msg.error}${msg.field ? " (" + msg.field + ")" : ""}`, "warning");
      break;
    default:
      break;
  }
}

let down = false; // one terminal line per outage, not one per retry

function onState(state, detail) {
  ui.conn = state;
  if (state === "retrying") {
    ui.connReason = detail.reason || "";
    ui.retryAt = detail.retryAt;
    if (!down) {
      down = true;
      const what = ui.everOpen ? "disconnected from feedd" : "cannot reach feedd";
      writeLocal(`${what}: ${detail.reason}; retrying with backoff`, "warning");
    }
  }
  if (state === "open") {
    if (down && ui.everOpen) writeLocal("reconnected to feedd", "info");
    down = false;
    ui.everOpen = true;
    ui.connReason = "";
  }
}

function startSocket() {
  socket = new LiveSocket({ onMessage, onState });
  socket.subscribe({ op: "subscribe", topic: "status" });
  // The whole log ring on every (re)connect: the terminal drops lines it already shows, and
  // a restarted feedd (numbering its lines from 1 again) is followed without special cases.
  socket.subscribe({ op: "subscribe", topic: "logs", since: 0 });
  socket.subscribe({ op: "subscribe", topic: "candles" });
  socket.start();
}

const App = {
  components: {
    SystemPanel,
    WorkersPanel,
    ClusterPanel,
    SymbolsPanel,
    TapePanel,
    TerminalPanel,
    SymbolsManager,
    ConfirmDialog,
    JobsPanel,
    BackfillForm,
  },
  setup() {
    return { ui, status };
  },
  data() {
    return { managerOpen: false, dialog: null, now: Date.now(), tokenInput: "" };
  },
  computed: {
    retryIn() {
      return Math.max(0, Math.ceil(((this.ui.retryAt || 0) - this.now) / 1000));
    },
    disconnected() {
      return this.ui.conn === "retrying" || (this.ui.conn === "reconnecting" && this.ui.everOpen);
    },
    serverTime() {
      return this.status ? fmtTime(this.status.time, true) + " UTC" : "";
    },
    totals() {
      const exs = (this.status && this.status.exchanges) || [];
      let candles = 0;
      let msgs = 0;
      for (const e of exs) {
        candles += e.candles_per_s || 0;
        msgs += e.messages_per_s || 0;
      }
      return { candles: candles.toFixed(0), msgs: msgs.toFixed(0) };
    },
  },
  mounted() {
    setInterval(() => {
      this.now = Date.now();
    }, 1000);
  },
  methods: {
    retryNow() {
      socket.retryNow();
    },
    confirmRestart() {
      this.dialog = {
        title: "Restart ingest?",
        text:
          "feedd re-reads its config file and restarts every exchange. The web server and " +
          "the database stay up; live data pauses for a few seconds.",
        confirmLabel: "RESTART",
        action: () => command("POST", "/restart", {}),
      };
    },
    confirmDelete() {
      this.dialog = {
        title: "Delete the database?",
        text:
          "Every stored candle is deleted and a fresh schema is made; ingest continues and " +
          "history is backfilled again. This cannot be undone.",
        confirmLabel: "DELETE",
        requireText: "DELETE",
        action: () => command("POST", "/deleteDatabase", { confirm: "DELETE" }),
      };
    },
    saveToken() {
      setToken(this.tokenInput.trim());
      this.ui.authNeeded = false;
      this.tokenInput = "";
      loadInitial();
      refreshCoverage();
      refreshJobs();
      socket.retryNow();
    },
  },
  template: `
  <div class="console" :class="{ stale: disconnected }">
    <header class="topbar">
      <span class="brand">feedd</span>
      <span class="conn" :data-state="ui.conn">{{ ui.conn === "open" ? "live" : ui.conn }}</span>
      <span class="muted clock" data-field="server-time">{{ serverTime }}</span>
      <span class="muted">{{ totals.msgs }} msg/s · {{ totals.candles }} candles/s</span>
      <span class="spacer"></span>
      <button type="button" class="btn primary" data-action="symbols" @click="managerOpen = true">SYMBOLS</button>
      <button type="button" class="btn" data-action="restart" @click="confirmRestart">RESTART</button>
      <button type="button" class="btn danger" data-action="delete-db" @click="confirmDelete">DELETE DB</button>
    </header>
    <div v-if="disconnected" class="banner" role="status" data-field="banner">
      <span>disconnected — retrying{{ ui.conn === "retrying" ? " in " + retryIn + "s" : "…" }}
        <span class="muted" v-if="ui.connReason">({{ ui.connReason }})</span></span>
      <button type="button" class="btn small" @click="retryNow">retry now</button>
    </div>
    <div v-if="ui.authNeeded" class="banner auth" role="alert">
      <span>feedd asks for an API token.</span>
      <input v-model="tokenInput" class="input small" type="password" name="token" placeholder="token"
             @keydown.enter="saveToken">
      <button type="button" class="btn small" @click="saveToken">use token</button>
    </div>
    <main class="grid-main">
      <SystemPanel class="area-system" />
      <WorkersPanel class="area-workers" />
      <ClusterPanel class="area-cluster" />
      <JobsPanel class="area-jobs" />
      <SymbolsPanel class="area-symbols" />
      <TapePanel class="area-tape" />
      <TerminalPanel class="area-terminal" />
    </main>
    <SymbolsManager v-if="managerOpen" @close="managerOpen = false" />
    <ConfirmDialog v-if="dialog" :dialog="dialog" @close="dialog = null" />
    <BackfillForm v-if="ui.backfillTarget" :target="ui.backfillTarget" @close="ui.backfillTarget = null" />
  </div>`,
};

// /status over HTTP once at start: the panels fill before the socket's first tick, and a 401
// here is how the console learns it needs a token.
async function loadInitial() {
  try {
    const doc = await api("/status");
    if (!status.value) applyStatus(doc);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      writeLocal(`GET /status: ${err.message}`, "warning");
    }
  }
}

onAuthRequired(() => {
  ui.authNeeded = true;
});

if (!window.Vue) {
  document.body.textContent = "Vue did not load (web/vendor is missing: run scripts/vendor_web.py).";
} else {
  createApp(App).mount("#app");
  writeLocal(`console opened${getToken() ? " (with an API token)" : ""}`, "info");
  loadInitial();
  startSocket();
  refreshCoverage();
}
