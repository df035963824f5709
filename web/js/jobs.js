// Backfill jobs (POST, GET, DELETE /backfill): the list is polled while the console is open,
// every second while a job is queued or running; jobs start from a coverage strip's hole or
// the backfill form, and a feedd without the routes is shown as "backfill unavailable".

import { api, ApiError } from "./api.js";
import { command } from "./manager.js";
import { rowKey } from "./store.js";

const { reactive, shallowRef, computed, markRaw } = window.Vue;

const ACTIVE_MS = 1000;
const IDLE_MS = 5000;
const UNAVAILABLE_MS = 60000;
const KEEP_FINISHED = 30;
export const ACTIVE = new Set(["queued", "running"]);

export const jobsState = reactive({
  available: null, // null: not known yet; false: this feedd has no /backfill
  unavailableWhy: "",
  error: "", // the last failed poll or request
  highlight: "", // the id of the job started last from this page
  loaded: false,
});
// Newest first, queued and running ones on top; replaced (never mutated) on each poll.
export const jobs = shallowRef([]);

// key -> [{since, until}] of the queued and running jobs, for the strips' "filling" holes.
// The same Map while the set of active jobs stays the same: strips with holes re-render when
// a job starts or ends, not at every poll.
let lastRanges = new Map();
let lastRangesSig = "";
export const activeRanges = computed(() => {
  const sig = jobs.value
    .filter((j) => ACTIVE.has(j.state))
    .map((j) => j.id)
    .join(",");
  if (sig === lastRangesSig) return lastRanges;
  const map = new Map();
  for (const job of jobs.value) {
    if (!ACTIVE.has(job.state)) continue;
    for (const symbol of job.symbols || []) {
      const key = rowKey(job.exchange, symbol, job.interval);
      if (!map.has(key)) map.set(key, []);
      map.get(key).push({ since: job.since, until: job.until ?? null });
    }
  }
  lastRanges = map;
  lastRangesSig = sig;
  return map;
});

const finishedListeners = new Set();
export function onJobFinished(fn) {
  finishedListeners.add(fn);
}

const lastState = new Map(); // id -> state seen at the previous poll
const startedHere = new Set();

function order(a, b) {
  const rank = (j) => (j.state === "running" ? 0 : j.state === "queued" ? 1 : 2);
  return rank(a) - rank(b) || (b.created_at || 0) - (a.created_at || 0);
}

let lastPublished = "";

function publish(list) {
  // An idle feedd answers the same list at every poll: nothing to re-render then.
  const text = JSON.stringify(list);
  if (text === lastPublished) return;
  lastPublished = text;
  const sorted = [...list].sort(order);
  const active = sorted.filter((j) => ACTIVE.has(j.state));
  const done = sorted.filter((j) => !ACTIVE.has(j.state)).slice(0, KEEP_FINISHED);
  let finished = false;
  for (const job of sorted) {
    const before = lastState.get(job.id);
    const ended = !ACTIVE.has(job.state);
    if (ended && (ACTIVE.has(before) || (before === undefined && startedHere.has(job.id)))) {
      finished = true;
    }
    lastState.set(job.id, job.state);
  }
  jobs.value = markRaw([...active, ...done].map((j) => markRaw(j)));
  if (finished) for (const fn of finishedListeners) fn();
}

function upsert(job) {
  publish([job, ...jobs.value.filter((j) => j.id !== job.id)]);
}

// A feedd without the routes answers 404 with no field (an unknown exchange names its field)
// or 405: the console says so instead of showing a broken panel.
function missingRoute(err) {
  return err instanceof ApiError && ((err.status === 404 && !err.field) || err.status === 405);
}

function markUnavailable(err) {
  jobsState.available = false;
  jobsState.unavailableWhy = `this feedd has no backfill API (HTTP ${err.status})`;
}

export function describe(err) {
  if (err instanceof ApiError) {
    const where = err.field ? ` (${err.field})` : "";
    return err.status ? `${err.message}${where} — HTTP ${err.status}` : err.message;
  }
  return String(err && err.message ? err.message : err);
}

let timer = 0;
let polling = null;

function schedule() {
  clearTimeout(timer);
  const busy = jobs.value.some((j) => ACTIVE.has(j.state));
  const delay = jobsState.available === false ? UNAVAILABLE_MS : busy ? ACTIVE_MS : IDLE_MS;
  timer = setTimeout(refreshJobs, delay);
}

export function refreshJobs() {
  if (polling) return polling;
  clearTimeout(timer);
  polling = (async () => {
    try {
      const doc = await api("/backfill");
      const list = Array.isArray(doc) ? doc : doc && Array.isArray(doc.jobs) ? doc.jobs : null;
      if (!list) throw new Error("GET /backfill: the answer is not a list of jobs");
      jobsState.available = true;
      jobsState.error = "";
      publish(list);
    } catch (err) {
      if (missingRoute(err)) markUnavailable(err);
      else jobsState.error = "GET /backfill: " + describe(err);
    } finally {
      polling = null;
      jobsState.loaded = true;
      schedule();
    }
  })();
  return polling;
}

// body: {exchange, symbols, interval, since, until?} (epoch ms). Returns the job; throws the
// ApiError (also shown in the jobs panel and the terminal).
export async function startBackfill(body) {
  try {
    const job = await command("POST", "/backfill", body);
    jobsState.available = true;
    jobsState.error = "";
    if (job && job.id !== undefined) {
      startedHere.add(job.id);
      jobsState.highlight = String(job.id);
      upsert(job);
    }
    refreshJobs();
    return job;
  } catch (err) {
    if (missingRoute(err)) markUnavailable(err);
    else jobsState.error = "POST /backfill: " + describe(err);
    throw err;
  }
}

export async function cancelJob(id) {
  try {
    // feedd takes state changes as JSON only, a DELETE included: an empty object.
    await command("DELETE", `/backfill/${encodeURIComponent(id)}`, {});
    jobsState.error = "";
  } catch (err) {
    jobsState.error = `DELETE /backfill/${id}: ` + describe(err);
  }
  await refreshJobs();
}
