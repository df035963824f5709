// The terminal panel and the realtime tape: append-only views painted with plain DOM (cheap
// at any log or candle rate), filtered by CSS classes instead of re-rendering.

import { exchangeColour, exchangeLabel, fmtClock, fmtNum, fmtPrice, fmtTime } from "./api.js";
import { onTape, requestFrame } from "./store.js";

const MAX_LINES = 2000;
const LEVELS = ["debug", "info", "warning", "error", "cmd"];
const LABEL = { debug: "DBG", info: "INF", warning: "WRN", error: "ERR", critical: "ERR", cmd: "CMD" };

const backlog = [];
let sink = null;
let lastSeq = -1;
let lastTime = 0;

function normLevel(level) {
  const l = String(level || "info").toLowerCase();
  if (l === "critical" || l === "fatal") return "error";
  if (l === "warn") return "warning";
  return LEVELS.includes(l) ? l : "info";
}

// Log lines from /ws. Each (re)connect replays the server's ring: keep only lines newer than
// the last shown, by time then sequence (a restarted feedd starts its sequence again).
export function writeLogs(lines) {
  const fresh = [];
  for (const line of lines) {
    const time = line.time || 0;
    if (time < lastTime || (time === lastTime && line.seq <= lastSeq)) continue;
    lastTime = time;
    lastSeq = line.seq;
    fresh.push(line);
  }
  if (fresh.length) (sink ? sink(fresh) : backlog.push(...fresh));
}


// A local line: command responses, connection events.
export function writeLocal(message, level = "cmd") {
  const line = { time: Date.now(), level, logger: "console", message };
  sink ? sink([line]) : backlog.push(line);
}

export const TerminalPanel = {
  name: "TerminalPanel",
  data() {
    return {
      shown: { debug: false, info: true, warning: true, error: true, cmd: true },
      follow: true,
      count: 0,
    };
  },
  computed: {
    hiddenClasses() {
      return LEVELS.filter((l) => !this.shown[l]).map((l) => "hide-" + l);
    },
  },
  mounted() {
    const box = this.$refs.box;
    let queue = [];
    let frame = 0;
    const render = () => {
      frame = 0;
      const lines = queue;
      queue = [];
      const frag = document.createDocumentFragment();
      for (const line of lines.slice(-MAX_LINES)) {
        const level = normLevel(line.level);
        const div = document.createElement("div");
        div.className = "ln lv-" + level;
        const t = document.createElement("span");
        t.className = "t";
        t.textContent = fmtClock(line.time || Date.now());
        const lv = document.createElement("span");
        lv.className = "lv";
        lv.textContent = LABEL[level];
        const lg = document.createElement("span");
        lg.className = "lg";
        lg.textContent = line.logger || "";
        const msg = document.createElement("span");
        msg.className = "m";
        msg.textContent = line.message;
        div.append(t, lv, lg, msg);
        frag.append(div);
      }
      box.append(frag);
      while (box.childElementCount > MAX_LINES) box.firstElementChild.remove();
      this.count = box.childElementCount;
      if (this.follow) box.scrollTop = box.scrollHeight;
    };
    sink = (lines) => {
      queue.push(...lines);
      if (!frame) frame = requestAnimationFrame(render);
    };
    if (backlog.length) sink(backlog.splice(0));
  },
  beforeUnmount() {
    sink = null;
  },
  methods: {
    onScroll() {
      const box = this.$refs.box;
      this.follow = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    },
    resume() {
      this.follow = true;
      this.$refs.box.scrollTop = this.$refs.box.scrollHeight;
    },
    clear() {
      this.$refs.box.replaceChildren();
      this.count = 0;
    },
  },
  template: `
  <section class="panel terminal" aria-label="terminal">
    <header class="panel-head">
      <h2>Terminal</h2>
      <span class="muted">{{ count }} lines</span>
      <span class="spacer"></span>
      <label v-for="(on, level) in shown" :key="level" class="chk" :class="'lv-' + level">
        <input type="checkbox" v-model="shown[level]" :name="'level-' + level"> {{ level }}
      </label>
      <button type="button" class="btn tiny" :class="{ active: follow }" @click="resume"
              title="follow new lines">{{ follow ? "following" : "follow ⇩" }}</button>
      <button type="button" class="btn tiny" @click="clear">clear</button>
    </header>
    <div ref="box" class="term-box" :class="hiddenClasses" @scroll.passive="onScroll"
         role="log" aria-live="off"></div>
  </section>`,
};

export const TapePanel = {
  name: "TapePanel",
  data() {
    return { closedOnly: false, paused: false };
  },
  mounted() {
    const box = this.$refs.box;
    let buffer = [];
    let lastRender = 0;
    let timer = 0;
    const KEEP = 40;
    // Fixed rows, rewritten in place: no nodes created or dropped per update.
    const lines = [];
    for (let i = 0; i < KEEP; i += 1) {
      const div = document.createElement("div");
      div.className = "tp";
      div.hidden = true;
      div.innerHTML =
        '<span class="t"></span><span class="ex"></span><span class="s"></span>' +
        '<span class="n"></span><span class="n"></span><span class="n"></span>' +
        '<span class="n cl"></span><span class="n v"></span><span class="f"></span>';
      lines.push(div);
    }
    box.append(...lines);
    let recent = [];
    const render = () => {
      clearTimeout(timer);
      timer = 0;
      lastRender = performance.now();
      recent = buffer.slice(-KEEP).reverse().concat(recent).slice(0, KEEP);
      buffer = [];
      recent.forEach((c, i) => {
        const div = lines[i];
        div.hidden = false;
        div.className = "tp " + (c.close >= c.open ? "up" : "down") + (c.closed ? " closed" : "");
        const [t, ex, s, o, h, l, cl, v, f] = div.children;
        t.textContent = fmtTime(c.open_time).slice(0, 5);
        ex.textContent = exchangeLabel(c.exchange).slice(0, 3);
        ex.style.color = exchangeColour(c.exchange);
        s.textContent = c.symbol + (c.interval === "1m" ? "" : " " + c.interval);
        o.textContent = fmtPrice(c.open);
        h.textContent = fmtPrice(c.high);
        l.textContent = fmtPrice(c.low);
        cl.textContent = fmtPrice(c.close);
        v.textContent = fmtNum(c.volume, 2);
        f.textContent = c.closed ? "✓" : "";
      });
    };
    this.stop = onTape((batch) => {
      if (this.paused) return;
      for (const c of batch) if (!this.closedOnly || c.closed) buffer.push(c);
      if (buffer.length > KEEP * 2) buffer = buffer.slice(-KEEP);
      if (!buffer.length) return;
      // A readable tape: at most about four repaints a second whatever the candle rate,
      // painted in the same frame as the table (this callback runs inside the store's frame);
      // the timer only catches the last lines when candles stop coming.
      if (performance.now() - lastRender >= 200) render();
      else if (!timer) timer = setTimeout(() => requestFrame(render), 400);
    });
  },
  beforeUnmount() {
    this.stop();
  },
  template: `
  <section class="panel tape" aria-label="realtime data">
    <header class="panel-head">
      <h2>Realtime</h2>
      <span class="spacer"></span>
      <label class="chk"><input type="checkbox" v-model="closedOnly" name="closed-only"> closed</label>
      <button type="button" class="btn tiny" :class="{ active: paused }" @click="paused = !paused">
        {{ paused ? "paused" : "pause" }}</button>
    </header>
    <div class="tp head"><span class="t">time</span><span class="ex">ex</span><span class="s">symbol</span>
      <span class="n">open</span><span class="n">high</span><span class="n">low</span>
      <span class="n cl">close</span><span class="n v">vol</span><span class="f"></span></div>
    <div ref="box" class="tape-box"></div>
  </section>`,
};
