// The dashboard's client of feedd's API: token, JSON fetch with clear errors, and one
// self-healing /ws connection (backoff with jitter, resubscribe, liveness watchdog).

const TOKEN_KEY = "feedd.token";

// A token in the page URL (#token=...) wins and is remembered; it is then removed from the
// address bar so it does not end up in screenshots, bookmarks or the history.
function readToken() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const fromHash = hash.get("token");
  if (fromHash) {
    try {
      localStorage.setItem(TOKEN_KEY, fromHash);
    } catch (_) {
      /* storage disabled: the token still works for this page */
    }
    hash.delete("token");
    const rest = hash.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    return fromHash;
  }
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch (_) {
    return "";
  }
}

let token = readToken();

export function getToken() {
  return token;
}

export function setToken(value) {
  token = value || "";
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    /* ignore */
  }
}

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

// Listeners told about a 401 anywhere, so the page can ask for a token once.
const authListeners = new Set();
export function onAuthRequired(fn) {
  authListeners.add(fn);
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const init = { method, headers, signal, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "feedd is unreachable (" + (err && err.message ? err.message : err) + ")");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (!response.ok) {
    if (response.status === 401) authListeners.forEach((fn) => fn());
    const message =
      data && data.error ? data.error : `${method} ${path} failed: HTTP ${response.status}`;
    throw new ApiError(response.status, message, data && data.field);
  }
  return data;
}

// One WebSocket to /ws. Subscriptions are remembered and sent again after every reconnect;
// `subscribe` returns a handle whose `update` replaces the message (e.g. a new `since`).
export class LiveSocket {
  constructor({ onMessage, onState, minDelay = 500, maxDelay = 15000, staleAfter = 6000 } = {}) {
    this.onMessage = onMessage || (() => {});
    this.onState = onState || (() => {});
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.staleAfter = staleAfter;
    this.subs = new Set();
    this.ws = null;
    this.attempt = 0;
    this.retryAt = 0;
    this.timer = null;
    this.lastMessage = 0;
    this.lastPing = 0;
    this.openedAt = 0;
    this.everOpen = false;
    this.stopped = false;
    this.state = "connecting";
    this.watchdog = setInterval(() => this._watch(), 1000);
  }

  url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const query = token ? "?token=" + encodeURIComponent(token) : "";
    return `${proto}//${location.host}/ws${query}`;
  }

  start() {
    this.stopped = false;
    this._connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    if (this.ws) this.ws.close(1000);
  }

  subscribe(message) {
    const sub = { message };
    sub.update = (next) => {
      sub.message = next;
    };
    sub.cancel = () => {
      this.subs.delete(sub);
      const { op, ...rest } = sub.message;
      this.send({ ...rest, op: "unsubscribe" });
    };
    this.subs.add(sub);
    this.send(message);
    return sub;
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  // Reconnect now (the "retry now" button) instead of waiting for the backoff.
  retryNow() {
    if (this.state === "open" || this.stopped) return;
    clearTimeout(this.timer);
    this._connect();
  }

  _setState(state, detail) {
    this.state = state;
    this.onState(state, detail || {});
  }

  _connect() {
    clearTimeout(this.timer);
    this._setState(this.everOpen ? "reconnecting" : "connecting", { attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (err) {
      this._scheduleRetry("cannot open the socket: " + err.message);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.openedAt = Date.now();
      this.lastMessage = Date.now();
      this.everOpen = true;
      for (const sub of this.subs) ws.send(JSON.stringify(sub.message));
      this._setState("open");
    };
    ws.onmessage = (event) => {
      this.lastMessage = Date.now();
      // The backoff is reset by a connection that stayed useful, not by a mere connect.
      if (this.attempt && this.lastMessage - this.openedAt > 5000) this.attempt = 0;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      let why = opened ? `connection closed (${event.code})` : "cannot connect";
      if (event.code === 1008) why = "the dashboard fell behind (1008)";
      if (event.code === 1001) why = "feedd is shutting down";
      this._scheduleRetry(why);
    };
    ws.onerror = () => {
      /* onclose follows with the code; the console shows the failure as a warning only */
    };
  }

  _scheduleRetry(reason) {
    const base = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.attempt = Math.min(this.attempt + 1, 10);
    this.retryAt = Date.now() + delay;
    this._setState("retrying", { reason, retryAt: this.retryAt, attempt: this.attempt });
    this.timer = setTimeout(() => this._connect(), delay);
  }

  // A socket that went quiet (feedd frozen, a proxy dropped it without a FIN) is closed and
  // replaced; the status topic speaks every second, so silence means trouble.
  _watch() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const quiet = Date.now() - this.lastMessage;
    if (quiet > this.staleAfter) {
      this.ws = null;
      ws.close(4000, "stale");
      this._scheduleRetry(`no message for ${Math.round(quiet / 1000)} s`);
    } else if (quiet > this.staleAfter / 3 && Date.now() - this.lastPing > this.staleAfter / 3) {
      // Topics may be quiet for long (candles commit every batch_interval): ask for a pong.
      this.lastPing = Date.now();
      this.send({ op: "ping" });
    }
  }
}

// ---- formatting -------------------------------------------------------------------------

export const INTERVALS = ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
  "1d", "3d", "1w", "1M"];

const UNIT_MS = { m: 60000, h: 3600000, d: 86400000, w: 604800000 };

// Milliseconds of a fixed-length interval; null for 1M (calendar months).
export function intervalMs(interval) {
  const m = /^(\d+)([mhdwM])$/.exec(interval);
  if (!m || m[2] === "M") return null;
  return Number(m[1]) * UNIT_MS[m[2]];
}

// Open time of the UTC-aligned bucket holding `t` (weeks start Monday, like the API).
export function bucketStart(interval, t) {
  if (interval.endsWith("M")) {
    const d = new Date(t);
    const months = Number(interval.slice(0, -1));
    const index = d.getUTCFullYear() * 12 + d.getUTCMonth();
    const start = index - (index % months);
    return Date.UTC(Math.floor(start / 12), start % 12, 1);
  }
  const ms = intervalMs(interval);
  // 1970-01-01 was a Thursday: shift weeks so they start on Monday.
  const offset = interval.endsWith("w") ? 4 * 86400000 : 0;
  return Math.floor((t - offset) / ms) * ms + offset;
}

// Open time of the bucket after the one starting at `start`.
export function bucketEnd(interval, start) {
  if (interval.endsWith("M")) {
    const d = new Date(start);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + Number(interval.slice(0, -1)), 1);
  }
  return start + intervalMs(interval);
}

export function fmtPrice(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  if (a > 0 && a < 0.01) return v.toPrecision(4);
  const digits = a >= 1000 ? 2 : a >= 10 ? 3 : a >= 1 ? 4 : 5;
  return v.toFixed(digits);
}

export function fmtNum(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(2) + "B";
  if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return v.toFixed(a >= 100 ? 0 : digits);
}

export function fmtBytes(v) {
  if (v === null || v === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return v.toFixed(i === 0 ? 0 : v >= 100 ? 0 : 1) + " " + units[i];
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

export function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 10) return seconds.toFixed(1) + "s";
  return fmtDuration(seconds);
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

export function fmtTime(ms, withDate = false) {
  if (!ms) return "—";
  const d = new Date(ms);
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  if (!withDate) return time;
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${time}`;
}

export function fmtClock(ms) {
  const d = new Date(ms);
  return `${fmtTime(ms)}.${pad(d.getUTCMilliseconds(), 3)}`;
}

const EXCHANGE_COLOURS = {
  binance_futures: "#f0b90b",
  bybit_futures: "#ff7a45",
  okx_futures: "#36cfc9",
};

export function exchangeColour(name) {
  if (EXCHANGE_COLOURS[name]) return EXCHANGE_COLOURS[name];
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 70% 60%)`;
}

export function exchangeLabel(name) {
  return name.replace(/_futures$/, "");
}

// A canonical symbol, as feedd/symbols.py has it: letters and digits of any script (Unicode
// L*/N*, none lowercase), then USDT. Binance lists e.g. 币安人生USDT. The server decides; this
// only spares a round trip and catches typos.
const SYMBOL = /^(?!.*\p{Lowercase})[\p{Lu}\p{Lm}\p{Lo}\p{Nd}\p{Nl}\p{No}]{1,24}USDT$/u;

export function isSymbol(text) {
  return SYMBOL.test(text);
}

export function chartUrl(exchange, symbol, interval) {
  const q = new URLSearchParams({ exchange, symbol, interval });
  return "/chart.html?" + q.toString();
}
