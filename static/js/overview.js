// The overview page: send one request over ws/stream/ and show its events as they arrive.
// All text from the server is inserted with textContent, never as HTML.

import { encodeScenario, inPresentersRoom, offerEdit, readJSON, runInRoom, setScenarioBlob } from "./stage.js";
import { stopReasonInWords } from "./lib/text.js";
import { reducedMotion, scrollBehavior } from "./lib/motion.js";
import { STATUS, bodyFigures, streamFigures } from "./lib/figures.js";
import { visibleToken } from "./lib/tokens.js";
import { watchWindow } from "./lib/window-count.js";

const $ = (id) => document.getElementById(id);
const form = $("send-form");
const out = $("output");
const events = $("events");
const statusEl = $("status");
const usageEl = $("usage");
const tokensEl = $("prompt-tokens");
const sendBtn = $("send");
const cancelBtn = $("cancel");
const skipBtn = $("skip");
const watchBox = $("watch");
const WATCH_KEY = "explainer.overview.watch";

// The real run takes a fraction of a second. To be watched, its frames are replayed from a queue:
// each stage holds for STAGE_MS as the request reaches it, and the reply streams at TOKEN_MS a token.
// "Skip to the end" (or unticking "watch each stage") plays the rest of the queue at once.
const STAGE_MS = 700;
const TOKEN_MS = 90;
const queue = [];
let playing = false;
let instant = false;
let seen = { tokens: 0, deltas: 0 };
// This run's frames from the server: its figures are counted from them with lib/figures.js, the twin of the
// function every stage counts with, so "40 events" here is the Streaming stage's 40 events. Whether the
// request has passed the checks is known only from the server's first frame: a prompt over the window is
// refused there, before any model runs.
let frames = [];
let checked = false;

// The pipeline's steps are the registry's request steps, in order; each says which frames light it (data-lit-by:
// the engine's event types, and this page's own local.compose and local.gateway). Nothing here names a stage.
const STEPS = [...document.querySelectorAll("#pipeline li")].map((li) => li.dataset.step);
const STEP_OF = Object.fromEntries([...document.querySelectorAll("#pipeline li")].flatMap(
  (li) => (li.dataset.litBy || "").split(" ").filter(Boolean).map((type) => [type, li.dataset.step])));
const CHECKS = STEP_OF["local.gateway"];  // the step whose answer may be a refusal
const AFTER_CHECKS = STEPS.slice(STEPS.indexOf(CHECKS) + 1);  // what a refused request never reaches
const LAST = STEP_OF["explainer.done"];  // where a run that fails midway says it stopped

let socket = null;
let running = false;

function setStatus(text) { statusEl.textContent = text; }

function light(step) {
  for (const li of document.querySelectorAll("#pipeline li")) {
    const order = [...li.parentElement.children];
    const target = order.findIndex((x) => x.dataset.step === step);
    const me = order.indexOf(li);
    li.classList.toggle("done", me < target);
    li.classList.toggle("active", me === target);
    if (me === target) li.setAttribute("aria-current", "step"); else li.removeAttribute("aria-current");
  }
}

// On a phone the reply may start below the screen's edge: scroll just enough to show it.
function bringIntoView(el) {
  const r = el.getBoundingClientRect();
  if (r.bottom > innerHeight || r.top < 0) el.scrollIntoView({ block: "nearest", behavior: scrollBehavior(!instant) });
}

function note(step, text) {
  const el = document.querySelector(`[data-note="${step}"]`);
  if (el) el.textContent = text;
}

// A refused request: the gateway's card says so, and every later stage says it did not run.
function refused(error) {
  light(CHECKS);
  const li = document.querySelector(`#pipeline li[data-step="${CSS.escape(CHECKS)}"]`);
  if (li) li.classList.add("refused");
  note(CHECKS, `refused: ${STATUS[error.type] ?? "error"} ${error.type}`);
  for (const step of AFTER_CHECKS) note(step, "not reached");
  for (const li of document.querySelectorAll("#pipeline li")) {
    if (AFTER_CHECKS.includes(li.dataset.step)) li.classList.add("skipped");
  }
}

function clearNotes() {
  for (const el of document.querySelectorAll("[data-note]")) el.textContent = "";
  for (const li of document.querySelectorAll("#pipeline li")) { li.classList.remove("done", "active", "refused", "skipped"); li.removeAttribute("aria-current"); }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function holdAfter(frame) {
  if (instant) return 0;
  if (frame.type.startsWith("local.") || frame.type === "explainer.prompt" || frame.type === "message_start") return STAGE_MS;
  // the first draw holds like a stage; then each token is split between its draw and its delta
  if (frame.type === "explainer.token") return seen.tokens === 1 ? STAGE_MS : TOKEN_MS / 2;
  if (frame.type === "content_block_delta") return seen.deltas === 1 ? STAGE_MS / 2 : TOKEN_MS / 2;
  return 0;
}

function enqueue(frame) {
  queue.push(frame);
  if (!playing) play();
}

async function play() {
  playing = true;
  skipBtn.hidden = instant;
  while (queue.length) {
    const frame = queue.shift();
    try { onFrame(frame); } catch (err) { console.error(err); }
    const ms = holdAfter(frame);
    if (ms) await sleep(ms);
  }
  playing = false;
  skipBtn.hidden = true;
}

function skip() {
  instant = true;
  skipBtn.hidden = true;
}

function logEvent(frame) {
  const li = document.createElement("li");
  const name = document.createElement("span");
  name.className = "ev-name";
  name.textContent = frame.type;
  const data = document.createElement("code");
  let shown = frame;
  if (frame.type === "explainer.prompt") shown = { ...frame, tokens: `[${frame.tokens.length} tokens]` };
  if (frame.type === "explainer.token") shown = { ...frame, candidates: `[${frame.candidates.length} candidates]` };
  data.textContent = JSON.stringify(shown);
  if (frame.type.startsWith("explainer.")) li.classList.add("explainer");
  if (frame.type === "error") li.classList.add("error");
  li.append(name, " ", data);
  events.append(li);
  while (events.children.length > 400) events.firstChild.remove();
  events.scrollTop = events.scrollHeight;
}

function showUsage(done) {
  usageEl.replaceChildren();
  const rows = [
    ["input_tokens", done.usage.input_tokens],
    ["output_tokens", done.usage.output_tokens],
    ["stop_reason", done.stop_reason],
    ["prefill", `${done.timings.prefill_ms} ms`],
    ["time to first token", `${done.timings.time_to_first_token_ms} ms`],
    ["decode speed", done.timings.tokens_per_second ? `${done.timings.tokens_per_second} tokens/s` : "–"],
  ];
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = String(v);
    dd.dataset.field = k.replaceAll(" ", "_");
    usageEl.append(dt, dd);
  }
}

// A token of a frame as every stage shows it (lib/tokens.js). The frame's text comes from the engine; should
// it hold U+FFFD for a byte of a cut character (an engine that does not write such a byte ‹E4›), the byte is
// not in the frame, so it is shown as ‹?›, never as �.
const frameToken = (text) => visibleToken(text ?? "").replace(/\uFFFD/g, "‹?›");

function showPromptTokens(frame) {
  tokensEl.replaceChildren();
  const head = document.createElement("p");
  head.className = "hint";
  head.textContent = `The model reads ${frame.input_tokens} tokens (of a ${frame.context_window}-token window):`;
  tokensEl.append(head);
  frame.tokens.forEach((t, i) => {
    const span = document.createElement("span");
    span.className = "tok" + (t.text.startsWith("<|") ? " special" : "");
    span.style.setProperty("--hue", String((i * 47) % 360));
    span.textContent = frameToken(t.text);
    span.title = `id ${t.id}`;
    tokensEl.append(span);
  });
}

function finish(text) {
  running = false;
  sendBtn.dataset.running = "";
  sendBtn.disabled = windowCount.isOver();
  cancelBtn.hidden = true;
  setStatus(text);
}

function onFrame(frame) {
  const step = STEP_OF[frame.type];
  if (frame.type === "local.compose") {
    light(step);
    const f = bodyFigures(frame.body);
    note(step, `${f.bytes.toLocaleString()} bytes of JSON`);
    setStatus("Compose: your prompt and settings become one JSON body.");
    return;
  }
  if (frame.type === "local.gateway") {
    if (frame.error) {
      refused(frame.error);
      setStatus(`Gateway: refused with ${STATUS[frame.error.type] ?? "an error"} ${frame.error.type}. No model ran: nothing was generated, streamed or billed.`);
      return;
    }
    light(step);
    note(step, "passed");
    setStatus("Gateway: the request passed the checks, and goes on to the model.");
    return;
  }
  logEvent(frame);
  frames.push(frame);
  if (step) light(step);
  switch (frame.type) {
    case "explainer.hello":
      if (!running) setStatus("Connected. Ready: press Send.");
      break;
    case "explainer.prompt":
      showPromptTokens(frame);
      note(step, `${frame.input_tokens} tokens`);
      setStatus(`Tokenize: the text becomes ${frame.input_tokens} token ids.`);
      break;
    case "message_start":
      note(step, "scoring every next token");
      setStatus("Transformer: the model reads every token at once and scores the next one.");
      break;
    case "explainer.token": {
      seen.tokens++;
      const drawn = (frame.candidates || []).find((c) => c.token === frame.token);
      const p = drawn ? ` (p ${drawn.final_probability.toFixed(2)})` : "";
      note(step, `token ${seen.tokens}: ${frameToken(frame.text)}${p}`);
      setStatus("Sampling and streaming: one token at a time, each sent as soon as it is drawn.");
      break;
    }
    case "content_block_delta":
      if (frame.delta.type === "text_delta") {
        out.append(document.createTextNode(frame.delta.text));
        seen.deltas++;
        if (seen.deltas === 1) bringIntoView(out);
        note(step, `${seen.deltas} deltas`);
      }
      break;
    case "explainer.done": {
      showUsage(frame);
      const f = streamFigures(frames);
      note(step, `${f.events} events, ${f.deltas} deltas`);
      finish(`Done: stopped because ${stopReasonInWords(frame.stop_reason)}.`);
      bringIntoView(out);
      break;
    }
    case "error":
      out.classList.add("has-error");
      out.append(document.createTextNode(`\n[${frame.error.type}] ${frame.error.message}`));
      if (frames.some((f) => f.type === "explainer.prompt")) {  // it failed while running: say where it stopped
        const f = streamFigures(frames);
        note(LAST, `stopped by ${frame.error.type} after ${f.events} events`);
        if (running) finish("The request failed while it ran; see the error.");
      } else if (running) {
        finish(`Refused with ${STATUS[frame.error.type] ?? "an error"} ${frame.error.type}: no model ran, nothing was generated or billed.`);
      }
      break;
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    if (socket && socket.readyState === WebSocket.OPEN) return resolve(socket);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/stream/`);
    socket.addEventListener("open", () => resolve(socket));
    socket.addEventListener("error", () => reject(new Error("could not connect")));
    socket.addEventListener("close", () => { if (running) finish("Connection closed."); socket = null; });
    socket.addEventListener("message", (e) => {
      let frame;
      try { frame = JSON.parse(e.data); } catch (err) { console.error(err); return; }
      if (frame.type === "explainer.hello" && !running) { onFrame(frame); return; }
      if (running && !checked && frame.type !== "explainer.hello") {
        // the server's first frame for this request: it passed the checks, or this is the refusal
        checked = true;
        enqueue({ type: "local.gateway", error: frame.type === "error" ? frame.error : null });
      }
      enqueue(frame);
    });
  });
}

// The scenario's history with its last user turn replaced by what is in the prompt box.
function withPrompt(text) {
  const history = (readJSON("request-body") || {}).messages || [];
  const i = history.map((m) => m.role).lastIndexOf("user");
  if (i < 0) return [{ role: "user", content: text }];
  return history.map((m, k) => (k === i ? { role: "user", content: text } : m));
}

// The scenario's request (its tools, top_p, top_k and stop sequences too) with what the form edits: the run,
// and its size, are the ones the stages show for the same scenario.
function body() {
  const system = $("system").value.trim();
  const b = {
    ...(readJSON("request-body") || {}),
    model: $("model").value,
    max_tokens: Number($("max_tokens").value) || 1,
    temperature: Number($("temperature").value),
    messages: withPrompt($("prompt").value),
  };
  if (system) b.system = system; else delete b.system;
  b.explainer = { seed: Number($("seed").value) || 0 };  // the app's own field: not counted as part of the request
  return b;
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (!windowCount.isOver()) send();  // over the window Send is disabled, and the line under it says why
});
// Over the window, the request can still be sent on purpose: the gateway refuses it with the API's 400.
$("send-anyway").addEventListener("click", () => send());

async function send() {
  if (running) return;
  if (inPresentersRoom()) {  // in a classroom room the class runs it, at the room's pace, beside this stage
    runInRoom();
    setStatus("Sent to the room: every phone and the live run beside this stage show it.");
    return;
  }
  out.replaceChildren();
  out.classList.remove("has-error");
  usageEl.replaceChildren();
  events.replaceChildren();
  queue.length = 0;
  clearNotes();
  seen = { tokens: 0, deltas: 0 };
  frames = [];
  checked = false;
  instant = !watchBox.checked;
  setStatus("Sending…");
  // On a phone the pipeline and the reply are above the form: bring them into view to be watched.
  const mv = $("main-visual");
  if (mv && mv.getBoundingClientRect().top < 0) mv.scrollIntoView({ block: "start", behavior: scrollBehavior(!instant) });
  try {
    const ws = await connect();
    running = true;
    sendBtn.dataset.running = "1";
    sendBtn.disabled = true;
    cancelBtn.hidden = false;
    const b = body();
    enqueue({ type: "local.compose", body: b });
    ws.send(JSON.stringify(b));
    rememberScenario(b);
  } catch (err) {
    finish("Could not reach the server's WebSocket.");
  }
}

skipBtn.addEventListener("click", skip);
// Watching each stage is the reader's choice, kept; before they make one, a reader who asked for less motion
// gets the journey at once (the highlight does not travel from step to step), and can tick the box for it.
watchBox.checked = !reducedMotion();
try { const kept = localStorage.getItem(WATCH_KEY); if (kept !== null) watchBox.checked = kept !== "0"; } catch { /* no storage */ }
watchBox.addEventListener("change", () => {
  try { localStorage.setItem(WATCH_KEY, watchBox.checked ? "1" : "0"); } catch { /* no storage */ }
  if (!watchBox.checked) skip();
});

// The request just sent becomes the page's scenario, so the permalink and the walk-through follow it.
async function rememberScenario(b, { strict = false } = {}) {
  const base = readJSON("request-body") || {};
  const fields = {
    system: b.system || "",
    messages: b.messages,
    model: b.model, max_tokens: b.max_tokens, temperature: b.temperature, seed: b.explainer.seed,
  };
  if (base.top_p !== undefined) fields.top_p = base.top_p;
  if (base.top_k !== undefined) fields.top_k = base.top_k;
  if (base.stop_sequences) fields.stop_sequences = base.stop_sequences;
  if (base.tools) fields.tools = base.tools;
  if (!base.stream) fields.stream = false;
  try {
    setScenarioBlob(await encodeScenario(fields));
    shown = JSON.stringify(b);
  } catch (err) {
    if (strict) throw err;
    setStatus(`Sent, but this request cannot become a link: ${err.message}`);
  }
}

// In a classroom room the request on screen is the one the class gets (stage.js, offerEdit): a prompt or a
// setting changed here and not sent becomes the page's scenario before the room runs it.
let shown = JSON.stringify(body());  // the page's scenario, as the form shows it
offerEdit(async () => {
  const b = body();
  if (JSON.stringify(b) === shown) return null;
  await rememberScenario(b, { strict: true });
  return location.pathname + location.search;
});

cancelBtn.addEventListener("click", () => {
  if (socket) socket.send(JSON.stringify({ type: "cancel" }));
  queue.length = 0;
  finish("Stopped.");
});

$("temperature").addEventListener("input", (e) => { $("temperature-value").textContent = e.target.value; });

// The prompt against the window as it is typed: over it, Send waits (the server would refuse it anyway).
const windowCount = watchWindow({ body, out: $("window-count"), send: sendBtn,
  onOver: (over) => {
    $("send-anyway").hidden = !over;
    const tooLong = "Too long for the window: shorten it, or send it anyway to watch the gateway refuse it.";
    if (running) return;
    if (over) setStatus(tooLong);
    else if (statusEl.textContent === tooLong) setStatus("Ready: press Send.");
  } });
for (const id of ["prompt", "system", "model"]) $(id)?.addEventListener("input", windowCount.changed);
$("model")?.addEventListener("change", windowCount.changed);
connect().catch(() => setStatus("Not connected: the page still works once the server is reachable."));
