// The conversation stage: the request bars and their JSON bodies, the per-request and cumulative
// charts, the projection to Claude's windows, the overflow strategies, and Send / Fast-forward,
// which grow the conversation by building the next scenario (history + this reply + a new user
// turn) and opening it. Every number comes from "conversation-data" (pages/conversation.py);
// text from the scenario is only ever inserted with textContent.

import { encodeScenario, inPresentersRoom, offerEdit, readJSON, runInRoom, setViewOption } from "../stage.js";
import { el, svg, text } from "../lib/svg.js";
import { setText } from "../lib/text.js";

const D = readJSON("conversation-data");
const $ = (id) => document.getElementById(id);
const NF = new Intl.NumberFormat("en-US");
const fmt = (n) => NF.format(Math.round(n));
const FF_KEY = "conversation-fast-forward";
const DEFAULTS = { n: "2", strategy: "drop_oldest", scale: "200k" };

function usd(x) {
  if (x === null || x === undefined) return "price unknown";
  if (x === 0) return "$0";
  const digits = Math.max(2, -Math.floor(Math.log10(Math.abs(x))) + 2);
  return "$" + x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function compactTokens(n) {
  if (n >= 1e9) return `${+(n / 1e9).toPrecision(3)}B`;
  if (n >= 1e6) return `${+(n / 1e6).toPrecision(3)}M`;
  if (n >= 1e4) return `${+(n / 1e3).toPrecision(3)}k`;
  return fmt(n);
}

// ---- one request's JSON body, resent messages muted, new ones highlighted ------------------

function renderRequest(k) {
  const pre = $("request-json");
  if (!pre) return;
  const end = D.ends[k - 1];
  const before = k > 1 ? D.ends[k - 2] : 0;
  pre.replaceChildren();
  const add = (s, cls) => {
    const span = document.createElement("span");
    if (cls) span.className = cls;
    setText(span, s);  // the scenario's text, with bidi and control characters shown
    pre.append(span);
  };
  const head = Object.entries(D.head);
  const tail = Object.entries(D.tail);
  add("{\n");
  for (const [key, v] of head) add(`  ${JSON.stringify(key)}: ${JSON.stringify(v)},\n`);
  add('  "messages": [\n');
  D.history.slice(0, end).forEach((m, i) => {
    const line = `{"role": ${JSON.stringify(m.role)}, "content": ${JSON.stringify(m.content)}}`;
    add(`    ${line}${i < end - 1 ? "," : ""}\n`, i < before ? "resent" : "new");
  });
  add(`  ]${tail.length ? "," : ""}\n`);
  tail.forEach(([key, v], i) => add(`  ${JSON.stringify(key)}: ${JSON.stringify(v)}${i < tail.length - 1 ? "," : ""}\n`));
  add("}");
  $("request-json-turn").textContent = String(k);
  const first = pre.querySelector(".new");  // bring the new part into view
  if (first) pre.scrollTop = Math.max(0, first.offsetTop - pre.offsetTop - 60);
}

function selectTurn(k, { remember = true } = {}) {
  for (const b of document.querySelectorAll(".cv-row")) b.setAttribute("aria-pressed", String(Number(b.dataset.turn) === k));
  for (const r of document.querySelectorAll("#turn-table tbody tr")) r.classList.toggle("selected", Number(r.dataset.turn) === k);
  renderRequest(k);
  if (remember) setViewOption("turn", k === D.turns.length ? null : k);
}

const projector = () => document.documentElement.classList.contains("projector");

// ---- charts ----------------------------------------------------------------------------------

const W = 460, H = 250, M = { l: 52, r: 14, t: 18, b: 38 };
const SMALL = { W, H, M };  // the secondary charts: a fixed viewBox, scaled to their column

// F: the size the chart's text is drawn at (12 px; 24 px in projector mode, where conversation.css sets it).
function axes(s, { yMax, ticks, label, xLabels, xTitle }, { W, H, M, F = 12 } = SMALL) {
  const g = el("g", { class: "axis" }, s);
  const pw = W - M.l - M.r, ph = H - M.t - M.b;
  for (const v of ticks) {
    const y = M.t + ph - (v / yMax) * ph;
    el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y, class: "grid" }, g);
    text(g, M.l - 6, y + F / 3, compactTokens(v), { "text-anchor": "end" });
  }
  el("line", { x1: M.l, x2: M.l, y1: M.t, y2: M.t + ph }, g);
  el("line", { x1: M.l, x2: W - M.r, y1: M.t + ph, y2: M.t + ph }, g);
  const step = Math.max(1, Math.ceil(xLabels.length / (F > 12 ? 8 : 12)));
  xLabels.forEach((lab, i) => {
    if (i % step && i !== xLabels.length - 1) return;
    text(g, lab.x, M.t + ph + F + 3, lab.text, { "text-anchor": "middle" });
  });
  text(g, M.l + pw / 2, H - 4, xTitle, { "text-anchor": "middle", class: "axis-title" });
  const cx = F;  // the rotated y title's centre line
  text(g, cx, M.t + ph / 2, label, { "text-anchor": "middle", class: "axis-title", transform: `rotate(-90 ${cx} ${M.t + ph / 2})` });
  return { pw, ph };
}

function niceTicks(max, n = 4) {
  const raw = max / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  const out = [];
  for (let v = 0; v <= max + 1e-9; v += step) out.push(v);
  return out;
}

function hline(s, y, cls, label, below = false, { W, M, F = 12 } = SMALL) {
  const g = el("g", { class: `limit ${cls}` }, s);
  el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y }, g);
  text(g, M.l + 4, below ? y + F + 1 : y - 4, label, { "text-anchor": "start" });
}

// One bar slot per request of the conversation, on a token axis up to yMax: the chart, its
// y scale, the bar width and each slot's centre.
function requestChart(T, yMax, label, dim = SMALL, maxBar = 46) {
  const { W, H, M } = dim;
  const s = svg(W, H, { label, className: "cv-svg" });
  const slot = (W - M.l - M.r) / T.length;
  const mid = (i) => M.l + slot * (i + 0.5);
  const { ph } = axes(s, {
    yMax, ticks: niceTicks(yMax), label: "tokens", xTitle: "request",
    xLabels: T.map((t, i) => ({ x: mid(i), text: String(t.turn) })),
  }, dim);
  return { s, y: (v) => M.t + ph - (v / yMax) * ph, bw: Math.min(maxBar, slot * 0.7), mid };
}

// The main visual: input tokens per request, each bar split into what was sent before (pale) and what is
// new in it (strong), under the prompt limit. Drawn at the size of its box (the height follows the screen),
// so the text stays at its real size.
function drawPerTurn() {
  const host = $("chart-per-turn");
  if (!host) return;
  const T = D.turns;
  const phone = window.innerWidth < 700;
  const proj = projector();
  const w = Math.max(280, Math.round(host.clientWidth || 600));
  const h = proj ? Math.round(Math.min(360, Math.max(240, window.innerHeight * 0.52)))
    : Math.round(Math.min(phone ? 250 : 300, Math.max(180, window.innerHeight * (phone ? 0.27 : 0.36))));
  const dim = proj ? { W: w, H: h, F: 24, M: { l: 96, r: 10, t: 30, b: 62 } } : { W: w, H: h, M: { l: 48, r: 10, t: 16, b: 36 } };
  const yMax = Math.max(D.window, ...T.map((t) => t.input)) * 1.08;
  const label = `Input tokens per request: ${T.map((t) => t.input).join(", ")}; the prompt limit is ${D.max_prompt}`;
  const { s, y, bw, mid } = requestChart(T, yMax, label, dim, phone ? 44 : proj ? 96 : 72);
  s.setAttribute("height", String(h));
  s.classList.add("cv-main-svg");
  T.forEach((t, i) => {
    const x = mid(i) - bw / 2;
    const g = el("g", { class: `bar${t.refused ? " refused" : ""}` }, s);
    const resent = t.input - t.new;
    el("rect", { x, y: y(t.input), width: bw, height: y(resent) - y(t.input), class: "new" }, g);
    if (resent > 0) el("rect", { x, y: y(resent), width: bw, height: y(0) - y(resent), class: "resent" }, g);
    text(g, x + bw / 2, y(t.input) - 4, t.refused ? `${fmt(t.input)} · 400` : fmt(t.input), { "text-anchor": "middle", class: "val" });
  });
  hline(s, y(D.max_prompt), "max", `prompt limit ${D.max_prompt}`, false, dim);
  if (D.budget < D.max_prompt) hline(s, y(D.budget), "budget", `room for the reply: ${D.budget}`, true, dim);
  host.replaceChildren(s);
}

function drawCumulative() {
  const host = $("chart-cumulative");
  if (!host) return;
  const T = D.turns;
  const yMax = Math.max(...T.map((t) => t.cum_input), ...T.map((t) => t.input), 1) * 1.22;
  const { s, y, bw, mid } = requestChart(T, yMax, `Input tokens billed so far: ${T.map((t) => t.cum_input).join(", ")}`);
  T.forEach((t, i) => {
    const x = mid(i) - bw / 2;
    const g = el("g", { class: "bar cum" }, s);
    el("rect", { x, y: y(t.cum_input), width: bw, height: y(0) - y(t.cum_input), class: "billed" }, g);
    text(g, x + bw / 2, y(t.cum_input) - 4, fmt(t.cum_input), { "text-anchor": "middle", class: "val" });
    if (D.price_known && t.cum_cost !== null) text(g, x + bw / 2, y(t.cum_input) - 18, usd(t.cum_cost), { "text-anchor": "middle", class: "cost" });
  });
  // the size of each request on its own, for comparison: the line the bars pull away from
  const pts = T.map((t, i) => `${mid(i)},${y(t.input)}`).join(" ");
  el("polyline", { points: pts, class: "one-request" }, s);
  T.forEach((t, i) => el("circle", { cx: mid(i), cy: y(t.input), r: 3.5, class: "one-request-dot" }, s));
  const lg = el("g", { class: "chart-legend" }, s);
  el("rect", { x: M.l + 8, y: M.t, width: 12, height: 12, class: "billed" }, lg);
  text(lg, M.l + 25, M.t + 10, "billed so far");
  el("line", { x1: M.l + 120, x2: M.l + 138, y1: M.t + 6, y2: M.t + 6, class: "one-request" }, lg);
  text(lg, M.l + 143, M.t + 10, "one request");
  host.replaceChildren(s);
}

function drawProjection(key) {
  const host = $("chart-projection");
  const p = D.projections.find((x) => x.key === key);
  if (!host || !p) return;
  const s = svg(W + 60, H, { label: `At the same pace, a ${fmt(p.window)}-token window holds ${fmt(p.turns)} requests and bills ${fmt(p.total_input)} input tokens in all`, className: "cv-svg" });
  const right = 60;
  const pw = W - M.l - M.r, ph = H - M.t - M.b;
  const x = (k) => M.l + ((k - 1) / Math.max(1, p.turns - 1)) * pw;
  const yL = (v) => M.t + ph - (v / p.window) * ph;
  const yR = (v) => M.t + ph - (v / p.total_input) * ph;
  const g = el("g", { class: "axis" }, s);
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const yy = M.t + ph - f * ph;
    el("line", { x1: M.l, x2: M.l + pw, y1: yy, y2: yy, class: "grid" }, g);
    text(g, M.l - 6, yy + 4, compactTokens(f * p.window), { "text-anchor": "end", class: "left" });
    text(g, M.l + pw + 6, yy + 4, compactTokens(f * p.total_input), { "text-anchor": "start", class: "right" });
  }
  el("line", { x1: M.l, x2: M.l, y1: M.t, y2: M.t + ph }, g);
  el("line", { x1: M.l, x2: M.l + pw, y1: M.t + ph, y2: M.t + ph }, g);
  for (const f of [0, 0.5, 1]) {
    const k = Math.max(1, Math.round(1 + f * (p.turns - 1)));
    text(g, x(k), M.t + ph + 15, fmt(k), { "text-anchor": "middle" });
  }
  text(g, M.l + pw / 2, H - 4, "request", { "text-anchor": "middle", class: "axis-title" });
  text(g, 12, M.t + ph / 2, "tokens in one request", { "text-anchor": "middle", class: "axis-title left", transform: `rotate(-90 12 ${M.t + ph / 2})` });
  const xr = W + right - 8;
  text(g, xr, M.t + ph / 2, "input billed so far", { "text-anchor": "middle", class: "axis-title right", transform: `rotate(90 ${xr} ${M.t + ph / 2})` });
  const n = Math.min(120, p.turns);
  const line = [], curve = [];
  for (let i = 0; i < n; i++) {
    const k = 1 + Math.round((i / Math.max(1, n - 1)) * (p.turns - 1));
    const one = D.first + (k - 1) * D.growth;
    const total = k * D.first + (D.growth * k * (k - 1)) / 2;
    line.push(`${x(k).toFixed(1)},${yL(one).toFixed(1)}`);
    curve.push(`${x(k).toFixed(1)},${yR(total).toFixed(1)}`);
  }
  el("polyline", { points: line.join(" "), class: "proj-line" }, s);
  el("polyline", { points: curve.join(" "), class: "proj-curve" }, s);
  const lg = el("g", { class: "chart-legend" }, s);
  el("line", { x1: M.l + 8, x2: M.l + 26, y1: M.t + 6, y2: M.t + 6, class: "proj-line" }, lg);
  text(lg, M.l + 31, M.t + 10, "one request (left axis)");
  el("line", { x1: M.l + 8, x2: M.l + 26, y1: M.t + 24, y2: M.t + 24, class: "proj-curve" }, lg);
  text(lg, M.l + 31, M.t + 28, `billed so far (right axis)${D.price_known && p.cost !== null ? `: ${usd(p.cost)} of input in all` : ""}`);
  host.replaceChildren(s);
}

function selectScale(key, { remember = true } = {}) {
  for (const b of document.querySelectorAll("[data-scale]")) {
    if (b.tagName === "BUTTON") b.setAttribute("aria-pressed", String(b.dataset.scale === key));
    else b.classList.toggle("selected", b.dataset.scale === key);
  }
  drawProjection(key);
  if (remember) setViewOption("scale", key === DEFAULTS.scale ? null : key);
}

// ---- strategies ------------------------------------------------------------------------------

function selectStrategy(key, { remember = true } = {}) {
  for (const card of document.querySelectorAll(".cv-strategy")) card.classList.toggle("selected", card.dataset.strategy === key);
  for (const b of document.querySelectorAll("[data-show]")) b.setAttribute("aria-pressed", String(b.dataset.show === key));
  for (const p of document.querySelectorAll(".cv-payload")) p.hidden = p.id !== `payload-${key}`;
  if (remember) setViewOption("strategy", key === DEFAULTS.strategy ? null : key);
}

// ---- growing the conversation ------------------------------------------------------------------

function keptOptions(url) {
  const here = new URL(location.href);
  for (const k of ["n", "strategy", "scale"]) {
    const v = here.searchParams.get(k);
    if (v) url.searchParams.set(k, v);
  }
  return url;
}

async function nextUrl(messageText) {
  const fields = { ...D.fields, messages: [...D.next_history, { role: "user", content: messageText }] };
  const blob = await encodeScenario(fields);
  const url = keptOptions(new URL(location.pathname, location.href));
  url.searchParams.set("s", blob);
  return { url, blob };
}

function setStatus(msg, bad = false) {
  const st = $("send-status");
  st.textContent = msg;
  st.classList.toggle("cv-bad", bad);
}

function busy(on) {
  for (const id of ["send", "suggest", "fast-forward"]) { const b = $(id); if (b) b.disabled = on || D.refused; }
  $("ff-stop").hidden = !on;
}

function unusedCanned() {
  const sent = new Set(D.history.map((m) => m.content));
  return D.canned.findIndex((t) => !sent.has(t));
}

async function send(e) {
  e.preventDefault();
  const box = $("next-message");
  const msg = box.value.trim();
  if (!msg) { setStatus("Type a message first.", true); box.focus(); return; }
  if (inPresentersRoom()) {  // in a classroom room the class runs it: the room opens the next request and runs it
    runInRoom();
    setStatus("Sent to the room: every phone and the live run beside this stage show the reply.");
    return;
  }
  busy(true);
  $("ff-stop").hidden = true;
  setStatus("Encoding the next request and sending it…");
  try {
    const { url } = await nextUrl(msg);
    location.assign(url.pathname + url.search);
  } catch (err) {
    busy(false);
    setStatus(`Could not send: ${err.message}`, true);
  }
}

function readFF() {
  try { return JSON.parse(sessionStorage.getItem(FF_KEY) || "null"); } catch { return null; }
}

async function fastForwardStep(state) {
  const i = state.next;
  if (D.refused || !D.next_history || i < 0 || i >= D.canned.length) {
    sessionStorage.removeItem(FF_KEY);
    busy(false);
    if (D.refused) {
      setStatus(`Fast-forward reached the limit: request ${D.turns.length} was refused with a 400. See “At the limit” below.`);
      const lim = $("limit-h");
      if (lim && state.steps > 0) lim.scrollIntoView({ block: "start" });
    } else {
      setStatus("Fast-forward has no suggested messages left; the history still fits. Type your own to go on.");
    }
    return;
  }
  busy(true);
  const last = D.turns[D.turns.length - 1];
  setStatus(`Fast-forward: request ${last.turn} sent ${fmt(last.input)} tokens and got its reply. Sending request ${last.turn + 1}…`);
  try {
    const { url, blob } = await nextUrl(D.canned[i]);
    if (!readFF()) { busy(false); setStatus("Fast-forward stopped."); return; }
    sessionStorage.setItem(FF_KEY, JSON.stringify({ next: i + 1, expect: blob, steps: state.steps + 1 }));
    location.replace(url.pathname + url.search);
  } catch (err) {
    sessionStorage.removeItem(FF_KEY);
    busy(false);
    setStatus(`Fast-forward stopped: ${err.message}`, true);
  }
}

function startFastForward() {
  const i = unusedCanned();
  const state = { next: i < 0 ? D.canned.length : i, steps: 0 };
  sessionStorage.setItem(FF_KEY, JSON.stringify(state));
  fastForwardStep(state);
}

function resumeFastForward() {
  const st = readFF();
  if (!st) return;
  const blob = new URL(location.href).searchParams.get("s") || "";
  if (st.expect !== blob) { sessionStorage.removeItem(FF_KEY); return; }
  if (D.refused || !D.next_history || st.next >= D.canned.length) { fastForwardStep(st); return; }
  // give the page a moment on screen so each request can be seen growing
  busy(true);
  setStatus(`Fast-forward: request ${D.turns.length} answered.`);
  setTimeout(() => { if (readFF()) fastForwardStep(st); }, 700);
}

// ---- wiring ------------------------------------------------------------------------------------

function init() {
  for (const b of document.querySelectorAll(".cv-row")) b.addEventListener("click", () => selectTurn(Number(b.dataset.turn)));
  selectTurn(D.selected, { remember: false });
  drawPerTurn();
  drawCumulative();
  // In a presenter's room the parent page adds html.projector after load: the main chart is drawn again, at 24 px.
  let wasProjector = projector();
  new MutationObserver(() => {
    if (projector() !== wasProjector) { wasProjector = projector(); drawPerTurn(); }
  }).observe(document.documentElement, { attributes: true, attributeFilter: ["class"] });
  let width = window.innerWidth;
  window.addEventListener("resize", () => {  // the main chart follows its box
    if (window.innerWidth === width) return;
    width = window.innerWidth;
    clearTimeout(init.timer);
    init.timer = setTimeout(drawPerTurn, 150);
  });
  for (const b of document.querySelectorAll("button[data-scale]")) b.addEventListener("click", () => selectScale(b.dataset.scale));
  if (D.projections.length) selectScale(D.projections.some((p) => p.key === D.scale) ? D.scale : D.projections[0].key, { remember: false });
  for (const b of document.querySelectorAll("[data-show]")) b.addEventListener("click", () => selectStrategy(b.dataset.show));
  const nSel = $("n-select");
  if (nSel) nSel.addEventListener("change", () => {
    const u = new URL(location.href);
    if (nSel.value === DEFAULTS.n) u.searchParams.delete("n"); else u.searchParams.set("n", nSel.value);
    u.hash = "limit-h";
    location.assign(u);
  });
  const form = $("send-form");
  form.addEventListener("submit", send);
  // In a classroom room a message typed here and not sent is the request the class runs (stage.js, offerEdit).
  offerEdit(async () => {
    const msg = $("next-message").value.trim();
    if (!msg || D.refused) return null;
    const { url } = await nextUrl(msg);
    return url.pathname + url.search;
  });
  $("next-message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  $("suggest").addEventListener("click", () => {
    const i = unusedCanned();
    const box = $("next-message");
    box.value = D.canned[i < 0 ? 0 : i];
    box.focus();
    setStatus("A long follow-up, like the logs and code people paste into chats. Edit it or press Send.");
  });
  $("fast-forward").addEventListener("click", startFastForward);
  $("ff-stop").addEventListener("click", () => {
    sessionStorage.removeItem(FF_KEY);
    busy(false);
    setStatus("Fast-forward stopped.");
  });
  const tr = $("transcript");
  if (tr) tr.scrollTop = tr.scrollHeight;  // the newest turn in view, as in a chat app
  resumeFastForward();
  document.body.dataset.conversationReady = "1";
}

if (D) init();
