// The compose stage: edit the request in the form, preview its JSON body live, and on Apply send the
// scenario fields to /scenario/encode and reload the page for that scenario, so the server (the real
// validator, the snippets) has the last word. Text from the form is only ever set with textContent.

import { copyText, encodeScenario, offerEdit, readJSON, setViewOption } from "../stage.js";
import { bodyFigures } from "../lib/figures.js";
import { watchWindow } from "../lib/window-count.js";

const data = readJSON("compose-data");
const form = document.getElementById("compose-form");
const turns = document.getElementById("turns");
const template = document.getElementById("turn-template");
const $ = (id) => document.getElementById(id);

// ---- turns ------------------------------------------------------------------------------------

function renumber() {
  [...turns.children].forEach((li, i) => {
    const n = i + 1;
    li.querySelector(".n").textContent = String(n);
    const role = li.querySelector(".turn-role");
    role.id = `turn-role-${n}`;
    role.setAttribute("aria-label", `Role of turn ${n}`);
    li.querySelector(".turn-label").setAttribute("for", role.id);
    li.querySelector(".turn-text").setAttribute("aria-label", `Text of turn ${n}`);
    li.querySelector(".turn-remove").setAttribute("aria-label", `Remove turn ${n}`);
  });
}

function addTurn(role, text = "") {
  const li = template.content.firstElementChild.cloneNode(true);
  li.querySelector(".turn-role").value = role;
  li.querySelector(".turn-text").value = text;
  turns.append(li);
  renumber();
  return li;
}

$("add-turn").addEventListener("click", () => {
  const last = turns.lastElementChild;
  const role = last && last.querySelector(".turn-role").value === "user" ? "assistant" : "user";
  addTurn(role).querySelector(".turn-text").focus();
  update();
});

turns.addEventListener("click", (e) => {
  const btn = e.target.closest(".turn-remove");
  if (!btn) return;
  const li = btn.closest(".turn");
  const next = li.nextElementSibling || li.previousElementSibling;
  li.remove();
  renumber();
  (next ? next.querySelector(".turn-remove") : $("add-turn")).focus();
  update();
});

// ---- reading the form -------------------------------------------------------------------------

// One stop sequence per line; "\n" and "\t" are escapes, "\\" is a backslash.
function parseStops(text) {
  return text.split("\n").filter((line) => line !== "")
    .map((line) => line.replace(/\\(\\|n|t)/g, (_, c) => (c === "n" ? "\n" : c === "t" ? "\t" : "\\")));
}

const numberOrNull = (raw) => (raw.trim() === "" ? null : Number(raw));

// -> {fields, problem}: problem names the first field the API would refuse (in the validator's order),
// as a key of data.field_errors, or "seed" for the explainer's own knob.
function readFields() {
  const f = structuredClone(data.fields);
  f.system = $("f-system").value;
  f.messages = [...turns.children].map((li) => ({
    role: li.querySelector(".turn-role").value,
    content: li.querySelector(".turn-text").value,
  }));
  f.model = $("f-model").value;
  f.stop_sequences = parseStops($("f-stop").value);
  f.stream = $("f-stream").checked;
  let problem = null;
  const flag = (name) => { if (!problem) problem = name; };

  const maxTokens = numberOrNull($("f-max_tokens").value);
  if (maxTokens === null) flag("max_tokens_missing");
  else if (!Number.isInteger(maxTokens)) flag("max_tokens_int");
  else if (maxTokens < 1) flag("max_tokens_min");
  f.max_tokens = maxTokens;

  const t = numberOrNull($("f-temperature").value);
  f.temperature = t === null ? 1.0 : t; // left empty, the API's default applies
  if (!Number.isFinite(f.temperature) || f.temperature < 0 || f.temperature > 1) flag("temperature");
  f.top_p = numberOrNull($("f-top_p").value);
  if (f.top_p !== null && !(Number.isFinite(f.top_p) && f.top_p > 0 && f.top_p <= 1)) flag("top_p");
  f.top_k = numberOrNull($("f-top_k").value);
  if (f.top_k !== null && !(Number.isInteger(f.top_k) && f.top_k >= 0)) flag("top_k");

  f.seed = numberOrNull($("f-seed").value) ?? 0;
  if (!Number.isInteger(f.seed) || f.seed < 0 || f.seed > 4294967295) flag("seed");
  return { fields: f, problem };
}

// The body Scenario.request_body() would send for these fields (same keys, same order).
function bodyOf(f) {
  const b = { model: f.model };
  if (f.max_tokens !== null) b.max_tokens = f.max_tokens;
  if (f.system) b.system = f.system;
  b.messages = f.messages.map((m) => ({ ...m }));
  if (f.tools && f.tools.length) b.tools = f.tools;
  if (f.stop_sequences.length) b.stop_sequences = [...f.stop_sequences];
  b.temperature = f.temperature;
  if (f.top_p !== null) b.top_p = f.top_p;
  if (f.top_k !== null) b.top_k = f.top_k;
  if (f.stream) b.stream = true;
  return b;
}

// ---- JSON in the server's layout (explainer/lifecycle/snippets.py json_text) ---------------------

const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ud800-\udfff]/g;
const jsonString = (s) => JSON.stringify(s).replace(HIDDEN, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

function jsonText(v, indent = 0) {
  if (typeof v === "string") return jsonString(v);
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  const items = Array.isArray(v)
    ? v.map((x) => jsonText(x, indent + 2))
    : Object.entries(v).map(([k, x]) => `${jsonString(k)}: ${jsonText(x, indent + 2)}`);
  const [open, close] = Array.isArray(v) ? ["[", "]"] : ["{", "}"];
  if (!items.length) return open + close;
  const one = `${open}${items.join(", ")}${close}`;
  if (!one.includes("\n") && indent + one.length <= 88) return one;
  const pad = " ".repeat(indent + 2);
  return `${open}\n${items.map((x) => pad + x).join(",\n")}\n${" ".repeat(indent)}${close}`;
}

// ---- live preview -------------------------------------------------------------------------------

const applied = JSON.stringify([bodyOf(data.fields), data.fields.seed]);
const bodyPre = $("body-json");
const bodyState = $("body-state");
const bodyBytes = $("body-bytes");
const bodyChars = $("body-chars");
const serverBody = bodyPre.textContent;
const serverSize = [bodyChars.textContent, bodyBytes.textContent];
const NF = new Intl.NumberFormat("en-US");

function update() {
  const { fields } = readFields();
  const body = bodyOf(fields);
  const edited = JSON.stringify([body, fields.seed]) !== applied;
  bodyPre.textContent = edited ? jsonText(body) : serverBody;
  // the size of what the SDKs send (compact JSON), counted as the server counts it
  const size = bodyFigures(body);
  [bodyChars.textContent, bodyBytes.textContent] = edited ? [NF.format(size.characters), NF.format(size.bytes)] : serverSize;
  bodyState.textContent = edited ? "edited: press Apply to check it" : "as applied";
  bodyState.classList.toggle("edited", edited);
  document.querySelector(".cp-out").classList.toggle("stale", edited);
  $("stale-note").hidden = !edited;
}

// The prompt against the model's window as it is typed (Apply stays: a refused request is worth seeing too).
const windowCount = watchWindow({ body: () => bodyOf(readFields().fields), out: $("window-count"), send: null });

form.addEventListener("input", (e) => {
  if (e.target.id === "f-temperature-range") $("f-temperature").value = e.target.value;
  if (e.target.id === "f-temperature") $("f-temperature-range").value = e.target.value;
  update();
  windowCount.changed();
});
form.addEventListener("change", () => { update(); windowCount.changed(); });

// ---- apply ----------------------------------------------------------------------------------------

const clientError = $("client-error");
const status = $("apply-status");

function showError(message) {
  clientError.hidden = false;
  clientError.querySelector(".msg").textContent = message;
}

// A field the API would refuse: say so next to the field, with the body the API would send back.
function showFieldError(id, message, body = null) {
  const field = $(id);
  const anchor = field.closest(".cp-row") || field;
  const box = document.createElement("div");
  box.className = "cp-field-error";
  box.id = `${id}-error`;
  box.setAttribute("role", "alert");
  const p = document.createElement("p");
  p.textContent = message;
  box.append(p);
  if (body) {
    const pre = document.createElement("pre");
    pre.className = "json";
    pre.textContent = jsonText(body);
    box.append(pre);
  }
  anchor.after(box);
  field.setAttribute("aria-invalid", "true");
  field.setAttribute("aria-describedby", `${field.getAttribute("aria-describedby") || ""} ${box.id}`.trim());
  field.focus({ preventScroll: true });
  box.scrollIntoView({ block: "center" });
}

function clearErrors() {
  clientError.hidden = true;
  for (const box of document.querySelectorAll(".cp-field-error")) box.remove();
  for (const field of form.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
    const rest = (field.getAttribute("aria-describedby") || "").split(" ").filter((x) => x && !x.endsWith("-error")).join(" ");
    if (rest) field.setAttribute("aria-describedby", rest); else field.removeAttribute("aria-describedby");
  }
}

const FIELD_OF = {
  max_tokens_missing: "f-max_tokens", max_tokens_int: "f-max_tokens", max_tokens_min: "f-max_tokens",
  temperature: "f-temperature", top_p: "f-top_p", top_k: "f-top_k", seed: "f-seed",
};

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearErrors();
  const { fields, problem } = readFields();
  if (problem === "seed") {
    showFieldError("f-seed", "seed must be a whole number from 0 to 4294967295. It is the explainer's own setting, never sent to the API.");
    return;
  }
  if (problem) {
    showFieldError(FIELD_OF[problem], "The API would answer 400 with this body. The explainer keeps only requests whose fields "
      + "are in the API's ranges, so change this one to apply.", data.field_errors[problem]);
    return;
  }
  const button = $("apply");
  button.disabled = true;
  status.textContent = "Checking…";
  try {
    const url = await appliedUrl(fields);
    status.textContent = "Loading…";
    location.href = url;
  } catch (err) {
    status.textContent = "";
    showError(`This request cannot be applied: ${err.message}`);
    button.disabled = false;
  }
});

// The page's address for these fields, once the server's encoder took them (it throws with its sentence).
async function appliedUrl(fields) {
  const blob = await encodeScenario(fields);
  const url = new URL(data.page_url, location.href);
  if (blob) url.searchParams.set("s", blob);
  const snippet = new URL(location.href).searchParams.get("snippet");
  if (snippet) url.searchParams.set("snippet", snippet);
  return url.pathname + url.search;
}

// In a classroom room the form on screen is the request the class runs (stage.js, offerEdit): an edit not
// applied is checked as Apply checks it (a field out of range is shown beside it), and the room opens its page.
offerEdit(async () => {
  const { fields, problem } = readFields();
  if (JSON.stringify([bodyOf(fields), fields.seed]) === applied) return null;
  if (problem) {
    form.requestSubmit();  // says why beside the field, and stays here
    throw new Error(problem === "seed" ? "seed must be a whole number from 0 to 4294967295."
      : data.field_errors[problem]?.error?.message || "a field of the form is out of the API's range.");
  }
  return appliedUrl(fields);
});

// Back from the applied page (bfcache): the button must work again.
window.addEventListener("pageshow", () => { $("apply").disabled = false; status.textContent = ""; });

// ---- code tabs --------------------------------------------------------------------------------------

const tabs = [...document.querySelectorAll('.cp-tabs [role="tab"]')];

function select(tab, focus = false) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (focus) tab.focus();
  const key = tab.dataset.snippet;
  setViewOption("snippet", key === "curl" ? null : key);
}

for (const tab of tabs) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (e) => {
    const i = tabs.indexOf(tab);
    const j = e.key === "ArrowRight" ? (i + 1) % tabs.length : e.key === "ArrowLeft" ? (i - 1 + tabs.length) % tabs.length
      : e.key === "Home" ? 0 : e.key === "End" ? tabs.length - 1 : null;
    if (j === null) return;
    e.preventDefault();
    e.stopPropagation(); // the page's own arrow keys move between stages
    select(tabs[j], true);
  });
}

// The snippets name http://127.0.0.1:8000; in a classroom the server has another address: use the one
// this page came from (only the first occurrence, the client's base URL, never the request's text).
for (const pre of document.querySelectorAll("pre[data-base-url]")) {
  if (location.origin.startsWith("http") && location.origin !== pre.dataset.baseUrl) {
    pre.textContent = pre.textContent.replace(pre.dataset.baseUrl, location.origin);
  }
}

for (const btn of document.querySelectorAll("[data-copy-code]")) {
  btn.addEventListener("click", async () => {
    let ok = false;
    try { ok = await copyText($(`code-${btn.dataset.copyCode}`).textContent); } catch { ok = false; }
    $("code-status").textContent = ok ? "Code copied." : "Select the code and copy it.";
  });
}
