// Sampling stage: the real next-token distribution of one step, reshaped live by temperature,
// top-k and top-p (computed here by lib/sampling.js, a port of the engine's sampler), a seeded
// draw, and a step-through of the autoregressive loop. Text from the server is set with
// textContent only.
import { dataUrl, readJSON, setViewOption } from "../stage.js";
import { visibleToken, withJoined } from "../lib/tokens.js";
import { distribution, draw, entropyBits, expandCompact, mulberry32, orderOf } from "../lib/sampling.js";
import { node } from "../lib/dom.js";

const cfg = readJSON("sampling-config");
const $ = (id) => document.getElementById(id);
const MOST_ROWS = 12, FEWEST_ROWS = 4, MANY_ROWS = 50, MAX_LOG = 40, MAX_SEGMENTS = 60;
const mainVisual = $("main-visual");
const moreRows = $("more-rows");  // moved into the table's last row at each redraw, so held here
let fewRows = MOST_ROWS;  // as many as keep the main visual inside the first screen: see fitRows()
// In a presenter's room the parent page adds html.projector after load: 24 px text (sampling.css), so
// fewer rows fit the frame, the strip labels fewer segments, and the cut note is shorter.
const projector = () => document.documentElement.classList.contains("projector");
const PROJ_FEWEST_ROWS = 2;

const req = {
  temperature: cfg.request.temperature,
  top_k: cfg.request.top_k || 0,
  top_p: cfg.request.top_p == null ? 1 : cfg.request.top_p,
};
const knobs = { ...cfg.explore };
let data = null;         // the current step: logits, banned ids, the engine's draw
// What the distribution is computed over. A whole vocabulary: index = token id, every logit, the banned ids.
// A compact step (a large vocabulary, see pages/sampling.py): index = rank, the tail's tokens at their run's score.
let scores = null;
let banned = [];
let order = null;        // indexes, most likely first (depends on the logits only)
let idOf = (t) => t;     // an index's token id (-1: a tail token the page was not sent)
let stepLabels = null;   // compact: index -> the token's text
let engineAt = null;     // the index of the engine's own token
let dist = null;
let rowsShown = MOST_ROWS;
let draws = null;        // {rng, log: [{u, token}], counts: Map}
let loading = 0;

// A token's text with its whitespace made visible: the one way the app shows a token (the server too).
const visible = visibleToken;
const labelOf = (t) => {
  if (stepLabels) return stepLabels.has(t) ? visible(stepLabels.get(t)) : `(rank ${(t + 1).toLocaleString("en")})`;
  return t < cfg.labels.length ? visible(cfg.labels[t]) : `#${t}`;
};
// percentages: fixed digits, but tiny probabilities keep two significant digits instead of showing 0.00%
const pct = (p, digits = 2) => (p > 0 && p * 100 < 10 ** -digits ? `${(p * 100).toPrecision(2)}%` : `${(p * 100).toFixed(digits)}%`);
const fmtNum = (v) => (Number.isFinite(v) ? v.toFixed(2) : "−∞");
const describe = (k) => `temperature ${k.temperature} · top_k ${k.top_k ? k.top_k : "off"} · top_p ${k.top_p < 1 ? k.top_p : "off"}`;
const sameAsRequest = () => knobs.temperature === req.temperature && knobs.top_k === req.top_k && knobs.top_p === req.top_p;

function loadStep(stepData) {
  data = stepData;
  if (data.compact) {
    const c = expandCompact(data.compact);
    scores = c.logits;
    banned = [];  // the server left them out
    order = Array.from({ length: scores.length }, (_, i) => i);  // laid out in rank order
    idOf = (t) => c.ids[t];
    stepLabels = c.labels;
    engineAt = c.engine;
  } else {
    scores = data.logits;
    banned = data.banned;
    const masked = Float64Array.from(scores);
    for (const b of banned) masked[b] = -Infinity;
    order = orderOf(masked);
    idOf = (t) => t;
    stepLabels = null;
    engineAt = data.engine.token;
  }
  renderWordBan();
  resetDraws();
}

// Where the engine's u lands with the sliders' settings. A compact step's tail tokens share their run's
// score, so at the request's own settings the page takes the engine's word for it: its token.
const landing = () => (data.compact && sameAsRequest() ? engineAt : draw(dist, data.engine.u));

// Tokens the engine's word ban removed at this step (the server names the word masked).
function renderWordBan() {
  const box = $("word-ban"), list = $("word-ban-list");
  if (!box || !list) return;
  const removed = data.banned_words || [];
  box.hidden = removed.length === 0;
  list.replaceChildren();
  removed.forEach((b, j) => {
    if (j) list.append("; ");
    list.append(node("span", { className: "tok" }, b.label),
      ` would have completed “${b.word}” (probability ${b.probability.toFixed(4)} before the ban)`);
  });
}

// ---- the loop: text so far and the engine's draw -------------------------------------------

function stepUrl(n) {
  const u = new URL(location.href);
  if (n) u.searchParams.set("step", String(n)); else u.searchParams.delete("step");
  return u.pathname + u.search;
}

function renderLoop() {
  const i = data.step, n = cfg.n_steps;
  $("step-label").textContent = `step ${i + 1} of ${n}`;
  for (const [id, target] of [["step-prev", i - 1], ["step-next", i + 1]]) {
    const a = $(id);
    a.dataset.step = String(target);
    if (target >= 0 && target < n) { a.href = stepUrl(target); a.removeAttribute("aria-disabled"); }
    else { a.removeAttribute("href"); a.setAttribute("aria-disabled", "true"); }
  }
  const box = $("so-far");
  box.replaceChildren();
  if (cfg.prompt_more) box.append(node("span", { className: "sm-more" }, `… ${cfg.prompt_more} earlier prompt tokens`));
  // a token that holds part of a character shows its bytes (‹E4›); the run's character follows it once
  const part = (t) => (t.part ? " part" : "");
  for (const t of cfg.prompt_tail) {
    box.append(withJoined(node("span", { className: "tok prompt" + (t.special ? " special" : "") + part(t) }, visible(t.text)), t.joins));
  }
  cfg.steps.slice(0, i + 1).forEach((s, j) => {
    const a = node("a", { className: "tok gen" + (j === i ? " current" : "") + part(s), href: stepUrl(j), "data-step": j }, visible(s.label));
    if (j === i) a.setAttribute("aria-current", "step");
    if (s.p != null) a.title = `step ${j + 1}: drawn with probability ${s.p.toFixed(4)}`;
    box.append(withJoined(a, s.joins));
  });
  const e = data.engine;
  const drew = $("engine-drew");
  drew.replaceChildren(
    "The engine drew ", node("span", { className: "tok current" }, visible(e.label)),
    ` (id ${e.token}, rank ${e.rank + 1}) with probability `, node("strong", {}, e.final_probability.toFixed(4)),
    ", using ", node("var", {}, "u"), ` = ${e.u.toFixed(4)} and the request's settings.`,
  );
}

async function goToStep(n) {
  if (!(n >= 0 && n < cfg.n_steps) || n === data.step) return;
  const url = stepUrl(n);
  const ticket = ++loading;
  document.body.classList.add("sm-loading");
  try {
    // the step's data as JSON (/learn/sampling/data, the same the page embeds), not the whole page
    const r = await fetch(dataUrl(url), { headers: { accept: "application/json" } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const next = (await r.json()).data["sampling-step"];
    if (!next) throw new Error("no step");
    if (ticket !== loading) return;  // a later click won
    loadStep(next);
    setViewOption("step", n || null);
    renderLoop();
    render();
    fitRows();  // this step's word-ban note, if any, takes room
  } catch {
    location.href = url;  // the page works without the fetch, just with a reload
  } finally {
    if (ticket === loading) document.body.classList.remove("sm-loading");
  }
}

document.querySelector("main").addEventListener("click", (e) => {
  const a = e.target.closest(".sm-stepper a[data-step], #so-far a[data-step]");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  goToStep(Number(a.dataset.step));
});

// ---- knobs ----------------------------------------------------------------------------------

const sliders = { t: $("knob-t"), k: $("knob-k"), p: $("knob-p") };

function placeMark(input, mark, value) {
  const min = Number(input.min), max = Number(input.max);
  const f = Math.min(1, Math.max(0, (value - min) / (max - min)));
  // the thumb's centre travels from 8px to (width - 8px)
  mark.style.left = `calc(${f} * (100% - 16px) + 8px)`;
  mark.classList.toggle("edge-left", f < 0.2);
  mark.classList.toggle("edge-right", f > 0.8);
}

function syncKnobs() {
  $("out-t").textContent = String(knobs.temperature);
  $("out-k").textContent = knobs.top_k ? String(knobs.top_k) : "off";
  $("out-p").textContent = knobs.top_p < 1 ? String(knobs.top_p) : "off";
  $("t-warning").hidden = !(knobs.temperature > cfg.ranges.t_api_max);
  const same = sameAsRequest();
  $("knobs").dataset.state = same ? "request" : "explore";
  $("reset-knobs").hidden = same;
  $("mode-text").textContent = same
    ? `${describe(req)}, as sent.`
    : `${describe(knobs)}. The request sent ${describe(req)}; these sliders do not change it.`;
}

function setSliders() {
  sliders.t.value = String(knobs.temperature);
  sliders.k.value = String(knobs.top_k);
  sliders.p.value = String(knobs.top_p);
}

function saveKnobs() {
  setViewOption("t", knobs.temperature === req.temperature ? null : knobs.temperature);
  setViewOption("k", knobs.top_k === req.top_k ? null : knobs.top_k);
  setViewOption("p", knobs.top_p === req.top_p ? null : knobs.top_p);
}

for (const [key, input] of Object.entries(sliders)) {
  input.addEventListener("input", () => {
    const v = Number(input.value);
    if (key === "t") knobs.temperature = v; else if (key === "k") knobs.top_k = v; else knobs.top_p = v;
    resetDraws();
    render();
  });
  input.addEventListener("change", saveKnobs);  // the URL follows once the slider is let go
}

$("reset-knobs").addEventListener("click", () => {
  Object.assign(knobs, req);
  setSliders();
  resetDraws();
  saveKnobs();
  render();
  sliders.t.focus();
});

// ---- the distribution -----------------------------------------------------------------------

function params() {
  return { temperature: knobs.temperature, top_k: knobs.top_k || null, top_p: knobs.top_p < 1 ? knobs.top_p : null };
}

const plural = (n, one, many) => `${n.toLocaleString("en")} ${n === 1 ? one : many}`;

function cutNote() {
  if (projector()) return shortCutNote();
  if (knobs.temperature === 0) return "temperature 0 is greedy: only the top token is left. Everything below is cut.";
  const afterK = dist.available - dist.cutByK;
  if (dist.cutByP > 0) {
    let inK = 0, inP = 0;
    order.slice(0, afterK).forEach((t, i) => { inK += dist.probs[t]; if (i < dist.kept) inP += dist.probs[t]; });
    const share = pct(inP / inK, 1);
    const first = dist.kept === 1 ? "the top token alone holds" : `the top ${dist.kept} tokens hold`;
    return dist.cutByK > 0
      ? `top_p ${knobs.top_p}: of the ${afterK} tokens top_k kept, ${first} ${share} of their probability, enough to reach ${knobs.top_p}. Everything below is cut.`
      : `top_p ${knobs.top_p}: ${first} ${share} of the probability, enough to reach ${knobs.top_p}. Everything below is cut.`;
  }
  if (dist.cutByK > 0) return `top_k ${knobs.top_k}: only the ${plural(afterK, "most likely token is", "most likely tokens are")} kept. Everything below is cut.`;
  return "";
}

// One line on a projector: the knob that cut, and how much the kept tokens held.
function shortCutNote() {
  if (knobs.temperature === 0) return "temperature 0: only the top token is left.";
  if (dist.cutByP > 0) {
    let inK = 0, inP = 0;
    order.slice(0, dist.available - dist.cutByK).forEach((t, i) => { inK += dist.probs[t]; if (i < dist.kept) inP += dist.probs[t]; });
    return `top_p ${knobs.top_p}: ${dist.kept === 1 ? "the top token holds" : `these ${dist.kept} hold`} ${pct(inP / inK, 1)}; the rest is cut.`;
  }
  if (dist.cutByK > 0) return `top_k ${knobs.top_k}: the rest is cut.`;
  return "";
}

function renderStats() {
  const set = (k, v) => { document.querySelector(`[data-stat=${k}]`).textContent = v; };
  set("kept", `${dist.kept.toLocaleString("en")} of ${dist.available.toLocaleString("en")}`);
  set("cut", `${dist.cutByK.toLocaleString("en")} / ${dist.cutByP.toLocaleString("en")}`);
  const h = entropyBits(dist.final);
  set("entropy", `${h.toFixed(2)} bits`);
  set("plausible", (2 ** h).toFixed(1));
}

function barCell(t, scale) {
  const td = node("td", { className: "bar-col" });
  const kept = dist.final[t] > 0;
  const bar = node("span", { className: kept ? "bar" : "bar was" });
  bar.style.width = `${((kept ? dist.final[t] : dist.probs[t]) / scale) * 100}%`;
  const track = node("div", { className: "track" });
  track.append(bar);
  const val = node("span", { className: "val" }, kept ? pct(dist.final[t]) : "cut");
  if (!kept || Math.abs(dist.final[t] - dist.probs[t]) > 5e-5) val.append(node("small", {}, ` (was ${pct(dist.probs[t])})`));
  const row = node("div", { className: "bar-wrap" });
  row.append(track, val);
  td.append(row);
  return td;
}

function renderTable() {
  const body = $("dist-rows");
  body.replaceChildren();
  const shown = order.slice(0, rowsShown);
  const scale = Math.max(1e-12, ...shown.map((t) => Math.max(dist.probs[t], dist.final[t])));
  const total = draws.log.length;
  let cum = 0;
  shown.forEach((t, i) => {
    cum += dist.final[t];
    const tr = node("tr", { "data-token": idOf(t) });
    if (!(dist.final[t] > 0)) tr.classList.add("cut");
    if (t === engineAt) tr.classList.add("engine");
    if (draws.log.length && draws.log[draws.log.length - 1].token === t) tr.classList.add("last-draw");
    const tokCell = node("td");
    tokCell.append(node("span", { className: "tok", title: `id ${idOf(t)}` }, labelOf(t)));
    if (t === engineAt) tokCell.append(node("span", { className: "tag" }, "engine's pick"));
    const n = draws.counts.get(t) || 0;
    tr.append(
      node("td", { className: "rank" }, String(i + 1)), tokCell,
      node("td", { className: "num" }, fmtNum(dist.logits[t])),
      node("td", { className: "num" }, knobs.temperature === 0 ? "–" : fmtNum(dist.scaled[t])),
      barCell(t, scale),
      node("td", { className: "num" }, dist.final[t] > 0 ? Math.min(cum, 1).toFixed(3) : "–"),
      node("td", { className: "num", title: total ? `${n} of ${total} draws` : null }, total ? `${n}` : ""),
    );
    body.append(tr);
    if (i === dist.kept - 1 && i < shown.length - 1) {
      const cut = node("tr", { className: "cut-line" });
      cut.append(node("td", { colspan: 7 }, cutNote()));
      body.append(cut);
    }
  });
  const rest = order.length - shown.length;
  if (rest > 0) {
    let before = 0, after = 0, kept = 0;
    for (const t of order.slice(shown.length)) { before += dist.probs[t]; after += dist.final[t]; if (dist.final[t] > 0) kept++; }
    const tr = node("tr", { className: "rest" });
    const td = node("td", { colspan: 7 });
    td.textContent = projector()
      ? `… ${rest.toLocaleString("en")} more: ${kept ? `${pct(after)} between them` : `${pct(before)}, all cut`}.`
      : `… ${rest.toLocaleString("en")} more tokens: ${pct(before)} before the cut; `
        + (kept ? `${kept.toLocaleString("en")} of them kept, ${pct(after)} after.` : "all of them cut.");
    td.append(" ", moreRows);  // the button that shows more rows sits on the line that counts them
    tr.append(td);
    body.append(tr);
  } else $("dist-key").append(moreRows);
  moreRows.hidden = false;
  moreRows.textContent = rowsShown === MANY_ROWS ? `Show ${fewRows} rows` : `Show ${MANY_ROWS} rows`;
}

moreRows.addEventListener("click", () => {
  rowsShown = rowsShown === MANY_ROWS ? fewRows : MANY_ROWS;
  renderTable();
  moreRows.focus();  // it moved with the redraw
});

// The table shows as many rows as keep the knobs, the bars and the strip together inside the first
// screen (fewer on a phone), and the button above it offers 50.
function fitRows() {
  if (rowsShown === MANY_ROWS) return;
  fewRows = MOST_ROWS;
  rowsShown = fewRows;
  renderTable();
  const fewest = projector() ? PROJ_FEWEST_ROWS : FEWEST_ROWS;
  while (fewRows > fewest && mainVisual.getBoundingClientRect().bottom + window.scrollY > window.innerHeight - 4) {
    fewRows--;
    rowsShown = fewRows;
    renderTable();
  }
}

// ---- the draw -------------------------------------------------------------------------------

function resetDraws() {
  // The same link (scenario seed, step, knobs) and the same clicks give the same draws.
  const seed = (Math.imul(cfg.seed >>> 0, 2654435761) ^ Math.imul((data ? data.step : 0) + 1, 0x9E3779B9)) >>> 0;
  draws = { rng: mulberry32(seed), log: [], counts: new Map() };
  if ($("draw-log")) { $("draw-log").replaceChildren(); $("draw-status").textContent = ""; }
}

function renderStrip() {
  const strip = $("strip");
  const width = strip.clientWidth || 600;
  const charW = projector() ? 15 : 8;  // one character of a segment's label (24 px on a projector)
  strip.replaceChildren();
  const landed = landing();  // where the engine's u falls with these settings
  let landedInRest = false;
  let segs = 0, rest = 0, restStart = null, x = 0;
  for (const t of order) {
    const p = dist.final[t];
    if (!(p > 0)) continue;
    if (segs < MAX_SEGMENTS && p >= 0.004) {
      const s = node("span", { className: "seg" + (segs % 2 ? " odd" : "") + (t === engineAt ? " engine" : "") + (t === landed ? " lands" : ""), title: `${labelOf(t)}: ${pct(p)}` });
      s.style.width = `${p * 100}%`;
      const label = labelOf(t);
      if (p * width >= [...label].length * charW + 8) s.textContent = label;  // only where the label fits
      strip.append(s);
      segs++;
    } else {
      if (restStart === null) restStart = x;
      rest += p;
      if (t === landed) landedInRest = true;
    }
    x += p;
  }
  if (rest > 0) {
    const s = node("span", { className: "seg rest" + (landedInRest ? " lands" : ""), title: `${dist.kept - segs} less likely tokens: ${pct(rest)}` });
    s.style.width = `${rest * 100}%`;
    strip.append(s);
  }
  const marks = $("strip-marks");
  marks.replaceChildren();
  const mark = (u, cls, text) => {
    const m = node("span", { className: `sm-u ${cls}` }, text);
    m.style.left = `${u * 100}%`;
    m.classList.toggle("edge-left", u < 0.15);
    m.classList.toggle("edge-right", u > 0.85);
    marks.append(m);
  };
  mark(data.engine.u, "engine", `▼ engine's u ${data.engine.u.toFixed(3)} → ${labelOf(landed)}`);
  const last = draws.log[draws.log.length - 1];
  if (last) mark(last.u, "mine", `▲ your u ${last.u.toFixed(3)}`);
}

function renderReplay() {
  const e = data.engine;
  const t = landing();
  const out = $("replay");
  out.replaceChildren();
  if (t === engineAt) {
    out.append(`With ${sameAsRequest() ? "the request's settings" : "these settings"}, the engine's `, node("var", {}, "u"),
      ` = ${e.u.toFixed(4)} lands on `, node("span", { className: "tok current" }, labelOf(t)),
      ", the token the engine drew.");
  } else {
    out.append("With these settings the same ", node("var", {}, "u"), ` = ${e.u.toFixed(4)} would land on `,
      node("span", { className: "tok explore" }, labelOf(t)), " instead of ",
      node("span", { className: "tok current" }, visible(e.label)),
      ": one knob changed, and the reply would go a different way from here.");
  }
}

function doDraws(n) {
  for (let i = 0; i < n; i++) {
    const u = draws.rng();
    const token = draw(dist, u);
    draws.log.push({ u, token });
    draws.counts.set(token, (draws.counts.get(token) || 0) + 1);
  }
  const log = $("draw-log");
  log.replaceChildren();
  for (const d of draws.log.slice(-MAX_LOG).reverse()) {
    const li = node("li", { title: `u = ${d.u.toFixed(4)}` });
    li.append(node("span", { className: "tok" + (d.token === engineAt ? " current" : "") }, labelOf(d.token)));
    log.append(li);
  }
  const last = draws.log[draws.log.length - 1];
  const total = draws.log.length;
  const k = draws.counts.get(last.token);
  $("draw-status").textContent = `${total} draw${total > 1 ? "s" : ""}. Last: ${labelOf(last.token)} (u = ${last.u.toFixed(4)}). `
    + `${labelOf(last.token)} came up ${k} time${k > 1 ? "s" : ""} (${pct(k / total, 1)}); its probability is ${pct(dist.final[last.token], 1)}.`;
  renderTable();
  renderStrip();
}

$("draw-1").addEventListener("click", () => doDraws(1));
$("draw-100").addEventListener("click", () => doDraws(100));
$("draw-reset").addEventListener("click", () => { resetDraws(); renderTable(); renderStrip(); });

// ---- all together ---------------------------------------------------------------------------

function render() {
  dist = distribution(scores, params(), banned, order);
  const mode = $("knobs").dataset.state;
  syncKnobs();
  renderStats();
  renderTable();
  renderStrip();
  renderReplay();
  // on a projector, the "Exploring" line comes and goes with the knobs: the rows follow
  if (projector() && $("knobs").dataset.state !== mode) fitRows();
}

loadStep(readJSON("sampling-step"));
for (const [input, mark, value] of [[sliders.t, $("mark-t"), req.temperature], [sliders.k, $("mark-k"), req.top_k], [sliders.p, $("mark-p"), req.top_p]]) {
  placeMark(input, mark, value);
}
renderLoop();
render();
fitRows();
let resizing = 0;
let laidOutAt = innerWidth;
window.addEventListener("resize", () => {
  cancelAnimationFrame(resizing);
  resizing = requestAnimationFrame(() => {
    renderStrip();
    if (innerWidth !== laidOutAt) { laidOutAt = innerWidth; fitRows(); }  // not when only a phone's toolbar moved
  });
});
// presenter.js adds the class, then its stylesheet: fit again once each has come (and when the class goes)
function watchProjector(redraw) {
  let was = projector();
  new MutationObserver(() => { if (projector() !== was) { was = projector(); redraw(); } })
    .observe(document.documentElement, { attributes: true, attributeFilter: ["class"] });
  new MutationObserver((changes) => {
    for (const c of changes) for (const n of c.addedNodes) if (n.id === "projector-css") n.addEventListener("load", redraw);
  }).observe(document.head, { childList: true });
}
watchProjector(() => {
  if (projector() && rowsShown === MANY_ROWS) rowsShown = fewRows;
  render();
  fitRows();
});
document.body.dataset.samplingReady = "1";
