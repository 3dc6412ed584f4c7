// The overview page: send one request over ws/stream/ and show its events as they arrive.
// All text from the server is inserted with textContent, never as HTML.

import { encodeScenario, readJSON, setScenarioBlob } from "./stage.js";
import { stopReasonInWords } from "./lib/text.js";

const $ = (id) => document.getElementById(id);
const form = $("send-form");
const out = $("output");
const events = $("events");
const statusEl = $("status");
const usageEl = $("usage");
const tokensEl = $("prompt-tokens");
const sendBtn = $("send");
const cancelBtn = $("cancel");

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
  }
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
    span.textContent = t.text;
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
  logEvent(frame);
  if (STEP_OF[frame.type]) light(STEP_OF[frame.type]);
  switch (frame.type) {
    case "explainer.hello":
      setStatus("Connected. Ready.");
      break;
    case "explainer.prompt":
      showPromptTokens(frame);
      break;
    case "content_block_delta":
      if (frame.delta.type === "text_delta") out.append(document.createTextNode(frame.delta.text));
      break;
    case "explainer.done":
      showUsage(frame);
      finish(`Done: ${stopReasonInWords(frame.stop_reason)}.`);
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
      try { onFrame(JSON.parse(e.data)); } catch (err) { console.error(err); }
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
  light("compose");
  setStatus("Sending…");
  try {
    const ws = await connect();
    running = true;
    sendBtn.disabled = true;
    cancelBtn.hidden = false;
    light("gateway");
    const b = body();
    ws.send(JSON.stringify(b));
    rememberScenario(b);
  } catch (err) {
    finish("Could not reach the server's WebSocket.");
  }
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
  finish("Stopped.");
});

$("temperature").addEventListener("input", (e) => { $("temperature-value").textContent = e.target.value; });
connect().catch(() => setStatus("Not connected: the page still works once the server is reachable."));
