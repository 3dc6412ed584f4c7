// Streaming stage: run the scenario live over ws/stream/ and show every frame as the API would
// put it on the wire (Server-Sent Events), the text as its deltas arrive, and the usage and
// timings. Everything from the server is inserted with textContent, never as HTML.
import { readJSON, setViewOption } from "../stage.js";
import { el, svg, text as svgText } from "../lib/svg.js";
import { stopReasonInWords } from "../lib/text.js";
import { isApiEvent, sseBytes, textFigures } from "../lib/figures.js";

const $ = (id) => document.getElementById(id);
const body = readJSON("request-body");
const cfg = readJSON("stream-config");
const wire = $("wire"), out = $("text"), statusEl = $("status");
const MAX_LINES = 1500;
const projector = () => document.documentElement.classList.contains("projector");

let socket = null;
let run = null;  // the live run: clock marks and counters

function node(tag, className, text = null) {
  const n = document.createElement(tag);
  if (className) n.className = className;
  if (text !== null) n.textContent = text;
  return n;
}
const setStatus = (t) => { statusEl.textContent = t; };
const metric = (name) => document.querySelector(`[data-metric="${name}"]`);
const now = () => performance.now();
const ms = (v) => `${v.toFixed(v < 100 ? 1 : 0)} ms`;

// ---- the wire log ---------------------------------------------------------------------------

// Explainer frames are long (candidates, prompt tokens): the log shows their gist.
function gist(frame) {
  switch (frame.type) {
    case "explainer.prompt": return { input_tokens: frame.input_tokens, context_window: frame.context_window, tokens: `[${frame.tokens.length} tokens]`, model: frame.model };
    case "explainer.token": {
      const top = frame.candidates[0];
      return { index: frame.index, token: frame.token, text: frame.text, piece: frame.piece, ms: frame.ms,
        candidates: `[${frame.candidates.length}; top ${JSON.stringify(top.text)} p=${top.final_probability}]` };
    }
    default: return frame;
  }
}

// A text delta's data cut down to the text it carries, for the projector's one-line events (streaming.css
// shows it there instead of the whole line): data: …"text":" the"}}
function addTail(li, json) {
  const at = json.indexOf('"text":');
  if (at < 0) return;
  const line = node("span", "line tail");
  line.setAttribute("aria-hidden", "true");
  line.append(node("span", "k", "data: "), node("span", "tail-text", "…" + json.slice(at)));
  li.append(line);
}

function follow() {
  // keep the newest line in view, unless the reader scrolled up to look at something
  const nearBottom = wire.scrollHeight - wire.scrollTop - wire.clientHeight < 80;
  return () => { if (nearBottom) wire.scrollTop = wire.scrollHeight; };
}

function logFrame(frame) {
  const scroll = follow();
  const li = node("li", "ev");
  if (frame.type.startsWith("explainer.")) {
    li.classList.add("explainer");
    const line = node("span", "line");
    line.append(node("span", "k", "// "), node("span", "ev-name", frame.type), node("span", "tag", " WebSocket only"));
    const data = node("span", "line");
    data.append(node("span", "data", JSON.stringify(gist(frame))));
    li.append(line, data);
  } else {
    li.classList.add(`ev-${frame.type}`);
    const line = node("span", "line");
    line.append(node("span", "k", "event: "), node("span", "ev-name", frame.type));
    const data = node("span", "line");
    const json = JSON.stringify(frame);
    data.append(node("span", "k", "data: "), node("span", "data", json));
    li.append(line, data);
    if (frame.type === "content_block_delta") addTail(li, json);
    if (isApiEvent(frame)) {  // counted as every page counts a stream (lib/figures.js): an error is not an event
      run.bytes += sseBytes(frame);
      run.events++;
    }
    let note = null;
    if (frame.type === "message_start") note = `input_tokens: ${frame.message.usage.input_tokens}, known before any output`;
    if (frame.type === "message_delta") note = `output_tokens: ${frame.usage.output_tokens}, known only now, at the end`;
    if (note) { li.classList.add("has-usage", "flash"); li.append(node("span", "note", note)); }
    if (frame.type === "error") li.classList.add("error");
  }
  wire.append(li);
  while (wire.children.length > MAX_LINES) wire.firstChild.remove();
  scroll();
}

// ---- metrics --------------------------------------------------------------------------------

function setMetric(name, value, flash = false) {
  const box = metric(name);
  const dd = box.tagName === "DIV" ? box.querySelector("dd") : box;
  dd.textContent = String(value);
  if (flash) { box.classList.remove("flash"); void box.offsetWidth; box.classList.add("flash"); }
}

function resetMetrics() {
  for (const m of ["input_tokens", "output_tokens", "stop_reason"]) setMetric(m, "…");
  for (const m of ["ttft-browser", "tps-browser", "total-browser", "ttft-engine", "tps-engine", "total-engine"]) setMetric(m, "…");
}

function browserTimings() {
  const t = run.tokenTimes;
  if (t.length) setMetric("ttft-browser", ms(t[0] - run.start));
  if (t.length > 1) setMetric("tps-browser", ((t.length - 1) / ((t[t.length - 1] - t[0]) / 1000)).toFixed(1));
}

function drawTimeline() {
  const box = $("timeline");
  const end = Math.max(run.end || now(), ...run.tokenTimes, run.start + 1) - run.start;
  const W = 380, H = 64, x = (t) => 8 + ((t - run.start) / end) * (W - 16);
  const s = svg(W, H, { label: "When each token arrived in the browser" });
  el("line", { x1: 8, y1: 34, x2: W - 8, y2: 34, style: "stroke: var(--line-mid, #b9b8ae)" }, s);
  for (const t of run.tokenTimes) el("line", { x1: x(t), y1: 26, x2: x(t), y2: 42, style: "stroke: var(--accent)", "stroke-width": 1.5 }, s);
  const mark = (t, label, above) => {
    if (t == null) return;
    el("line", { x1: x(t), y1: above ? 14 : 34, x2: x(t), y2: above ? 34 : 54, style: "stroke: var(--accent-2)", "stroke-width": 2 }, s);
    const anchor = x(t) < W * 0.2 ? "start" : x(t) > W * 0.8 ? "end" : "middle";
    svgText(s, x(t), above ? 11 : 63, label, { "text-anchor": anchor, "font-size": 11, style: "fill: var(--ink-orange, #7a3b00)" });
  };
  mark(run.startAt, "message_start (input_tokens)", true);
  mark(run.deltaAt, "message_delta (output_tokens)", false);
  svgText(s, 8, 63, "0", { "font-size": 10, style: "fill: var(--muted)" });
  box.replaceChildren(s);
  $("timeline-caption").hidden = false;
  $("timeline-caption").textContent = `Each tick is one token arriving in the browser, over ${ms(end)}; the orange marks show when the two usage numbers arrived.`;
}

// ---- one live run ---------------------------------------------------------------------------

function setRunning(on) {
  $("play").disabled = on;
  $("stop").hidden = !on;
  document.body.classList.toggle("st-running", on);
}

function finish(message) {
  if (!run) return;
  run.end = run.end || now();
  setRunning(false);
  out.classList.remove("streaming");
  setStatus(message);
  $("wire-summary").textContent = `${run.events} events, ${run.bytes.toLocaleString("en")} bytes as Server-Sent Events, `
    + `for ${textFigures(out.textContent, run.tokenTimes.length).characters.toLocaleString("en")} characters of text in ${run.deltas} deltas.`;
  drawTimeline();
}

function onFrame(frame) {
  if (frame.type === "explainer.hello") { setStatus("Connected."); return; }
  if (!run || run.stopped) return;  // frames still in flight after Stop are not part of this run
  logFrame(frame);
  const t = now();
  switch (frame.type) {
    case "message_start":
      run.startAt = t;
      setMetric("input_tokens", frame.message.usage.input_tokens, true);
      setMetric("output_tokens", "… (arrives last)");
      setStatus("Streaming…");
      break;
    case "explainer.token":
      run.tokenTimes.push(t);
      browserTimings();
      if (run.tokenTimes.length % 4 === 1) drawTimeline();
      break;
    case "content_block_delta":
      if (frame.delta.type === "text_delta") {
        run.deltas++;
        // keep the newest words in view when the text scrolls (a projector's text box is short)
        const atEnd = out.scrollHeight - out.scrollTop - out.clientHeight < 40;
        out.append(node("span", "piece", frame.delta.text));
        if (atEnd) out.scrollTop = out.scrollHeight;
        out.lastChild.title = `text delta ${run.deltas}`;
      }
      break;
    case "message_delta":
      run.deltaAt = t;
      setMetric("output_tokens", frame.usage.output_tokens, true);
      setMetric("stop_reason", stopReasonInWords(frame.delta.stop_reason), true);
      $("stop-words").textContent = frame.delta.stop_reason ? `stopped: ${stopReasonInWords(frame.delta.stop_reason)}` : "";
      break;
    case "message_stop":
      run.end = t;
      setMetric("total-browser", ms(t - run.start));
      break;
    case "explainer.done": {
      const tm = frame.timings;
      setMetric("ttft-engine", ms(tm.time_to_first_token_ms));
      setMetric("tps-engine", tm.tokens_per_second == null ? "–" : tm.tokens_per_second.toFixed(0));
      setMetric("total-engine", ms(tm.total_ms));
      const same = out.textContent === cfg.recorded_text;
      const sameEl = $("same");
      // (the projector leaves out the reason: streaming.css hides .more)
      if (same) sameEl.replaceChildren("✓ The same text as the recorded run", node("span", "more", ": same seed, same random numbers, same tokens"), ".");
      else sameEl.textContent = "The text differs from the recorded run.";
      sameEl.className = "st-same " + (same ? "ok" : "bad");
      finish(`Done: ${stopReasonInWords(frame.stop_reason)}; ${frame.usage.output_tokens} output tokens.`);
      break;
    }
    case "error":
      out.classList.add("has-error");
      out.append(document.createTextNode(`\n[${frame.error.type}] ${frame.error.message}`));
      finish(`The stream sent an error: ${frame.error.type}.`);
      break;
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    if (socket && socket.readyState === WebSocket.OPEN) return resolve(socket);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/stream/`);
    ws.addEventListener("open", () => { socket = ws; resolve(ws); });
    ws.addEventListener("error", () => reject(new Error("could not connect")));
    ws.addEventListener("close", () => {
      if (socket === ws) socket = null;
      if (run && !run.end) finish("The connection closed.");
    });
    ws.addEventListener("message", (e) => {
      try { onFrame(JSON.parse(e.data)); } catch (err) { console.error(err); }
    });
  });
}

async function play() {
  const pace = Number($("pace").value);
  run = { start: 0, end: 0, tokenTimes: [], startAt: null, deltaAt: null, bytes: 0, events: 0, deltas: 0 };
  setRunning(true);
  wire.replaceChildren();
  out.replaceChildren();
  out.classList.remove("has-error");
  out.classList.add("streaming");
  $("same").textContent = "";
  $("same").className = "st-same";
  $("stop-words").textContent = "";
  for (const id of ["wire-mode", "text-mode"]) { $(id).textContent = "live"; $(id).className = "badge live"; }
  resetMetrics();
  setStatus("Connecting…");
  try {
    const ws = await connect();
    run.start = now();
    ws.send(JSON.stringify({ ...body, explainer: { seed: cfg.seed, pace_ms: pace } }));
    setStatus("Sent. Waiting for the first event…");
  } catch {
    finish("Could not open the WebSocket to this server.");
  }
}

$("play").addEventListener("click", play);
$("stop").addEventListener("click", () => {
  if (socket) socket.send(JSON.stringify({ type: "cancel" }));
  if (run) run.stopped = true;
  finish("Stopped. A real client stops a stream by closing the connection.");
});

$("pace").addEventListener("input", () => { $("pace-out").textContent = `${$("pace").value} ms per token`; });
$("pace").addEventListener("change", () => setViewOption("pace", Number($("pace").value) === cfg.pace_default ? null : $("pace").value));
$("show-frames").addEventListener("change", () => {
  const all = $("show-frames").checked;
  wire.classList.toggle("api-only", !all);
  setViewOption("frames", all ? null : "api");
});
// The event list is as tall as keeps the whole main visual (controls, text, events) inside the first
// screen; the text beside it (on a phone, above it) has its own cap in the stylesheet.
function fitWire() {
  const mv = $("main-visual").getBoundingClientRect();
  const w = wire.getBoundingClientRect();
  const under = mv.bottom - w.bottom;  // the card's edge (and on a laptop nothing else: the text sits beside)
  const room = window.innerHeight - 6 - (w.top + window.scrollY) - under;
  wire.style.maxHeight = `${Math.max(160, Math.floor(room))}px`;
  // on a projector the list keeps that height even when short: the text beside it fits the same row
  wire.style.height = projector() ? wire.style.maxHeight : "";
}
for (const li of wire.querySelectorAll("li.ev-content_block_delta")) addTail(li, li.querySelector(".data").textContent);
fitWire();
// In a presenter's room the parent page adds html.projector after load, then its stylesheet (24 px text,
// streaming.css): the event list is fitted again once each has come, and when the class goes.
function refit() { wire.style.maxHeight = wire.style.height = ""; fitWire(); wire.scrollTop = 0; }
let wasProjector = projector();
new MutationObserver(() => { if (projector() !== wasProjector) { wasProjector = projector(); refit(); } })
  .observe(document.documentElement, { attributes: true, attributeFilter: ["class"] });
new MutationObserver((changes) => {
  for (const c of changes) for (const n of c.addedNodes) if (n.id === "projector-css") n.addEventListener("load", refit);
}).observe(document.head, { childList: true });
let laidOutAt = innerWidth;
window.addEventListener("resize", () => { if (innerWidth !== laidOutAt) { laidOutAt = innerWidth; wire.style.maxHeight = wire.style.height = ""; fitWire(); } });
document.body.dataset.streamingReady = "1";
