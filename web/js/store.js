// The console's state: the latest /status (replaced once a second), the symbol rows, and the
// hot path for candles, which bypasses Vue: updates are coalesced per key and painted
// straight into the registered cells once per animation frame.

import { fmtNum, fmtPrice, fmtTime } from "./api.js";

const { reactive, shallowRef, markRaw } = window.Vue;

export const ui = reactive({
  conn: "connecting", // connecting | open | retrying | reconnecting
  connReason: "",
  retryIn: 0,
  everOpen: false,
  authNeeded: false,
  backfillTarget: null, // {exchange, symbol, interval} while the backfill form is open
});

// The whole /status document; components read what they show.
export const status = shallowRef(null);
// Symbol rows in display order; replaced only when the set of rows changes.
export const rows = shallowRef([]);
const rowsByKey = new Map();

export function rowKey(exchange, symbol, interval) {
  return `${exchange}|${symbol}|${interval}`;
}

// Merge a /status document: keep row objects (and their components) alive, touch reactive
// fields only when they changed so Vue re-renders just those rows.
export function applyStatus(doc) {
  status.value = markRaw(doc);
  const seen = new Set();
  let changed = false;
  for (const ex of doc.exchanges || []) {
    for (const s of ex.symbols || []) {
      const key = rowKey(ex.name, s.symbol, s.interval);
      seen.add(key);
      let row = rowsByKey.get(key);
      if (!row) {
        row = reactive({
          key,
          exchange: ex.name,
          symbol: s.symbol,
          interval: s.interval,
          state: s.state,
          error: s.error,
          progress: s.backfill_progress,
        });
        rowsByKey.set(key, row);
        changed = true;
      } else {
        if (row.state !== s.state) row.state = s.state;
        if (row.error !== s.error) row.error = s.error;
        if (row.progress !== s.backfill_progress) row.progress = s.backfill_progress;
      }
      if (s.last) seedFromStatus(key, s.last);
    }
  }
  for (const key of [...rowsByKey.keys()]) {
    if (!seen.has(key)) {
      rowsByKey.delete(key);
      changed = true;
    }
  }
  if (changed) {
    rows.value = [...rowsByKey.values()].sort(
      (a, b) =>
        a.symbol.localeCompare(b.symbol) ||
        a.exchange.localeCompare(b.exchange) ||
        a.interval.localeCompare(b.interval),
    );
  }
}

// ---- live cells ----------------------------------------------------------------------------

const live = new Map(); // key -> latest candle-like {open_time, open, high, low, close, volume}
const cells = new Map(); // key -> {px, chg, hi, lo, vol, time, flip}
const pending = new Map(); // key -> newest candle not yet painted
const tapeQueue = []; // newest candle updates, for the realtime tape
const TAPE_KEEP = 60;
const tapeListeners = new Set();
let frame = 0;

// Counters for the browser tests and for a look from the devtools console.
export const perf = { candles: 0, painted: 0, flashes: 0, frames: 0, lastFlushMs: 0, byExchange: {} };

function seedFromStatus(key, last) {
  const have = live.get(key) || pending.get(key);
  if (have && have.open_time >= last.open_time) return;
  pending.set(key, { open_time: last.open_time, close: last.close, volume: last.volume });
  schedule();
}

export function onCandles(list) {
  for (const c of list) {
    perf.byExchange[c.exchange] = (perf.byExchange[c.exchange] || 0) + 1;
    const key = rowKey(c.exchange, c.symbol, c.interval);
    // A closed minute arrives after its commit, when the next minute's forming updates may
    // already be on screen: it goes to the tape, but the row keeps the newer minute.
    const have = pending.get(key) || live.get(key);
    tapeQueue.push(c);
    if (have && have.open_time > c.open_time) continue;
    pending.set(key, c);
  }
  perf.candles += list.length;
  if (tapeQueue.length > TAPE_KEEP * 4) tapeQueue.splice(0, tapeQueue.length - TAPE_KEEP);
  schedule();
}

export function onTape(fn) {
  tapeListeners.add(fn);
  return () => tapeListeners.delete(fn);
}

// Forming updates arrive every few ms: painting them at most 20 times a second keeps the
// main thread's work near what the 50 ms committed batches cost.
const MIN_FLUSH_MS = 50;
let lastFlush = -Infinity;
let flushTimer = 0;

function schedule() {
  if (frame || flushTimer) return;
  const wait = lastFlush + MIN_FLUSH_MS - performance.now();
  if (wait <= 0) {
    frame = requestAnimationFrame(flush);
    return;
  }
  flushTimer = setTimeout(() => {
    flushTimer = 0;
    frame = requestAnimationFrame(flush);
  }, wait);
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function paint(c, prev, el, flash) {
  setText(el.px, fmtPrice(c.close));
  if (c.high !== undefined) {
    setText(el.hi, fmtPrice(c.high));
    setText(el.lo, fmtPrice(c.low));
    const change = c.open ? ((c.close - c.open) / c.open) * 100 : 0;
    setText(el.chg, (change >= 0 ? "+" : "") + change.toFixed(2) + "%");
    const cls = "c num chg " + (change > 0 ? "up" : change < 0 ? "down" : "");
    if (el.chg.className !== cls) el.chg.className = cls;
  } else {
    setText(el.hi, "—");
    setText(el.lo, "—");
    setText(el.chg, "—");
  }
  setText(el.vol, fmtNum(c.volume, 2));
  setText(el.time, fmtTime(c.open_time));
  if (flash && prev && prev.close !== c.close) {
    el.dir = c.close > prev.close ? "up" : "down";
    // A static highlight switched off by the sweep: two style changes per flash, where a
    // CSS animation would repaint every frame for each of hundreds of cells.
    el.px.className = `c num px ${el.dir} flash-${el.dir}`;
    el.px.dataset.flash = el.dir;
    el.flashAt = performance.now();
    flashing.add(el);
    perf.flashes += 1;
  }
}

// Flashes end in the frame that paints the next candles (or, if none come, after FLASH_MS):
// every DOM change of the table lands in one frame, and frames are few.
const FLASH_MS = 300;
const flashing = new Set();
let sweepTimer = 0;

function sweep(now) {
  for (const el of flashing) {
    if (now - el.flashAt >= FLASH_MS) {
      el.px.className = `c num px ${el.dir}`;
      flashing.delete(el);
    }
  }
  if (flashing.size && !sweepTimer) {
    sweepTimer = setTimeout(() => {
      sweepTimer = 0;
      schedule();
    }, FLASH_MS * 2);
  }
}

// Work other views want done in the next frame (the tape's throttled repaint).
const frameTasks = new Set();
export function requestFrame(fn) {
  frameTasks.add(fn);
  schedule();
}

function flush() {
  frame = 0;
  const t0 = performance.now();
  lastFlush = t0;
  sweep(t0);
  for (const [key, c] of pending) {
    const prev = live.get(key);
    // A /status "last" (close and volume only) never replaces a full candle of its minute.
    if (prev && c.high === undefined && prev.open_time >= c.open_time) continue;
    live.set(key, c);
    const el = cells.get(key);
    if (!el) continue;
    if (el.visible) {
      paint(c, el.shown || prev, el, true);
      el.shown = c;
      perf.painted += 1;
    } else {
      el.dirty = true; // painted when scrolled into view
    }
  }
  pending.clear();
  if (tapeQueue.length && tapeListeners.size) {
    const batch = tapeQueue.splice(0, tapeQueue.length);
    for (const fn of tapeListeners) fn(batch);
  }
  for (const fn of frameTasks) fn();
  frameTasks.clear();
  perf.frames += 1;
  perf.lastFlushMs = performance.now() - t0;
}

// Only rows on screen (plus a margin) are painted as candles arrive; the others are marked
// and painted once when they scroll into view. With 600 rows, ~20 are on screen.
let observer = null;
const cellsByRow = new WeakMap();

function visibility(entries) {
  for (const entry of entries) {
    const el = cellsByRow.get(entry.target);
    if (!el) continue;
    el.visible = entry.isIntersecting;
    if (el.visible && el.dirty) {
      el.dirty = false;
      const c = live.get(el.key);
      if (c) {
        paint(c, null, el, false);
        el.shown = c;
      }
    }
  }
}

// Rows register their hot cells when mounted and paint what is already known.
export function registerCells(key, el) {
  el.key = key;
  el.visible = false;
  el.dirty = true;
  cells.set(key, el);
  if (!observer) observer = new IntersectionObserver(visibility, { rootMargin: "200px 0px" });
  cellsByRow.set(el.row, el);
  observer.observe(el.row);
}

export function unregisterCells(key, el) {
  if (cells.get(key) === el) cells.delete(key);
  flashing.delete(el);
  if (observer) observer.unobserve(el.row);
}

export function liveFor(key) {
  return live.get(key);
}

window.feeddPerf = perf;
