// The Serving timeline: a batch scheduler's record drawn as one row per request against time.
//
// drawTimeline(element, record, options) draws into `element` (replacing what it held) and returns the <svg>.
// `record` is the scheduler's record (explainer/llm/batching.py, Scheduler.record) plus two keys of the caller's:
//   {steps: [{index, start, end, rows: [request ids], kv_bytes}],
//    requests: [{id, label, prompt_tokens, kv_reserved, queued, admitted, first_step, left, tokens, reason}],
//    highlight: a request id or a list of them (drawn in the accent colour),
//    names: {id: display label}}                      (a request without a name is "request <id>")
// Times are seconds on the scheduler's clock. Each request's row shows, left to right: waiting in the queue for a
// place in the KV-cache budget (queued -> admitted), its prefill (admitted -> first_step), then one mark for every
// decode step it had a row in, until it left. Under the rows, a strip gives each step's batch size (its rows).
//
// options: {projector: bool (type of 24 px and more), label: the picture's accessible name, maxRows: rows drawn
// before the rest are summed up in one line (default 40), rowHeight: px (default: from the type size), maxHeight: px
// the whole picture may take (rows are made thinner to fit; rows thinner than the type lose their names, except the
// highlighted ones)}. An optional `window: [t0, t1]` in the record sets the span drawn (default: all of it).
// Colours are CSS custom properties with fallbacks, so the module draws without a style sheet and a page's
// style sheet themes it: --tl-queue, --tl-prefill, --tl-step, --tl-hl, --tl-hl-band, --tl-batch, --tl-ink, --tl-line.
//
// Everything is drawn in CSS pixels of the element's own width, so type keeps its size on a phone and a projector.

import { el, text } from "../lib/svg.js";

const COLOURS = {
  queue: "var(--tl-queue, #c9c7bd)",
  prefill: "var(--tl-prefill, #8f8d84)",
  step: "var(--tl-step, #6d8fb3)",
  hl: "var(--tl-hl, #c25e00)",
  band: "var(--tl-hl-band, rgba(194, 94, 0, 0.12))",
  batch: "var(--tl-batch, #6d8fb3)",
  ink: "var(--tl-ink, currentColor)",
  line: "var(--tl-line, #b9b8af)",
};

function ids(highlight) {
  if (highlight === null || highlight === undefined) return new Set();
  return new Set((Array.isArray(highlight) ? highlight : [highlight]).map(Number));
}

// The window's span on the scheduler's clock: first arrival (or step) to the last step's end (or departure).
export function span(record) {
  let t0 = Infinity, t1 = -Infinity;
  for (const s of record.steps || []) { t0 = Math.min(t0, s.start); t1 = Math.max(t1, s.end); }
  for (const r of record.requests || []) {
    t0 = Math.min(t0, r.queued);
    for (const t of [r.admitted, r.first_step, r.left]) if (t !== null && t !== undefined) t1 = Math.max(t1, t);
  }
  if (!Number.isFinite(t0)) return [0, 1];
  return [t0, t1 > t0 ? t1 : t0 + 1e-3];
}

// Each request's steps, as [start, end] pairs, from the steps' rows.
function stepsOf(record) {
  const by = new Map();
  for (const s of record.steps || []) for (const id of s.rows) {
    if (!by.has(id)) by.set(id, []);
    by.get(id).push(s);
  }
  return by;
}

function niceStep(range, target) {
  const raw = range / Math.max(1, target);
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function fmtTime(seconds, step) {
  return step < 1 ? `${Math.round(seconds * 1000)} ms` : `${+seconds.toFixed(step < 10 ? 1 : 0)} s`;
}

export function drawTimeline(element, record, options = {}) {
  const projector = !!options.projector;
  const font = projector ? 24 : 13;
  const small = projector ? font : Math.round(font * 0.85);  // axis figures: never under 24 px on a projector
  const width = Math.max(280, Math.round(element.clientWidth || 720));
  const hl = ids(record.highlight);
  const names = record.names || {};
  const name = (r) => names[r.id] ?? names[String(r.id)] ?? `request ${r.id}`;
  const reqs = [...(record.requests || [])].sort((a, b) => (hl.has(b.id) - hl.has(a.id)) || a.queued - b.queued || a.id - b.id);
  const maxRows = options.maxRows ?? 40;
  const shown = reqs.slice(0, maxRows);
  const hidden = reqs.length - shown.length;
  const fixedH = Math.round(font * 3) + Math.round(font * 0.6) + font + 10 + (hidden ? font * 1.2 : 0);  // batch strip, axis
  let rowH = options.rowHeight ?? Math.round(font * (shown.length > 20 ? 1.15 : 1.45));
  if (options.maxHeight && shown.length) rowH = Math.max(3, Math.min(rowH, Math.floor((options.maxHeight - fixedH) / shown.length)));
  const named = rowH >= font;  // room for every row's name
  const labelW = Math.min(Math.round(width * 0.3), Math.round(font * 8));
  const plotX = labelW + 6, plotW = width - plotX - 4;
  const top = 2;
  const rowsH = shown.length * rowH + (hidden ? Math.max(rowH, font * 1.2) : 0);
  const batchH = Math.round(font * 3);
  const batchY = top + rowsH + Math.round(font * 0.6);
  const axisY = batchY + batchH + font + 4;
  const height = axisY + 4;
  const [t0, t1] = record.window || span(record);
  const x = (t) => plotX + ((Math.min(t1, Math.max(t0, t)) - t0) / (t1 - t0)) * plotW;
  const w = (a, b) => Math.max(projector ? 1.5 : 0.8, x(b) - x(a));

  const s = el("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", class: "serving-timeline",
    "font-size": font, preserveAspectRatio: "xMinYMin meet" });
  el("title", {}, s).textContent = options.label || "Decode steps: one row per request, one mark per step it had a row in";
  const steps = stepsOf(record);

  // time axis, drawn first: behind the rows
  const tick = niceStep(t1 - t0, Math.max(2, Math.floor(plotW / (font * 7))));
  const ax = el("g", { class: "tl-axis" }, s);
  for (let k = 0; k * tick <= t1 - t0 + 1e-9; k++) {
    const tx = x(t0 + k * tick);
    el("line", { x1: tx, x2: tx, y1: top, y2: batchY + batchH, style: `stroke: ${COLOURS.line}; stroke-dasharray: 2 4; opacity: 0.6` }, ax);
    const label = k === 0 ? "0" : fmtTime(k * tick, tick);
    const late = tx + label.length * small * 0.32 > width;  // the last label would run off the right edge
    text(ax, late ? width - 2 : tx, axisY - 2, label, { "text-anchor": k === 0 ? "start" : late ? "end" : "middle",
      "font-size": small, style: `fill: ${COLOURS.ink}` });
  }

  shown.forEach((r, i) => {
    const y = top + i * rowH, mid = y + rowH / 2, bar = Math.max(2, rowH * (rowH < 8 ? 0.8 : 0.62)), by = mid - bar / 2;
    const mine = hl.has(r.id);
    const g = el("g", { class: `tl-row${mine ? " tl-mine" : ""}`, "data-request": r.id }, s);
    const ts = steps.get(r.id) || [];
    el("title", {}, g).textContent = `${name(r)}: ${r.prompt_tokens} prompt tokens, ${ts.length} decode steps` +
      (r.reason ? `, left (${r.reason})` : "");
    if (mine) el("rect", { x: 0, y, width, height: rowH, style: `fill: ${COLOURS.band}` }, g);
    if (named || mine) text(g, labelW, mid, name(r), { "text-anchor": "end", "dominant-baseline": "central",
      style: `fill: ${COLOURS.ink}; font-weight: ${mine ? 700 : 400}` });
    const waitEnd = r.admitted ?? r.left ?? t1;
    if (waitEnd > r.queued) el("rect", { class: "tl-queue", x: x(r.queued), y: by + bar * 0.25, width: w(r.queued, waitEnd), height: bar * 0.5,
      style: `fill: ${COLOURS.queue}` }, g);
    if (r.admitted !== null && r.admitted !== undefined) {
      const pEnd = r.first_step ?? r.left ?? t1;
      if (pEnd > r.admitted) el("rect", { class: "tl-prefill", x: x(r.admitted), y: by, width: w(r.admitted, pEnd), height: bar,
        style: `fill: ${mine ? COLOURS.hl : COLOURS.prefill}; opacity: 0.45` }, g);
    }
    if (ts.length) {
      // one path of many small rectangles: a few hundred steps stay one element per row
      const d = ts.map((st) => `M${x(st.start).toFixed(1)} ${by.toFixed(1)}h${w(st.start, st.end).toFixed(2)}v${bar.toFixed(1)}h-${w(st.start, st.end).toFixed(2)}z`).join("");
      el("path", { class: "tl-steps", d, style: `fill: ${mine ? COLOURS.hl : COLOURS.step}` }, g);
    }
    if (r.left !== null && r.left !== undefined) el("line", { class: "tl-left", x1: x(r.left), x2: x(r.left), y1: by - 1, y2: by + bar + 1,
      style: `stroke: ${mine ? COLOURS.hl : COLOURS.ink}; stroke-width: ${projector ? 3 : 1.5}` }, g);
  });
  if (hidden) text(s, labelW, top + shown.length * rowH + Math.max(rowH, font * 1.2) / 2, `+ ${hidden} more`, { "text-anchor": "end", "dominant-baseline": "central",
    style: `fill: ${COLOURS.ink}` });

  // batch size per step
  const most = Math.max(1, ...(record.steps || []).map((st) => st.rows.length));
  const g = el("g", { class: "tl-batch" }, s);
  el("title", {}, g).textContent = `Rows per decode step (batch size), at most ${most}`;
  el("line", { x1: plotX, x2: plotX + plotW, y1: batchY + batchH, y2: batchY + batchH, style: `stroke: ${COLOURS.line}` }, g);
  const d = (record.steps || []).map((st) => {
    const h = (st.rows.length / most) * batchH;
    const any = st.rows.some((id) => hl.has(id));
    return [any, `M${x(st.start).toFixed(1)} ${(batchY + batchH - h).toFixed(1)}h${w(st.start, st.end).toFixed(2)}v${h.toFixed(1)}h-${w(st.start, st.end).toFixed(2)}z`];
  });
  el("path", { d: d.filter(([a]) => !a).map(([, p]) => p).join(""), style: `fill: ${COLOURS.batch}; opacity: 0.55` }, g);
  el("path", { d: d.filter(([a]) => a).map(([, p]) => p).join(""), style: `fill: ${COLOURS.batch}` }, g);
  text(g, labelW, batchY + font * 0.9, "batch", { "text-anchor": "end", style: `fill: ${COLOURS.ink}` });
  text(g, labelW, batchY + font * 2.1, `${most} max`, { "text-anchor": "end", "font-size": small, style: `fill: ${COLOURS.ink}` });

  element.replaceChildren(s);
  return s;
}
