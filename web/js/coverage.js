// Coverage per series (GET /coverage: runs of stored candles, cheap to ask for), drawn as a strip
// in each symbol row: first..last stored candle, holes in a contrasting colour. One click on a
// hole starts a backfill of exactly that hole.

import { api, ApiError, bucketEnd, fmtTime, intervalMs } from "./api.js";
import { activeRanges, onJobFinished, startBackfill } from "./jobs.js";
import { rowKey } from "./store.js";

const { reactive, markRaw } = window.Vue;

const REFRESH_MS = 15000;
// holes nearer than this share of the strip are drawn (and clicked) as one segment
const MERGE_PCT = 0.6;
const MONTH_MS = 30 * 86400000;

export const coverageState = reactive({ available: true, error: "", updated: 0 });

const series = new Map(); // key -> the latest raw series from /coverage
const strips = new Map(); // key -> reactive {segments, signature}, made when a row asks

export function stripFor(key) {
  let strip = strips.get(key);
  if (!strip) {
    strip = reactive({ segments: [], signature: "", known: false });
    strips.set(key, strip);
    const s = series.get(key);
    if (s) apply(strip, s);
  }
  return strip;
}

export function seriesFor(key) {
  return series.get(key) || null;
}

const pad = (n) => String(n).padStart(2, "0");

export function fmtUtc(ms) {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${fmtTime(ms).slice(0, 5)}`;
}

// "3d 4h", "2h 30m", "45m": the length of a span of candles.
export function fmtSpan(ms) {
  const minutes = Math.round(ms / 60000);
  const d = Math.floor(minutes / 1440);
  const h = Math.floor((minutes % 1440) / 60);
  const m = minutes % 60;
  if (d) return h ? `${d}d ${h}h` : `${d}d`;
  if (h) return m ? `${h}h ${m}m` : `${h}h`;
  return `${m}m`;
}

function step(interval) {
  return intervalMs(interval) || MONTH_MS;
}

function holeTitle(interval, seg) {
  const first = seg.holes[0];
  const last = seg.holes[seg.holes.length - 1];
  const candles = seg.holes.reduce((n, h) => n + h.candles, 0);
  const length = fmtSpan(candles * step(interval));
  const what = seg.holes.length > 1 ? `${seg.holes.length} holes, ` : "";
  return (
    `missing ${fmtUtc(first.start)} → ${fmtUtc(last.end)} UTC · ${what}${candles} candles ` +
    `(${length}) · click to backfill`
  );
}

// Segments in percent of the strip; the signature changes only when what is drawn changes, so
// a series that merely grew by a candle does not re-render its row.
function geometry(s) {
  const size = step(s.interval);
  const first = s.first_open_time;
  const span = Math.max(s.last_open_time + size - first, 1);
  const segments = [];
  for (const h of s.missing || []) {
    const left = ((h.start - first) / span) * 100;
    const right = ((h.end + size - first) / span) * 100;
    const prev = segments[segments.length - 1];
    if (prev && left - prev.right < MERGE_PCT) {
      prev.right = right;
      prev.holes.push(h);
    } else {
      segments.push({ left, right, holes: [h] });
    }
  }
  return segments.map((seg) => ({
    left: Math.round(seg.left * 10) / 10,
    width: Math.round((seg.right - seg.left) * 10) / 10,
    start: seg.holes[0].start,
    end: seg.holes[seg.holes.length - 1].end,
    candles: seg.holes.reduce((n, h) => n + h.candles, 0),
    title: holeTitle(s.interval, seg),
  }));
}

function apply(strip, s) {
  const segments = geometry(s);
  const signature = segments.map((g) => `${g.left}/${g.width}/${g.start}/${g.end}`).join(",");
  if (!strip.known || signature !== strip.signature) {
    strip.segments = markRaw(segments);
    strip.signature = signature;
    strip.known = true;
  }
}

let timer = 0;
let inFlight = null;

export function refreshCoverage() {
  if (inFlight) return inFlight;
  clearTimeout(timer);
  inFlight = (async () => {
    try {
      const doc = await api("/coverage");
      coverageState.available = true;
      coverageState.error = "";
      const seen = new Set();
      for (const s of doc.series || []) {
        const key = rowKey(s.exchange, s.symbol, s.interval);
        seen.add(key);
        series.set(key, s);
        const strip = strips.get(key);
        if (strip) apply(strip, s);
      }
      for (const [key, strip] of strips) {
        if (!seen.has(key) && strip.known) {
          series.delete(key);
          strip.segments = markRaw([]);
          strip.signature = "";
          strip.known = false;
        }
      }
      coverageState.updated = Date.now();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
        coverageState.available = false;
      }
      coverageState.error = err.message || String(err);
    } finally {
      inFlight = null;
      timer = setTimeout(refreshCoverage, REFRESH_MS);
    }
  })();
  return inFlight;
}

// For the browser tests and the devtools console.
window.feeddCoverage = { refresh: refreshCoverage, state: coverageState };

// A finished job changed what is stored: show it now rather than at the next tick.
onJobFinished(() => refreshCoverage());

// One row's strip. It reads the jobs only when it has holes, so the 600 rows without holes
// do not re-render when a job's progress changes.
export const CoverageStrip = {
  name: "CoverageStrip",
  props: {
    exchange: { type: String, required: true },
    symbol: { type: String, required: true },
    interval: { type: String, required: true },
  },
  setup(props) {
    return { strip: stripFor(rowKey(props.exchange, props.symbol, props.interval)) };
  },
  computed: {
    filling() {
      if (!this.strip.segments.length) return null;
      return activeRanges.value.get(rowKey(this.exchange, this.symbol, this.interval)) || [];
    },
  },
  methods: {
    isFilling(seg) {
      return (this.filling || []).some((r) => r.since <= seg.start && (r.until === null || r.until >= seg.end));
    },
    // The whole series' summary is built on hover: it changes with every candle.
    describe(event) {
      const s = seriesFor(rowKey(this.exchange, this.symbol, this.interval));
      event.currentTarget.title = s
        ? `${fmtUtc(s.first_open_time)} → ${fmtUtc(s.last_open_time)} UTC · ${s.candles} candles` +
          (s.missing_candles ? ` · ${s.missing_candles} missing in ${s.missing.length} hole(s)` : " · no holes")
        : "no candles stored yet";
    },
    async fill(seg) {
      if (this.isFilling(seg)) return;
      try {
        await startBackfill({
          exchange: this.exchange,
          symbols: [this.symbol],
          interval: this.interval,
          since: seg.start,
          // through the end of the last missing candle (a one-candle hole is a range too)
          until: bucketEnd(this.interval, seg.end) - 1,
        });
      } catch (_) {
        /* shown in the jobs panel and the terminal */
      }
    },
  },
  template: `
  <span class="cov-strip" :class="{ none: !strip.known }" @mouseenter="describe">
    <button v-for="seg in strip.segments" :key="seg.start" type="button" class="hole"
            :class="{ filling: isFilling(seg) }" :style="{ left: seg.left + '%', width: seg.width + '%' }"
            :title="seg.title" :aria-label="seg.title" :data-start="seg.start" :data-end="seg.end"
            :data-candles="seg.candles" @click.stop="fill(seg)"></button>
  </span>`,
};
