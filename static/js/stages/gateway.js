// The gateway stage's simulation: fire this request at a gateway that runs in the browser.
// The token buckets, the headers and the order of checks mirror explainer/lifecycle/gateway.py;
// the limits, the token counts and every error body come from the server (json_script "gateway-sim").
// The state (buckets, cached prefixes, skipped time) lives in sessionStorage, so it survives going
// to Compose, changing the prompt and coming back.

import { readJSON, setViewOption } from "../stage.js";
import { el, svg, text } from "../lib/svg.js";
import { STATUS } from "../lib/figures.js";

const sim = readJSON("gateway-sim");
const DIMS = ["requests", "input_tokens", "output_tokens"];
const HEADER = { requests: "requests", input_tokens: "input-tokens", output_tokens: "output-tokens" };
const LABEL = { requests: "requests", input_tokens: "input tokens", output_tokens: "output tokens" };
const EPS = 1e-9;
const STORE = "explainer.gateway.v1";
const MAX_LOG = 50;
const $ = (id) => document.getElementById(id);

// ---- token bucket: the same algorithm as lifecycle/gateway.py TokenBucket -------------------------

class TokenBucket {
  constructor(capacity, perSecond, now, tokens = capacity) {
    this.capacity = capacity;
    this.perSecond = perSecond;
    this.tokens = tokens;
    this.updated = now;
  }
  level(now) {
    return Math.min(this.capacity, this.tokens + Math.max(0, now - this.updated) * this.perSecond);
  }
  settle(now) {
    const level = this.level(now);
    this.tokens = level;
    this.updated = Math.max(now, this.updated);
    return level;
  }
  check(n, now) {
    const level = this.level(now);
    const allowed = n <= level + EPS;
    const retryAfter = allowed ? 0 : n > this.capacity + EPS ? null : Math.max(0, (n - level) / this.perSecond);
    return { allowed, retryAfter };
  }
  take(n, now) {
    const level = this.settle(now);
    if (n <= level + EPS) this.tokens = Math.max(0, level - n);
  }
  giveBack(n, now) {
    this.tokens = Math.min(this.capacity, this.settle(now) + n);
  }
}

// ---- state -------------------------------------------------------------------------------------------

const limitsKey = JSON.stringify(sim.limits);
let state = load();

function fresh() {
  const t = Date.now() / 1000;
  return {
    limits: limitsKey, skip: 0, seq: 0, cache: {}, log: [],
    buckets: Object.fromEntries(DIMS.map((d) => [d, { tokens: sim.limits[d], updated: t }])),
  };
}

function load() {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORE));
    if (s && s.limits === limitsKey && s.buckets && Array.isArray(s.log)) return s;
  } catch { /* storage off or damaged: start afresh */ }
  return fresh();
}

function save() {
  try { sessionStorage.setItem(STORE, JSON.stringify(state)); } catch { /* private mode: keep it in memory */ }
}

const now = () => Date.now() / 1000 + state.skip;
const bucket = (d) => {
  const b = state.buckets[d];
  return new TokenBucket(sim.limits[d], sim.limits[d] / 60, b.updated, b.tokens);
};
const store = (d, b) => { state.buckets[d] = { tokens: b.tokens, updated: b.updated }; };

function snapshot(t) {
  return Object.fromEntries(DIMS.map((d) => {
    const b = bucket(d);
    const level = b.level(t);
    return [d, { remaining: Math.max(0, Math.floor(level + EPS)), reset: (b.capacity - level) / b.perSecond, level }];
  }));
}

// All or nothing, and the refusing dimension is the one with the longest wait (or that never fits).
function admit(needs, t) {
  const checks = Object.fromEntries(DIMS.map((d) => [d, bucket(d).check(needs[d], t)]));
  const short = DIMS.filter((d) => !checks[d].allowed);
  if (short.length) {
    const never = short.filter((d) => checks[d].retryAfter === null);
    const worst = never.length ? never[0] : short.reduce((a, d) => (checks[d].retryAfter > checks[a].retryAfter ? d : a));
    return { allowed: false, limitedBy: worst, retryAfter: never.length ? null : checks[worst].retryAfter };
  }
  for (const d of DIMS) { const b = bucket(d); b.take(needs[d], t); store(d, b); }
  return { allowed: true };
}

function giveBack(d, n, t) {
  if (n <= 0) return;
  const b = bucket(d);
  b.giveBack(n, t);
  store(d, b);
}

const rfc3339 = (t) => new Date(Math.ceil(t - EPS) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
const clockText = (t) => new Date(t * 1000).toISOString().slice(11, 19) + " UTC";

// The anthropic-ratelimit-* headers, as lifecycle/gateway.py ratelimit_headers writes them.
function ratelimitHeaders(snap, t, retryAfter = null) {
  const h = {};
  for (const d of DIMS) {
    h[`anthropic-ratelimit-${HEADER[d]}-limit`] = String(sim.limits[d]);
    h[`anthropic-ratelimit-${HEADER[d]}-remaining`] = String(snap[d].remaining);
    h[`anthropic-ratelimit-${HEADER[d]}-reset`] = rfc3339(t + Math.max(0, snap[d].reset));
  }
  const tighter = snap.input_tokens.remaining / sim.limits.input_tokens <= snap.output_tokens.remaining / sim.limits.output_tokens
    ? "input_tokens" : "output_tokens";
  for (const part of ["limit", "remaining", "reset"]) {
    h[`anthropic-ratelimit-tokens-${part}`] = h[`anthropic-ratelimit-${HEADER[tighter]}-${part}`];
  }
  if (retryAfter !== null) h["retry-after"] = String(Math.max(1, Math.ceil(retryAfter - EPS)));
  return h;
}

// ---- one request through the checks ------------------------------------------------------------------

function fire() {
  const t = now();
  state.seq += 1;
  const id = `req_sim_${String(state.seq).padStart(4, "0")}`;
  const steps = {};
  const result = { n: state.seq, t, steps, headers: { "request-id": id } };
  const refuse = (check, body, extraHeaders = {}) => {
    steps[check] = { state: "fail", text: `${STATUS[body.error.type]} ${body.error.type}` };
    Object.assign(result, { status: STATUS[body.error.type], body, stoppedAt: check });
    Object.assign(result.headers, { "content-type": "application/json" }, extraHeaders);
    return result;
  };

  if (sim.size_error) return refuse("size", sim.size_error);
  steps.size = { state: "pass", text: "passes" };
  const keyError = sim.key_errors[currentKey];
  if (keyError) return refuse("key", keyError);
  steps.key = { state: "pass", text: "passes" };
  if (sim.validation_error) return refuse("validate", sim.validation_error);
  steps.validate = { state: "pass", text: "passes" };

  const d = admit(sim.needs, t);
  if (!d.allowed) {
    const h = ratelimitHeaders(snapshot(t), t, d.retryAfter);
    refuse("rate", sim.rate_errors[d.limitedBy], h);
    result.limitedBy = d.limitedBy;
    steps.rate.text = d.retryAfter === null
      ? `429: more ${LABEL[d.limitedBy]} than the whole limit`
      : `429: ${LABEL[d.limitedBy]} short, retry-after ${h["retry-after"]} s`;
    return result;
  }
  steps.rate = { state: "pass", text: "passes" };

  if ($("busy").checked) {
    // Not counted against the limits in this simulation: give the request's share back.
    for (const dim of DIMS) giveBack(dim, sim.needs[dim], t);
    return refuse("capacity", sim.overloaded);
  }
  steps.capacity = { state: "pass", text: "a server has room" };

  const expires = state.cache[sim.prefix];
  const hit = expires !== undefined && expires > t;
  state.cache[sim.prefix] = t + sim.cache_ttl;
  result.cache = hit ? "hit" : expires !== undefined ? "expired" : "miss";
  steps.cache = { state: hit ? "pass" : "miss", text: hit ? "hit: TTL starts again" : expires !== undefined ? "miss: the entry had expired" : "miss: prefix written" };

  giveBack("output_tokens", sim.needs.output_tokens - sim.output_tokens, t);
  Object.assign(result.headers, { "content-type": sim.stream ? "text/event-stream; charset=utf-8" : "application/json" },
    ratelimitHeaders(snapshot(t), t));
  Object.assign(result, { status: 200, stoppedAt: null, body: null,
    usage: { input_tokens: sim.needs.input_tokens, output_tokens: sim.output_tokens } });
  return result;
}

// ---- drawing -------------------------------------------------------------------------------------------

let currentKey = sim.key;
// In a presenter's room the parent page adds html.projector after load (the gauges' labels grow, and are redrawn).
const projector = () => document.documentElement.classList.contains("projector");
const gauges = {};

// Each bucket's gauge is drawn at the width its box has (redrawn when that changes), so its labels
// keep their size instead of scaling with the box.
function buildGauges() {
  for (const fig of document.querySelectorAll(".gw-bucket")) {
    const d = fig.dataset.dim;
    const cap = sim.limits[d];
    const need = sim.needs[d];
    const box = fig.querySelector("[data-gauge]");
    const GW = Math.max(160, Math.min(420, Math.round(box.clientWidth || 240)));
    // a phone's stacked gauges are a little flatter; a projector's label is drawn at 24 px (gateway.css), below a taller bar
    const proj = projector();
    const GH = proj ? 60 : GW < 380 ? 34 : 40;
    const s = svg(GW, GH, { label: `${LABEL[d]} bucket: level against the ${cap} it holds`, className: "gw-svg" });
    s.setAttribute("width", String(GW));
    const bar = proj ? 26 : GH - 22;
    el("rect", { x: 0, y: 3, width: GW, height: bar, rx: 4, class: "gw-track" }, s);
    const fill = el("rect", { x: 0, y: 3, width: GW, height: bar, rx: 4, class: "gw-fill" }, s);
    const x = Math.min(GW - 1, (Math.min(need, cap) / cap) * GW);
    el("line", { x1: x, x2: x, y1: 0, y2: bar + 7, class: need > cap ? "gw-need never" : "gw-need" }, s);
    const n = need.toLocaleString("en"), verb = d === "output_tokens" ? "reserves" : "needs";
    const label = proj ? (need > cap ? `needs ${n}: too many` : `${verb} ${n}`)
      : need > cap ? `needs ${n}: more than it holds` : `this request ${verb} ${n}`;
    const right = need / cap > 0.5 || need > cap;
    text(s, x, GH - 3, label, { class: "gw-need-label", "text-anchor": right ? "end" : "start" });
    box.replaceChildren(s);
    gauges[d] = { fill, GW, levelText: fig.querySelector("[data-level]"), fig, width: box.clientWidth };
  }
}

function drawGauges() {
  const t = now();
  const snap = snapshot(t);
  for (const d of DIMS) {
    const g = gauges[d];
    if (!g) continue;
    const cap = sim.limits[d];
    const { level, remaining } = snap[d];
    g.fill.setAttribute("width", String(Math.max(0, (level / cap) * g.GW)));
    const short = level + EPS < sim.needs[d];
    g.fig.classList.toggle("short", short);
    g.levelText.textContent = `${remaining.toLocaleString("en")} of ${cap.toLocaleString("en")} left`;
  }
  $("clock").textContent = clockText(t);
  $("clock").setAttribute("datetime", new Date(t * 1000).toISOString());
}

function showSteps(steps, stoppedAt) {
  const order = ["size", "key", "validate", "rate", "capacity", "cache"];
  let stopped = false;
  for (const check of order) {
    const li = document.querySelector(`#checks li[data-check="${check}"]`);
    const step = steps[check];
    li.classList.remove("pass", "fail", "idle", "skipped", "miss");
    li.classList.add(step ? step.state : stopped ? "skipped" : "idle");
    const verdict = li.querySelector("[data-verdict]");
    if (verdict) verdict.textContent = step ? step.text : stopped ? "not reached" : "fire a request";
    if (check === stoppedAt) stopped = true;
  }
}

// A response as curl -i prints it: status line, headers, blank line, body.
function httpText(r, withBody = true) {
  const lines = [`HTTP/2 ${r.status}`, ...Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`)];
  if (withBody) lines.push("", r.body ? JSON.stringify(r.body, null, 2) : "(the reply follows: the Streaming stage shows it)");
  return lines.join("\n");
}

function statusPill(status) {
  const pill = document.createElement("span");
  pill.className = `status-pill s${status}`;
  pill.textContent = String(status);
  return pill;
}

function summary(r) {
  if (r.status === 200) {
    const back = sim.needs.output_tokens - sim.output_tokens;
    return `passed; cache ${r.cache}` + (back > 0 ? `; ${back.toLocaleString("en")} reserved output tokens given back` : "");
  }
  const type = r.body.error.type;
  if (r.status === 429) {
    const ra = r.headers["retry-after"];
    return `${type}: ${LABEL[r.limitedBy]}` + (ra ? `, retry-after ${ra} s` : ", can never pass");
  }
  return type;
}

function logItem(r) {
  const li = document.createElement("li");
  li.className = `gw-log-item s${r.status}`;
  li.dataset.status = String(r.status);
  const details = document.createElement("details");
  const sum = document.createElement("summary");
  const n = document.createElement("span");
  n.className = "gw-log-n";
  n.textContent = `#${r.n}`;
  const when = document.createElement("time");
  when.textContent = clockText(r.t).slice(0, 8);
  const what = document.createElement("span");
  what.className = "gw-log-what";
  what.textContent = r.summary;
  sum.append(n, " ", statusPill(r.status), " ", when, " ", what);
  const pre = document.createElement("pre");
  pre.className = "json gw-http";
  pre.textContent = httpText(r, false);
  details.append(sum, pre);
  li.append(details);
  return li;
}

function showLast(r, steps = true) {
  $("last").hidden = false;
  const st = $("last-status");
  st.replaceChildren(statusPill(r.status), " ", r.status === 200 ? "OK" : r.body.error.type);
  if (r.status === 200) {
    $("last-note").textContent = `Passed the gateway at ${clockText(r.t)}. The model runs next; the response will report `
      + `usage input_tokens ${r.usage.input_tokens}, output_tokens ${r.usage.output_tokens}.`;
  } else {
    const where = { size: "the size check", key: "the key check", validate: "the format check", rate: "the rate limits", capacity: "routing" }[r.stoppedAt];
    $("last-note").textContent = `Stopped at ${where} at ${clockText(r.t)}${r.stoppedAt === "capacity" ? " (not counted against your limits here)" : ""}.`;
  }
  $("last-http").textContent = httpText(r);
  if (steps) showSteps(r.steps, r.stoppedAt);
}

function showCache() {
  const t = now();
  const exp = state.cache[sim.prefix];
  $("cache-state").textContent = exp === undefined ? "not looked up yet"
    : exp > t ? `cached until ${clockText(exp)} (${Math.ceil(exp - t)} s left)` : `expired at ${clockText(exp)}`;
}

function renderLog() {
  const log = $("log");
  log.replaceChildren(...state.log.slice().reverse().map(logItem));
  $("log-count").textContent = state.log.length ? `(${state.seq} in all, newest first)` : "(none yet)";
}

function record(r) {
  state.log.push(r);
  if (state.log.length > MAX_LOG) state.log.splice(0, state.log.length - MAX_LOG);
}

function fireMany(count) {
  let last;
  for (let i = 0; i < count; i++) {
    last = fire();
    last.summary = summary(last);
    record(last);
  }
  save();
  renderLog();
  showLast(last);
  drawGauges();
  showCache();
  $("outcome").replaceChildren(`Last request, #${last.n}: `, statusPill(last.status), ` ${last.summary}`);
  // what the learner has now seen, for the tutorial: a 429 that no wait can fix
  if (last.status === 429 && !last.headers["retry-after"]) {
    document.dispatchEvent(new CustomEvent("explainer:seen", { detail: "never-429" }));
  }
}

// ---- controls -----------------------------------------------------------------------------------------

$("fire").addEventListener("click", () => fireMany(1));
$("fire10").addEventListener("click", () => fireMany(10));
$("wait15").addEventListener("click", () => { state.skip += 15; save(); drawGauges(); showCache(); });
$("wait5m").addEventListener("click", () => { state.skip += 300; save(); drawGauges(); showCache(); });
$("reset").addEventListener("click", () => {
  state = fresh();
  save();
  renderLog();
  $("last").hidden = true;
  $("outcome").textContent = "";
  // the checks that need no firing; after one that fails, the rest are not reached (as the page first showed them)
  const still = { size: stepOfStatic("size"), key: stepOfStatic("key"), validate: stepOfStatic("validate") };
  showSteps(still, ["size", "key", "validate"].find((c) => still[c].state === "fail") ?? null);
  drawGauges();
  showCache();
});

function stepOfStatic(check) {
  if (check === "size") return sim.size_error ? { state: "fail", text: "413 request_too_large" } : { state: "pass", text: "passes" };
  if (check === "key") return sim.key_errors[currentKey] ? { state: "fail", text: "401 authentication_error" } : { state: "pass", text: "passes" };
  const v = sim.validation_error;
  return v ? { state: "fail", text: `${STATUS[v.error.type]} ${v.error.type}` } : { state: "pass", text: "passes" };
}

for (const radio of document.querySelectorAll('input[name="key"]')) {
  radio.addEventListener("change", () => {
    if (!radio.checked) return;
    currentKey = radio.value;
    setViewOption("key", currentKey === "valid" ? null : currentKey);
    for (const node of document.querySelectorAll("[data-key-case]")) node.hidden = node.dataset.keyCase !== currentKey;
    const li = document.querySelector('#checks li[data-check="key"]');
    li.classList.remove("pass", "fail", "idle", "skipped", "miss");
    li.classList.add(stepOfStatic("key").state);
  });
}

// ---- start -------------------------------------------------------------------------------------------

$("needs-js").hidden = true;
buildGauges();
new ResizeObserver(() => {
  if (Object.values(gauges).some((g) => g.fig.querySelector("[data-gauge]").clientWidth !== g.width)) { buildGauges(); drawGauges(); }
}).observe($("buckets"));
let wasProjector = projector();
new MutationObserver(() => {
  if (projector() === wasProjector) return;
  wasProjector = projector();
  buildGauges();
  drawGauges();
}).observe(document.documentElement, { attributes: true, attributeFilter: ["class"] });
drawGauges();
renderLog();
showCache();
if (state.log.length) showLast(state.log[state.log.length - 1], false); // maybe another scenario's: keep this one's checks
setInterval(() => { if (!document.hidden) { drawGauges(); showCache(); } }, 250);
