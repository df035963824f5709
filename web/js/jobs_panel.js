// The backfill jobs panel (progress, rate, ETA, state, errors, cancel) and the small form that
// starts a backfill of one symbol from its row.

import { exchangeColour, exchangeLabel, fmtDuration, fmtNum, INTERVALS } from "./api.js";
import { fmtUtc, seriesFor } from "./coverage.js";
import { ACTIVE, cancelJob, describe, jobs, jobsState, refreshJobs, startBackfill } from "./jobs.js";
import { rowKey } from "./store.js";

const DAY_MS = 86400000;

const count = (n) => (typeof n === "number" ? Math.round(n).toLocaleString("en-US") : "—");

export const JobsPanel = {
  name: "JobsPanel",
  setup() {
    return { jobs, jobsState };
  },
  data() {
    return { cancelling: {} };
  },
  computed: {
    active() {
      return this.jobs.filter((j) => ACTIVE.has(j.state)).length;
    },
  },
  mounted() {
    refreshJobs();
  },
  methods: {
    exchangeColour,
    exchangeLabel,
    fmtUtc,
    count,
    percent(job) {
      if (job.state === "done") return 100;
      if (!job.rows_expected) return 0;
      return Math.min(100, Math.max(0, (100 * (job.rows_done || 0)) / job.rows_expected));
    },
    rate(job) {
      return typeof job.rate_per_s === "number" ? fmtNum(job.rate_per_s, 0) + "/s" : "—";
    },
    eta(job) {
      if (!ACTIVE.has(job.state)) {
        const took = job.finished_at && job.created_at ? (job.finished_at - job.created_at) / 1000 : null;
        return took === null ? "" : "took " + fmtDuration(Math.max(0, took));
      }
      return typeof job.eta_s === "number" ? "ETA " + fmtDuration(job.eta_s) : "ETA —";
    },
    symbols(job) {
      const list = job.symbols || [];
      return list.length > 3 ? `${list.slice(0, 3).join(" ")} +${list.length - 3}` : list.join(" ");
    },
    sources(job) {
      const s = job.sources;
      if (!s) return "";
      return Object.entries(s)
        .map(([name, n]) => `${name} ${count(n)}`)
        .join(" · ");
    },
    async cancel(job) {
      this.cancelling = { ...this.cancelling, [job.id]: true };
      try {
        await cancelJob(job.id);
      } finally {
        const { [job.id]: _, ...rest } = this.cancelling;
        this.cancelling = rest;
      }
    },
  },
  template: `
  <section class="panel jobs" aria-label="backfill jobs">
    <header class="panel-head">
      <h2>Backfill</h2>
      <span class="muted" data-field="active" v-if="jobsState.available !== false">{{ active }} active</span>
      <span class="spacer"></span>
      <button type="button" class="btn tiny" @click="refreshJobs()" title="ask feedd now">refresh</button>
    </header>
    <div v-if="jobsState.available === false" class="alert warn" role="status" data-field="unavailable">
      backfill unavailable — {{ jobsState.unavailableWhy }}</div>
    <div v-else-if="jobsState.error" class="alert error" data-field="error">{{ jobsState.error }}</div>
    <ul class="job-list" v-if="jobsState.available !== false">
      <li v-for="job in jobs" :key="job.id" class="job" :data-job="job.id" :data-state="job.state"
          :class="{ fresh: String(job.id) === jobsState.highlight }">
        <div class="job-head">
          <span class="badge" :class="'j-' + job.state" data-field="state">{{ job.state }}</span>
          <b :style="{ color: exchangeColour(job.exchange) }">{{ exchangeLabel(job.exchange) }}</b>
          <span class="ellipsis" :title="(job.symbols || []).join(' ')">{{ symbols(job) }}</span>
          <span class="muted">{{ job.interval }}</span>
          <span class="muted" data-field="node" v-if="job.node" :title="'node ' + job.node">on {{ job.node.slice(0, 8) }}</span>
          <span class="spacer"></span>
          <button v-if="job.state === 'queued' || job.state === 'running'" type="button" class="btn tiny danger"
                  data-action="cancel" :disabled="cancelling[job.id]" :aria-label="'cancel job ' + job.id"
                  @click="cancel(job)">cancel</button>
        </div>
        <div class="muted job-range">{{ fmtUtc(job.since) }} → {{ job.until ? fmtUtc(job.until) : "now" }} UTC</div>
        <div class="job-bar" role="progressbar" :aria-valuenow="Math.round(percent(job))" aria-valuemin="0"
             aria-valuemax="100"><i :style="{ width: percent(job) + '%' }"></i></div>
        <div class="job-nums">
          <span data-field="rows">{{ count(job.rows_done) }} / {{ count(job.rows_expected) }}</span>
          <span data-field="rate" v-if="job.state === 'running'">{{ rate(job) }}</span>
          <span data-field="eta">{{ eta(job) }}</span>
          <span class="muted" data-field="sources" v-if="sources(job)">{{ sources(job) }}</span>
        </div>
        <div v-if="job.errors && job.errors.length" class="bad job-errors" data-field="errors"
             :title="job.errors.join('\\n')">{{ job.errors.length }} error(s): {{ job.errors[job.errors.length - 1] }}</div>
      </li>
      <li v-if="!jobs.length" class="placeholder">no backfill jobs — click a hole in a coverage strip,
        or ⟲ on a symbol's row</li>
    </ul>
  </section>`,
};

function dateOf(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

function parseDate(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || "");
  if (!m) return null;
  const t = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  return Number.isNaN(t) ? null : t;
}

export const BackfillForm = {
  name: "BackfillForm",
  props: { target: { type: Object, required: true } }, // {exchange, symbol, interval}
  emits: ["close"],
  data() {
    const s = seriesFor(rowKey(this.target.exchange, this.target.symbol, this.target.interval));
    // Default: a week older than what is stored (the stored history's start, by the venue's
    // clock, which may differ from this browser's).
    const anchor = s ? s.first_open_time : Date.now();
    return {
      interval: this.target.interval,
      since: dateOf(anchor - 7 * DAY_MS),
      until: "",
      busy: false,
      error: "",
      INTERVALS,
    };
  },
  computed: {
    label() {
      return exchangeLabel(this.target.exchange);
    },
  },
  mounted() {
    window.addEventListener("keydown", this.onKey);
    this.$refs.since.focus();
  },
  beforeUnmount() {
    window.removeEventListener("keydown", this.onKey);
  },
  methods: {
    onKey(e) {
      if (e.key === "Escape") this.$emit("close");
    },
    async submit() {
      this.error = "";
      const since = parseDate(this.since);
      if (since === null) {
        this.error = "since: pick a date";
        return;
      }
      const body = {
        exchange: this.target.exchange,
        symbols: [this.target.symbol],
        interval: this.interval,
        since,
      };
      if (this.until) {
        const day = parseDate(this.until);
        if (day === null) {
          this.error = "until: not a date";
          return;
        }
        body.until = day + DAY_MS - 1; // through the end of that day, UTC
        if (body.until < since) {
          this.error = "until is before since";
          return;
        }
      }
      this.busy = true;
      try {
        await startBackfill(body);
        this.$emit("close");
      } catch (err) {
        this.error = describe(err);
        if (jobsState.available === false) this.error = "backfill unavailable — " + jobsState.unavailableWhy;
      } finally {
        this.busy = false;
      }
    },
  },
  template: `
  <div class="modal-back" @click.self="$emit('close')">
    <form class="modal backfill-form" role="dialog" aria-modal="true" aria-label="Backfill" @submit.prevent="submit">
      <header class="modal-head"><h2>Backfill {{ target.symbol }} · {{ label }}</h2></header>
      <label class="field">interval
        <select v-model="interval" class="input" name="interval">
          <option v-for="iv in INTERVALS" :key="iv" :value="iv">{{ iv }}</option>
        </select></label>
      <label class="field">since (UTC)
        <input ref="since" v-model="since" class="input" type="date" name="since" required></label>
      <label class="field">until (UTC, optional)
        <input v-model="until" class="input" type="date" name="until"></label>
      <p class="muted">Fetches the candles of that range that are not stored yet, from the venue's REST API
        (and its archive where there is one). Progress shows in the Backfill panel.</p>
      <div v-if="error" class="alert error" role="alert" data-field="error">{{ error }}</div>
      <footer class="modal-foot">
        <span class="spacer"></span>
        <button type="button" class="btn" @click="$emit('close')">CANCEL</button>
        <button type="submit" class="btn primary" data-action="start" :disabled="busy">{{ busy ? "…" : "START" }}</button>
      </footer>
    </form>
  </div>`,
};
