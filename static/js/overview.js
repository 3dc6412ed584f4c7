// The overview page: send one request over ws/stream/ and show its events as they arrive.
// All text from the server is inserted with textContent, never as HTML.

import { encodeScenario, readJSON, setScenarioBlob } from "./stage.js";
import { stopReasonInWords } from "./lib/text.js";
import { bodyFigures } from "./lib/figures.js";
import { visibleToken } from "./lib/tokens.js";

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
let seen = { tokens: 0, deltas: 0, events: 0 };

// Which pipeline step an incoming frame belongs to.
const STEP_OF = {
  "explainer.prompt": "tokenize",
  "message_start": "transformer",
  "explainer.token": "sampling",
  "content_block_delta": "streaming",
  "message_stop": "streaming",
};

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
  if (r.bottom > innerHeight || r.top < 0) el.scrollIntoView({ block: "nearest", behavior: instant ? "auto" : "smooth" });
}

function note(step, text) {
  const el = document.querySelector(`[data-note="${step}"]`);
  if (el) el.textContent = text;
}

function clearNotes() {
  for (const el of document.querySelectorAll("[data-note]")) el.textContent = "";
  for (const li of document.querySelectorAll("#pipeline li")) { li.classList.remove("done", "active"); li.removeAttribute("aria-current"); }
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
  sendBtn.disabled = false;
  cancelBtn.hidden = true;
  setStatus(text);
}

function onFrame(frame) {
  if (frame.type === "local.compose") {
    light("compose");
    const f = bodyFigures(frame.body);
    note("compose", `${f.bytes.toLocaleString()} bytes of JSON`);
    setStatus("Compose: your prompt and settings become one JSON body.");
    return;
  }
  if (frame.type === "local.gateway") {
    light("gateway");
    note("gateway", "accepted");
    setStatus("Gateway: the request is checked before any model sees it.");
    return;
  }
  logEvent(frame);
  seen.events++;
  if (STEP_OF[frame.type]) light(STEP_OF[frame.type]);
  switch (frame.type) {
    case "explainer.hello":
      if (!running) setStatus("Connected. Ready: press Send.");
      break;
    case "explainer.prompt":
      showPromptTokens(frame);
      note("tokenize", `${frame.input_tokens} tokens`);
      setStatus(`Tokenize: the text becomes ${frame.input_tokens} token ids.`);
      break;
    case "message_start":
      note("transformer", "scoring every next token");
      setStatus("Transformer: the model reads every token at once and scores the next one.");
      break;
    case "explainer.token": {
      seen.tokens++;
      light("sampling");
      const drawn = (frame.candidates || []).find((c) => c.token === frame.token);
      const p = drawn ? ` (p ${drawn.final_probability.toFixed(2)})` : "";
      note("sampling", `token ${seen.tokens}: ${frameToken(frame.text)}${p}`);
      setStatus("Sampling and streaming: one token at a time, each sent as soon as it is drawn.");
      break;
    }
    case "content_block_delta":
      if (frame.delta.type === "text_delta") {
        out.append(document.createTextNode(frame.delta.text));
        seen.deltas++;
        if (seen.deltas === 1) bringIntoView(out);
        note("streaming", `${seen.deltas} text deltas`);
      }
      break;
    case "explainer.done":
      showUsage(frame);
      light("streaming");
      note("streaming", `${seen.deltas} text deltas, ${seen.events} events`);
      finish(`Done: stopped because ${stopReasonInWords(frame.stop_reason)}.`);
      bringIntoView(out);
      break;
    case "error":
      out.classList.add("has-error");
      out.append(document.createTextNode(`\n[${frame.error.type}] ${frame.error.message}`));
      if (running) finish("The request failed; see the error.");
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

function body() {
  const system = $("system").value.trim();
  const b = {
    model: $("model").value,
    max_tokens: Number($("max_tokens").value) || 1,
    temperature: Number($("temperature").value),
    stream: true,
    messages: withPrompt($("prompt").value),
    explainer: { seed: Number($("seed").value) || 0 },
  };
  if (system) b.system = system;
  return b;
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (running) return;
  out.replaceChildren();
  out.classList.remove("has-error");
  usageEl.replaceChildren();
  events.replaceChildren();
  queue.length = 0;
  clearNotes();
  seen = { tokens: 0, deltas: 0, events: 0 };
  instant = !watchBox.checked;
  setStatus("Sending…");
  // On a phone the pipeline and the reply are above the form: bring them into view to be watched.
  const mv = $("main-visual");
  if (mv && mv.getBoundingClientRect().top < 0) mv.scrollIntoView({ block: "start", behavior: instant ? "auto" : "smooth" });
  try {
    const ws = await connect();
    running = true;
    sendBtn.disabled = true;
    cancelBtn.hidden = false;
    const b = body();
    enqueue({ type: "local.compose", body: b });
    enqueue({ type: "local.gateway" });
    ws.send(JSON.stringify(b));
    rememberScenario(b);
  } catch (err) {
    finish("Could not reach the server's WebSocket.");
  }
});

skipBtn.addEventListener("click", skip);
try { watchBox.checked = localStorage.getItem(WATCH_KEY) !== "0"; } catch { /* no storage */ }
watchBox.addEventListener("change", () => {
  try { localStorage.setItem(WATCH_KEY, watchBox.checked ? "1" : "0"); } catch { /* no storage */ }
  if (!watchBox.checked) skip();
});

// The request just sent becomes the page's scenario, so the permalink and the walk-through follow it.
async function rememberScenario(b) {
  const base = readJSON("request-body") || {};
  const fields = {
    system: b.system || "",
    messages: b.messages,
    model: b.model, max_tokens: b.max_tokens, temperature: b.temperature, seed: b.explainer.seed,
  };
  if (base.top_p !== undefined) fields.top_p = base.top_p;
  if (base.top_k !== undefined) fields.top_k = base.top_k;
  if (base.stop_sequences) fields.stop_sequences = base.stop_sequences;
  try {
    setScenarioBlob(await encodeScenario(fields));
  } catch (err) {
    setStatus(`Sent, but this request cannot become a link: ${err.message}`);
  }
}

cancelBtn.addEventListener("click", () => {
  if (socket) socket.send(JSON.stringify({ type: "cancel" }));
  queue.length = 0;
  finish("Stopped.");
});

$("temperature").addEventListener("input", (e) => { $("temperature-value").textContent = e.target.value; });
connect().catch(() => setStatus("Not connected: the page still works once the server is reachable."));
