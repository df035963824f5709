// chart.html?exchange=&symbol=&interval=: history from /ohlcv, then the forming candle live.
//
// Live updates come from the 1m stream on /ws and are folded client-side into the displayed
// interval's bucket. Each bucket keeps its 1m candles by open time, so a bucket is always the
// exact aggregate of its minutes (a forming minute updated ten times counts once). A bucket
// first seen mid-way is seeded from /ohlcv 1m since its start: one small request per bucket
// instead of one per update.

import {
  api,
  ApiError,
  bucketEnd,
  bucketStart,
  exchangeColour,
  exchangeLabel,
  fmtNum,
  fmtPrice,
  fmtTime,
  LiveSocket,
  INTERVALS,
  isSymbol,
} from "./api.js";

const SWITCHER = ["1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"];
const HISTORY_LIMIT = 1000;
const UP = "#26a69a";
const DOWN = "#ef5350";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const exchange = params.get("exchange") || "";
const symbol = (params.get("symbol") || "").toUpperCase();
let interval = params.get("interval") || "1m";

// Exposed for the browser tests and for curious operators in the devtools console.
const debug = (window.feeddChart = {
  bars: 0,
  liveUpdates: 0,
  lastBar: null,
  loaded: false,
  oldest: null, // open time of the oldest candle loaded
  exhausted: false, // a page of older history came back short: nothing older is stored
  olderPages: 0,
  olderInFlight: 0,
  olderMaxInFlight: 0,
  loads: 0,
});

let chart = null;
let candleSeries = null;
let volumeSeries = null;
let generation = 0;
let loading = null; // queue of live candles that arrived while (re)loading
let buckets = new Map(); // bucket open time -> Map(1m open time -> {candle, seeded})
let lastBucket = null;
let hasData = false;
let older = { busy: false, done: true, retryAt: 0 }; // paging into older history

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function setEmpty(empty, detail) {
  $("empty").hidden = !empty;
  if (detail) $("empty-detail").textContent = detail;
}

function toBar(c) {
  return { time: c.open_time / 1000, open: c.open, high: c.high, low: c.low, close: c.close };
}

function toVolume(c) {
  return { time: c.open_time / 1000, value: c.volume, color: c.close >= c.open ? UP + "80" : DOWN + "80" };
}

function renderLegend(c) {
  if (!c) {
    $("ohlc").textContent = "";
    return;
  }
  const change = c.open ? ((c.close - c.open) / c.open) * 100 : 0;
  const cls = c.close >= c.open ? "up" : "down";
  $("ohlc").innerHTML = "";
  const parts = [
    ["", fmtTime(c.open_time, true)],
    ["O", fmtPrice(c.open)],
    ["H", fmtPrice(c.high)],
    ["L", fmtPrice(c.low)],
    ["C", fmtPrice(c.close)],
    ["V", fmtNum(c.volume, 2)],
    ["", (change >= 0 ? "+" : "") + change.toFixed(2) + "%"],
  ];
  for (const [label, value] of parts) {
    const span = document.createElement("span");
    if (label) {
      const b = document.createElement("b");
      b.textContent = label;
      span.append(b, " ");
    }
    span.append(value);
    if (label === "C" || label === "") span.className = label === "" && value.endsWith("%") ? cls : "";
    $("ohlc").append(span);
  }
}

function buildChart() {
  const { createChart, CandlestickSeries, HistogramSeries, CrosshairMode } = window.LightweightCharts;
  chart = createChart($("chart"), {
    autoSize: true,
    layout: {
      background: { color: "#0b0e13" },
      textColor: "#8b96a8",
      fontSize: 11,
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
    },
    grid: { vertLines: { color: "#161b24" }, horzLines: { color: "#161b24" } },
    crosshair: { mode: CrosshairMode.Normal },
    rightPriceScale: { borderColor: "#232a36" },
    timeScale: { borderColor: "#232a36", timeVisible: true, secondsVisible: false },
  });
  candleSeries = chart.addSeries(CandlestickSeries, {
    upColor: UP,
    downColor: DOWN,
    borderVisible: false,
    wickUpColor: UP,
    wickDownColor: DOWN,
  });
  volumeSeries = chart.addSeries(HistogramSeries, {
    priceFormat: { type: "volume" },
    priceScaleId: "",
    lastValueVisible: false,
    priceLineVisible: false,
  });
  volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  candleSeries.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });
  chart.subscribeCrosshairMove((param) => {
    const bar = param && param.time !== undefined ? param.seriesData.get(candleSeries) : null;
    if (bar) {
      const vol = param.seriesData.get(volumeSeries);
      renderLegend({ ...bar, open_time: bar.time * 1000, volume: vol ? vol.value : 0 });
    } else {
      renderLegend(debug.lastBar);
    }
  });
}

// ---- older history: a page before the oldest candle as the view nears it ----------------

// Bars between the left edge of the view and the oldest loaded one that start the next page.
const OLDER_MARGIN = 40;
const OLDER_RETRY_MS = 5000;

function nearOldest() {
  const range = chart.timeScale().getVisibleLogicalRange();
  return range !== null && range.from < OLDER_MARGIN;
}

// One fetch at a time, per load (a reload or interval switch starts a new `older`); a short
// page means the store holds nothing older. The page lands without moving the view.
async function loadOlder() {
  const state = older;
  if (state.busy || state.done || loading || !hasData || Date.now() < state.retryAt) return;
  const bars = candleSeries.data();
  if (!bars.length) return;
  const oldest = bars[0].time * 1000;
  const gen = generation;
  state.busy = true;
  debug.olderInFlight += 1;
  debug.olderMaxInFlight = Math.max(debug.olderMaxInFlight, debug.olderInFlight);
  let landed = false;
  try {
    const rows = await api(
      `/ohlcv/${encodeURIComponent(exchange)}/${encodeURIComponent(symbol)}/${interval}` +
        `?until=${oldest - 1}&limit=${HISTORY_LIMIT}`,
    );
    if (gen !== generation) return;
    if (rows.length < HISTORY_LIMIT) state.done = true;
    const page = rows.filter((c) => c.open_time < oldest);
    if (page.length) prepend(page);
    debug.olderPages += 1;
    debug.exhausted = state.done;
    landed = true;
  } catch (err) {
    if (gen !== generation) return;
    state.retryAt = Date.now() + OLDER_RETRY_MS;
    console.warn("chart: loading older candles failed; retrying when scrolled again", err);
  } finally {
    debug.olderInFlight -= 1;
    state.busy = false;
  }
  // Zoomed far out, one page may not reach the edge of the view: take the next one.
  if (landed && gen === generation && nearOldest()) loadOlder();
}

// The time scale keeps its distance from the newest bar across setData, so the bars on screen
// stay put (the browser test checks it) while the logical range shifts by the page's length.
function prepend(rows) {
  candleSeries.setData(rows.map(toBar).concat(candleSeries.data()));
  volumeSeries.setData(rows.map(toVolume).concat(volumeSeries.data()));
  debug.bars = candleSeries.data().length;
  debug.oldest = rows[0].open_time;
}

function aggregate(start, minutes) {
  const keys = [...minutes.keys()].sort((a, b) => a - b);
  let bar = null;
  for (const k of keys) {
    const c = minutes.get(k).candle;
    if (!bar) {
      bar = { open_time: start, open: c.open, high: c.high, low: c.low, close: c.close, volume: 0 };
    }
    bar.high = Math.max(bar.high, c.high);
    bar.low = Math.min(bar.low, c.low);
    bar.close = c.close;
    bar.volume += c.volume;
  }
  return bar;
}

// Seeded (REST) minutes never replace live ones unless they are final; a final minute is
// never replaced by a forming one.
function merge(minutes, candle, seeded) {
  const have = minutes.get(candle.open_time);
  if (have) {
    if (have.candle.closed && !candle.closed) return false;
    if (seeded && !have.seeded && !candle.closed) return false;
  }
  minutes.set(candle.open_time, { candle, seeded });
  return true;
}

function drawBucket(start) {
  const minutes = buckets.get(start);
  if (!minutes || minutes.size === 0) return;
  const bar = aggregate(start, minutes);
  const historical = lastBucket !== null && start < lastBucket;
  try {
    candleSeries.update(toBar(bar), historical);
    volumeSeries.update(toVolume(bar), historical);
  } catch (err) {
    // The chart refused the bar (out of order after an outage, say): reload rather than guess.
    console.warn("chart: live update refused, reloading", err);
    load();
    return;
  }
  if (!historical) {
    lastBucket = start;
    debug.lastBar = bar;
    renderLegend(bar);
  }
  if (!hasData) {
    hasData = true;
    setEmpty(false);
    chart.timeScale().scrollToRealTime();
  }
  debug.bars = candleSeries.data().length;
}

async function seedBucket(start, gen) {
  const minutes = new Map();
  buckets.set(start, minutes);
  // Keep two buckets: the forming one and the one before (its last minute may close late).
  for (const k of [...buckets.keys()].sort((a, b) => b - a).slice(2)) buckets.delete(k);
  if (interval === "1m") return;
  const rows = await api(
    `/ohlcv/${encodeURIComponent(exchange)}/${encodeURIComponent(symbol)}/1m?since=${start}&limit=5000`,
  );
  if (gen !== generation) return;
  const end = bucketEnd(interval, start);
  for (const c of rows) if (c.open_time < end) merge(minutes, c, true);
}

const seeding = new Map(); // bucket start -> promise

function applyLive(candle, gen) {
  if (candle.interval !== "1m" || gen !== generation) return;
  const start = bucketStart(interval, candle.open_time);
  const oldest = buckets.size ? Math.min(...buckets.keys()) : null;
  if (oldest !== null && start < oldest) return; // older than anything the chart follows
  if (!buckets.has(start) && !seeding.has(start)) {
    if (candle.open_time === start || interval === "1m") {
      buckets.set(start, new Map());
      for (const k of [...buckets.keys()].sort((a, b) => b - a).slice(2)) buckets.delete(k);
    } else {
      // First seen mid-bucket: fetch its earlier minutes, then apply what arrived meanwhile.
      const waiting = [candle];
      const p = seedBucket(start, gen)
        .then(() => {
          if (seeding.get(start) !== p) return; // a reload started meanwhile
          seeding.delete(start);
          for (const c of waiting) applyLive(c, gen);
        })
        .catch((err) => {
          if (seeding.get(start) !== p) return;
          // An incomplete bucket must not be drawn: the next live candle seeds it again.
          seeding.delete(start);
          buckets.delete(start);
          console.warn("chart: loading the minutes of a bucket failed", err);
        });
      p.waiting = waiting;
      seeding.set(start, p);
      return;
    }
  }
  if (seeding.has(start)) {
    seeding.get(start).waiting.push(candle);
    return;
  }
  if (merge(buckets.get(start), candle, false)) {
    debug.liveUpdates += 1;
    drawBucket(start);
  }
}

function onCandles(list) {
  for (const c of list) {
    if (c.exchange !== exchange || c.symbol !== symbol) continue;
    if (loading) loading.push(c);
    else applyLive(c, generation);
  }
}

async function load() {
  const gen = ++generation;
  loading = [];
  older = { busy: false, done: true, retryAt: 0 };
  chart.timeScale().scrollToPosition(3, false); // a new series starts at its newest bar
  debug.exhausted = false;
  debug.oldest = null;
  buckets = new Map();
  seeding.clear();
  lastBucket = null;
  hasData = false;
  debug.loaded = false;
  $("error").hidden = true;
  try {
    const rows = await api(
      `/ohlcv/${encodeURIComponent(exchange)}/${encodeURIComponent(symbol)}/${interval}?limit=${HISTORY_LIMIT}`,
    );
    if (gen !== generation) return;
    candleSeries.setData(rows.map(toBar));
    volumeSeries.setData(rows.map(toVolume));
    debug.bars = rows.length;
    debug.oldest = rows.length ? rows[0].open_time : null;
    // A short first page is all there is; a full one may have older pages before it.
    older = { busy: false, done: rows.length < HISTORY_LIMIT, retryAt: 0 };
    debug.exhausted = older.done;
    if (rows.length) {
      const last = rows[rows.length - 1];
      lastBucket = last.open_time;
      debug.lastBar = last;
      renderLegend(last);
      hasData = true;
      setEmpty(false);
      await seedBucket(last.open_time, gen);
      if (gen !== generation) return;
      if (interval === "1m") merge(buckets.get(last.open_time), last, true);
      // Candles as wide as the history allows, within a readable range, newest at the right.
      const width = Math.max(200, $("chart").clientWidth - 80);
      const spacing = Math.min(14, Math.max(5, width / rows.length));
      chart.timeScale().applyOptions({ barSpacing: spacing, rightOffset: 3 });
      // Not scrollToRealTime: from far in the past it animates for a second through ranges
      // near the oldest bar, and each would ask for an older page nobody scrolled to.
      chart.timeScale().scrollToPosition(3, false);
    } else {
      renderLegend(null);
      setEmpty(
        true,
        `${symbol} on ${exchangeLabel(exchange)} has no ${interval} candles stored yet. ` +
          "The chart starts drawing with the first live candle. (If this symbol is not collected, " +
          "add it in the console's SYMBOLS manager.)",
      );
    }
  } catch (err) {
    if (gen !== generation) return;
    showError(err instanceof ApiError ? err.message : String(err));
  } finally {
    if (gen === generation) {
      const queued = loading || [];
      loading = null;
      for (const c of queued) applyLive(c, gen);
      debug.loaded = true;
      debug.loads += 1;
    }
  }
}

function renderSwitcher() {
  const nav = $("intervals");
  nav.innerHTML = "";
  for (const iv of SWITCHER) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "btn tiny" + (iv === interval ? " active" : "");
    b.textContent = iv;
    b.dataset.interval = iv;
    b.addEventListener("click", () => switchInterval(iv));
    nav.append(b);
  }
}

function renderTitle() {
  $("t-symbol").textContent = symbol;
  $("t-exchange").textContent = exchangeLabel(exchange);
  $("t-exchange").style.color = exchangeColour(exchange);
  document.title = `${symbol} ${interval} · ${exchangeLabel(exchange)} · feedd`;
}

function switchInterval(iv) {
  if (iv === interval) return;
  interval = iv;
  const q = new URLSearchParams(location.search);
  q.set("interval", iv);
  history.replaceState(null, "", location.pathname + "?" + q.toString() + location.hash);
  renderSwitcher();
  renderTitle();
  load();
}

let lastDetail = {};

function connectionState(state, detail) {
  if (state === "retrying" && detail.reason) lastDetail = detail;
  detail = state === "retrying" ? { ...lastDetail, ...detail, reason: lastDetail.reason } : detail;
  const conn = $("conn");
  conn.dataset.state = state;
  conn.textContent = state === "open" ? "live" : state;
  const banner = $("banner");
  if (state === "retrying") {
    const secs = Math.max(0, Math.round((detail.retryAt - Date.now()) / 1000));
    $("banner-text").textContent = `disconnected — retrying in ${secs}s (${detail.reason})`;
    banner.hidden = false;
  } else if (state === "reconnecting") {
    $("banner-text").textContent = "disconnected — retrying…";
    banner.hidden = false;
  } else if (state === "open") {
    banner.hidden = true;
  }
}

function main() {
  renderSwitcher();
  renderTitle();
  if (!exchange || !isSymbol(symbol) || !INTERVALS.includes(interval)) {
    showError(
      "This page needs ?exchange=&symbol=&interval=, e.g. " +
        "chart.html?exchange=binance_futures&symbol=BTCUSDT&interval=1m",
    );
    return;
  }
  if (!window.LightweightCharts) {
    showError("lightweight-charts did not load (web/vendor is missing: run scripts/vendor_web.py)");
    return;
  }
  buildChart();
  debug.series = () => candleSeries.data();
  debug.chart = () => chart;
  // The range handed to the handler may be stale (notifications come a frame late, after a
  // reload may have moved the view back to the newest bar): ask the time scale itself.
  chart.timeScale().subscribeVisibleLogicalRangeChange(() => {
    if (nearOldest()) loadOlder();
  });
  let wasOpen = false;
  const socket = new LiveSocket({
    onMessage: (msg) => {
      if (msg.type === "candles") onCandles(msg.data);
      else if (msg.type === "error") console.warn("feedd /ws:", msg.error);
    },
    onState: (state, detail) => {
      connectionState(state, detail);
      // After an outage the chart may have missed candles: reload history to close the gap.
      if (state === "open" && wasOpen) load();
      if (state === "open") wasOpen = true;
    },
  });
  socket.subscribe({ op: "subscribe", topic: "candles", exchange, symbol, interval: "1m" });
  socket.start();
  $("banner-retry").addEventListener("click", () => socket.retryNow());
  setInterval(() => {
    if (socket.state === "retrying") connectionState("retrying", { retryAt: socket.retryAt });
  }, 1000);
  load();
}

main();
