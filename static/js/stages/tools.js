// Tools stage: the mask panel for one step of the tool call (top candidates before and after the mask).
import { encodeScenario, readJSON, setViewOption } from "../stage.js";
import { visibleToken, withJoined } from "../lib/tokens.js";
import { viridis } from "../lib/colors.js";

const data = readJSON("tools-data");
const range = document.getElementById("step-range");
const strip = document.getElementById("step-tokens");
const panel = document.getElementById("mask-panel");

function node(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  return n;
}

const pct = (p) => (p > 0.999 && p < 1 ? "> 99.9" : p > 0 && p < 0.001 ? "< 0.1" : (p * 100).toFixed(1)) + "%";
// whitespace made visible; everything else as the model wrote it (set as text, never as markup)
const show = visibleToken;

function table(title, rows) {
  const box = node("div", "tl-cands");
  box.append(node("h3", "", title));
  const list = node("ol", "tl-bars");
  for (const r of rows) {
    const li = node("li");
    if (r.ok === false) {
      li.classList.add("masked");
      li.title = "forbidden by the schema here";
    }
    const label = node("code", "tl-tok", show(r.t));
    const bar = node("span", "tl-bar");
    const fill = node("span", "tl-fill");
    fill.style.width = `${Math.max(1, r.p * 100)}%`;
    fill.style.background = viridis(0.25 + 0.6 * r.p);
    bar.append(fill);
    li.append(label, bar, node("span", "tl-p", pct(r.p)));
    list.append(li);
  }
  box.append(list);
  return box;
}

function render(i) {
  const s = data.steps[i];
  if (!s) return;
  document.getElementById("step-value").textContent = String(i);
  for (const b of strip.querySelectorAll("button")) b.setAttribute("aria-pressed", b.dataset.step === String(i) ? "true" : "false");
  panel.replaceChildren();
  const head = node("p", "tl-mask-head");
  const chosen = node("code", "tl-tok", show(s.text));
  head.append("Step " + i + " chose ", chosen, ". ");
  if (s.constrained) {
    const allowed = node("strong", "", `${s.n_allowed.toLocaleString("en")} of ${data.vocab.toLocaleString("en")}`);
    allowed.id = "n-allowed";
    allowed.dataset.allowed = String(s.n_allowed);
    const removed = node("strong", "", pct(s.mass_removed));
    removed.id = "mass-removed";
    head.append(s.phase === "name" ? "Choosing the tool’s name: " : "Writing the input JSON: ",
      allowed, " tokens allowed; the mask removed ", removed, " of the probability.");
  } else {
    head.append("Plain text: no mask, all " + data.vocab.toLocaleString("en") + " tokens allowed.");
  }
  panel.append(head);
  const grid = node("div", "tl-cand-grid");
  grid.append(table(s.constrained ? "Before the mask (what the model wanted)" : "The model’s top candidates", s.before));
  if (s.constrained) grid.append(table("After the mask (what was sampled from)", s.after));
  panel.append(grid);
  if (s.constrained) panel.append(node("p", "hint", "Struck-out rows are tokens the schema forbids at this point."));
}

function select(i, push = true) {
  range.value = String(i);
  render(i);
  if (push) setViewOption("step", i === 0 ? null : i);
}

if (data && data.steps.length && range) {
  data.steps.forEach((s, i) => {
    const b = node("button", "tl-chip " + s.phase + (s.part ? " part" : ""), show(s.text));
    b.type = "button";
    b.dataset.step = String(i);
    b.setAttribute("aria-label", `step ${i}: ${show(s.text)}${s.part ? ", part of a character" : ""}`);
    b.addEventListener("click", () => select(i));
    strip.append(withJoined(b, s.joins));  // a byte token's character, once its run is whole
  });
  range.addEventListener("input", () => select(Number(range.value)));
  select(Math.min(data.step, data.steps.length - 1), false);
}
// "Your own tool": the scenario's fields with tools = [the learner's definition], encoded by the server,
// then the page for that scenario with tool=own. Only JSON syntax is checked here; the API's 400 says the rest.
const own = readJSON("own-data");
const form = document.getElementById("own-form");
if (own && form) {
  const status = document.getElementById("own-status");
  const say = (msg, bad) => { status.textContent = msg; status.classList.toggle("bad", !!bad); };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const schemaBox = document.getElementById("own-schema");
    let schema;
    try {
      schema = JSON.parse(schemaBox.value);
    } catch (err) {
      say("input_schema is not valid JSON: " + err.message, true);
      schemaBox.setAttribute("aria-invalid", "true");
      schemaBox.focus();
      return;
    }
    schemaBox.removeAttribute("aria-invalid");
    const tool = { name: document.getElementById("own-name").value.trim(), input_schema: schema };
    const description = document.getElementById("own-description").value;
    if (description) tool.description = description;
    const button = document.getElementById("own-submit");
    button.disabled = true;
    say("Sending…");
    try {
      const blob = await encodeScenario({ ...own.fields, tools: [tool] });
      const q = new URLSearchParams({ s: blob, tool: "own" });
      if (own.choice && own.choice !== "tool") q.set("choice", own.choice);
      location.href = "/learn/tools/?" + q.toString();
    } catch (err) {
      say(err.message, true);
      button.disabled = false;
    }
  });
}
document.body.dataset.toolsReady = "1";
