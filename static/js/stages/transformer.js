// The transformer stage: embeddings, every attention head, MLP activity, residual norms and the
// logit lens, all from the forward pass the server ran (json_script "tf-data").
// A model with many heads (view.grid "compact") sends one layer's maps: the head grid is coloured by
// each head's habit, and choosing a head of another layer fetches that layer's maps from /data.
// Every string from the scenario is inserted with textContent or setAttribute, never as markup.

import { dataUrl, readJSON, setViewOption } from "../stage.js";
import { visibleToken, withJoined } from "../lib/tokens.js";
import { el, svg, text } from "../lib/svg.js";
import { cssColor, legend, viridis } from "../lib/colors.js";

const data = readJSON("tf-data");
const tokens = readJSON("tf-tokens"); // [[id, text], ...] for the whole prompt (a byte of a cut character is ‹E4›)
// position -> "" for a token that holds part of a character, or, on the last token of a run of them,
// the characters the run makes (explainer/stages/words.py token_runs): shown once, after the run
const parts = readJSON("tf-parts") || {};
const view = readJSON("tf-view");
const state = { layer: view.layer, head: view.head, token: view.token, scale: view.scale };

const START = data.start;
const END = data.end;
const W = END - START;
const L = data.attention.n_layer;
const H = data.attention.n_head;
const D = data.embedding.cols;
const TRI = (W * (W + 1)) / 2;
const COMPACT = view.grid !== "thumbs";
// A masked cell ("not allowed", distinct from a weight of 0): a pale grey, or the dark scheme's --masked
const MASKED_LIGHT = [232, 231, 224];
const FONT = 12; // every chart label, in CSS pixels: the charts are drawn at their size on screen
const CHAR_W = FONT * 0.61; // one character of the monospace labels

// ---- data ---------------------------------------------------------------------------------

// base64 uint16 (little-endian) -> Float32Array of lo + q/65535*(hi-lo); see pages/transformer.py pack()
function unpack(p) {
  const bin = atob(p.b64);
  const out = new Float32Array(bin.length / 2);
  const span = p.hi - p.lo;
  for (let i = 0; i < out.length; i++) out[i] = p.lo + ((bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) / 65535) * span;
  return out;
}
const emb = unpack(data.embedding);
const EMB_MAX = data.embedding.hi;

// The maps of every layer fetched so far: layer -> its H lower triangles, one after the other.
const maps = new Map();
function addMaps(a) {
  const flat = unpack(a);
  a.layers.forEach((l, k) => maps.set(l, flat.subarray(k * H * TRI, (k + 1) * H * TRI)));
}
addMaps(data.attention);
// weight that query position i (window-relative) gives key j <= i in layer l, head h (a fetched layer)
const weight = (l, h, i, j) => maps.get(l)[h * TRI + (i * (i + 1)) / 2 + j];
const mapName = (l, h) => `block_${l}_attn_head_${h}_weights`;
const tokText = (pos) => tokens[pos][1];
const isSpecial = (id) => view.specials.includes(id);

// A token's text as the app shows every token: whitespace and invisible marks made visible.
const shown = visibleToken;
function short(s, n = 12) {
  const chars = [...shown(s)];
  return chars.length > n ? chars.slice(0, n - 1).join("") + "…" : chars.join("");
}
// A chart's label for the token at `pos`, at most n characters: [its text, and "=中" after the last token of
// a run that makes a whole character]; the characters are kept whole, the bytes shortened to make room.
function tokLabel(pos, n = 12) {
  const joins = parts[pos];
  if (!joins) return [short(tokText(pos), n), ""];
  const tail = `=${joins}`;
  return [short(tokText(pos), Math.max(2, n - [...tail].length)), tail];
}
// The same in a line of text: “‹AD›” (=中)
const said = (pos) => `“${shown(tokText(pos))}”${parts[pos] ? ` (=${parts[pos]})` : ""}`;
function chip(str, id = null) {
  const span = document.createElement("span");
  span.className = "tok" + (id !== null && isSpecial(id) ? " special" : "");
  span.textContent = shown(str);
  return span;
}
const fmt = (x, d = 3) => Number(x).toFixed(d);

// ---- drawing helpers --------------------------------------------------------------------------

const LUT = Array.from({ length: 256 }, (_, i) => viridis(i / 255).match(/\d+/g).map(Number));
const rgb = (t) => LUT[Math.max(0, Math.min(255, Math.round((Number.isFinite(t) ? t : 0) * 255)))];

// A heatmap as a PNG data URL, each cell k x k pixels; value(i, j) -> t in [0, 1], or null for a masked cell.
function heatURL(rows, cols, value, minPixels = 512) {
  const k = Math.max(1, Math.ceil(minPixels / Math.max(rows, cols)));
  const canvas = document.createElement("canvas");
  canvas.width = cols * k;
  canvas.height = rows * k;
  const ctx = canvas.getContext("2d");
  const masked = cssColor("--masked", MASKED_LIGHT);
  const img = ctx.createImageData(cols * k, rows * k);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const t = value(i, j);
      const c = t === null ? masked : rgb(t);
      for (let y = i * k; y < (i + 1) * k; y++) {
        let o = (y * cols * k + j * k) * 4;
        for (let x = 0; x < k; x++, o += 4) { img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 255; }
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  return canvas.toDataURL("image/png");
}

function image(parent, href, x, y, width, height) {
  return el("image", { href, x, y, width, height, preserveAspectRatio: "none", class: "pix" }, parent);
}

// svg() drawn at its natural size (each chart fits its width to its box), so labels stay FONT pixels tall.
function chart(width, height, opts) {
  const s = svg(width, height, opts);
  s.style.width = `${width}px`;
  s.style.maxWidth = "100%";
  return s;
}
const widthOf = (id, fallback = 600) => document.getElementById(id).clientWidth || fallback;

function svgPoint(s, ev) {
  const p = s.createSVGPoint();
  p.x = ev.clientX;
  p.y = ev.clientY;
  return p.matrixTransform(s.getScreenCTM().inverse());
}

// Cell under the pointer of a grid drawn at (x0, y0) with cells cw x ch; null outside.
function cellAt(s, ev, x0, y0, cw, ch, rows, cols) {
  const p = svgPoint(s, ev);
  const i = Math.floor((p.y - y0) / ch);
  const j = Math.floor((p.x - x0) / cw);
  return i >= 0 && i < rows && j >= 0 && j < cols ? [i, j] : null;
}

function labelStep(cell, font) { return Math.max(1, Math.ceil((font - 1) / cell)); }

// A label's text: a string, or [a token's text, "=中"] whose second part (the character a run of byte
// tokens makes) is set apart in bold.
function labelText(t, label) {
  const [main, tail] = Array.isArray(label) ? label : [label, ""];
  t.textContent = main;
  if (tail) el("tspan", { class: "lbl-joined" }, t).textContent = tail;
  return t;
}
// Which of `count` labels to draw when only one in `step` fits, never two closer than that: first those
// that end a run of byte tokens (they carry its character), then the others in order. Without such
// runs that is every step-th label from the first.
function thinned(count, labelOf, step) {
  const labels = Array.from({ length: count }, (_, i) => labelOf(i));
  if (step <= 1) return labels.map((label, i) => [i, label]);
  const joins = (i) => Array.isArray(labels[i]) && labels[i][1] !== "";
  const taken = new Uint8Array(count);
  const free = (i) => { for (let d = 1 - step; d < step; d++) if (taken[i + d]) return false; return true; };
  const order = [...labels.keys()].sort((a, b) => joins(b) - joins(a) || a - b);
  for (const i of order) if (free(i)) taken[i] = 1;
  return labels.map((label, i) => [i, label]).filter(([i]) => taken[i]);
}
// Row labels (tokens) down the left side, right-aligned, thinned out when rows are small.
function rowLabels(g, x, y0, ch, count, labelOf, font) {
  for (const [i, label] of thinned(count, labelOf, labelStep(ch, font))) {
    labelText(text(g, x, y0 + i * ch + ch / 2, "", { "text-anchor": "end", "dominant-baseline": "central", "font-size": font, class: "lbl" }), label);
  }
}
// Column labels under a grid, written upwards.
function colLabels(g, x0, y, cw, count, labelOf, font) {
  for (const [j, label] of thinned(count, labelOf, labelStep(cw, font))) {
    const cx = x0 + j * cw + cw / 2;
    labelText(text(g, cx, y, "", { "text-anchor": "end", "dominant-baseline": "central", "font-size": font, class: "lbl", transform: `rotate(-90 ${cx} ${y})` }), label);
  }
}

function readout(id, str) { document.getElementById(id).textContent = str || ""; }  // .readout keeps its line's height

const where = (pos) => `${said(pos)} (position ${pos})`;

// ---- 1. token strip ------------------------------------------------------------------------

const strip = document.getElementById("token-strip");
function buildStrip() {
  strip.replaceChildren();
  tokens.forEach(([id, str], pos) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "tok" + (isSpecial(id) ? " special" : "") + (pos < START || pos >= END ? " outside" : "") + (pos in parts ? " part" : "");
    b.textContent = shown(str);
    b.dataset.pos = pos;
    b.setAttribute("aria-label", `${shown(str)}, position ${pos}${pos in parts ? ", part of a character" : ""}`);
    b.title = `position ${pos}${pos in parts ? ": part of a character, its bytes shown" : ""}`;
    b.addEventListener("click", () => selectToken(pos));
    strip.append(withJoined(b, parts[pos]));  // after the last byte token of a run: the character it makes, once
  });
}
function markStrip() {
  for (const b of strip.querySelectorAll("button")) {
    const on = Number(b.dataset.pos) === state.token;
    b.setAttribute("aria-pressed", String(on));
    if (on && strip.scrollWidth > strip.clientWidth + 1) {
      // one sideways line (a phone): bring the chosen token to the middle
      strip.scrollLeft = b.offsetLeft - strip.offsetLeft - (strip.clientWidth - b.offsetWidth) / 2;
    } else if (on && strip.scrollHeight > strip.clientHeight) {
      const top = b.offsetTop - strip.offsetTop;
      if (top < strip.scrollTop || top > strip.scrollTop + strip.clientHeight - b.offsetHeight) {
        // a strip of two or three lines shows the chosen token's line last; a taller one, in its middle
        strip.scrollTop = strip.clientHeight < 100 ? top + b.offsetHeight - strip.clientHeight + 4 : top - strip.clientHeight / 2;
      }
    }
  }
  for (const n of document.querySelectorAll(".sel-text")) {
    n.textContent = shown(tokText(state.token));
    n.classList.toggle("special", isSpecial(tokens[state.token][0]));
  }
  for (const n of document.querySelectorAll(".sel-pos")) n.textContent = String(state.token);
}

// ---- 2. embedding matrix -------------------------------------------------------------------

const embBox = document.getElementById("embedding");
const EMB = { x0: Math.ceil(12 * CHAR_W) + 8, y0: 4, cw: 2, ch: Math.max(4, Math.min(16, Math.floor(420 / W))) };
let embSel = null;
function buildEmbedding() {
  EMB.cw = Math.max(0.5, Math.min(Math.max(2, 512 / D), (widthOf("embedding") - EMB.x0 - 14) / D));  // a narrow model's columns widen
  const { x0, y0, cw, ch } = EMB;
  const s = chart(x0 + D * cw + 14, y0 + W * ch + 36, { label: `Embedding matrix: ${W} tokens by ${D} numbers, colour is the value`, className: "heat" });
  const url = heatURL(W, D, (i, j) => (emb[i * D + j] / EMB_MAX + 1) / 2, 768);
  image(s, url, x0, y0, D * cw, W * ch);
  rowLabels(s, x0 - 4, y0, ch, W, (i) => tokLabel(START + i), FONT);
  const tick = D > 512 ? 128 : D >= 256 ? 64 : 16;
  for (let j = 0; j < D; j += tick) if (D - 1 - j >= tick / 2) text(s, x0 + j * cw + cw / 2, y0 + W * ch + 14, String(j), { "text-anchor": "middle", "font-size": FONT, class: "lbl" });
  text(s, x0 + (D - 1) * cw + cw / 2, y0 + W * ch + 14, String(D - 1), { "text-anchor": "middle", "font-size": FONT, class: "lbl" });
  text(s, x0 + (D * cw) / 2, y0 + W * ch + 30, "dimension", { "text-anchor": "middle", "font-size": FONT, class: "lbl axis" });
  embSel = el("rect", { x: x0 - 1, y: 0, width: D * cw + 2, height: ch, class: "sel-outline" }, s);
  s.addEventListener("mousemove", (ev) => {
    const c = cellAt(s, ev, x0, y0, cw, ch, W, D);
    readout("embedding-readout", c ? `${where(START + c[0])}, dimension ${c[1]}: ${fmt(emb[c[0] * D + c[1]], 4)}` : "");
  });
  s.addEventListener("mouseleave", () => readout("embedding-readout", ""));
  s.addEventListener("click", (ev) => { const c = cellAt(s, ev, x0, y0, cw, ch, W, D); if (c) selectToken(START + c[0]); });
  embBox.replaceChildren(s);
  legend(document.getElementById("embedding-legend"), viridis, { min: fmt(-EMB_MAX), max: `+${fmt(EMB_MAX)}`, label: "value (0 is the middle colour)" });
}
function markEmbedding() { embSel.setAttribute("y", EMB.y0 + (state.token - START) * EMB.ch); }

// ---- 3. attention --------------------------------------------------------------------------

// Colour of a weight. Long prompts spread attention thin (a row of 400 keys averages 0.0025), so a
// logarithmic scale from LOG_MIN to 1 is offered beside the plain linear one.
const LOG_MIN = 1e-3;
const shade = (w) => (state.scale === "log" ? Math.max(0, 1 - Math.log10(Math.max(w, LOG_MIN)) / Math.log10(LOG_MIN)) : w);
const mapURLs = { linear: [], log: [] };
function mapURL(l, h) {
  const cache = mapURLs[state.scale];
  const m = l * H + h;
  if (!cache[m]) cache[m] = heatURL(W, W, (i, j) => (j > i ? null : shade(weight(l, h, i, j))));
  return cache[m];
}

// Thumbnails: every head of every layer (a small model), or the selected layer's heads (COMPACT).
const grid = document.getElementById("attn-grid");
function buildGrid() {
  const layers = COMPACT ? [state.layer] : [...Array(L).keys()];
  const across = COMPACT ? Math.min(H, Math.ceil(Math.sqrt(H))) : H;  // thumbnails a row
  grid.style.setProperty("--heads", across);
  grid.replaceChildren();
  if (!COMPACT) {
    const top = gridRow(grid);
    labelCell(top, "gridcell");  // the corner over the layers' labels
    for (let h = 0; h < H; h++) labelCell(top, "columnheader", "col-head").textContent = `head ${h}`;
  }
  let row = null;
  for (const l of layers) {
    if (!COMPACT) labelCell(row = gridRow(grid), "rowheader", "row-head").textContent = `layer ${l}`;
    for (let h = 0; h < H; h++) {
      if (COMPACT && h % across === 0) row = gridRow(grid);
      const b = document.createElement("button");
      b.type = "button";
      b.className = "attn-cell";
      b.dataset.layer = l;
      b.dataset.head = h;
      // where the arrow keys find it: rows are layers and columns heads, or (one layer) rows of `across` heads
      [b.dataset.r, b.dataset.c] = COMPACT ? [Math.floor(h / across), h % across] : [l, h];
      b.tabIndex = -1;
      b.title = mapName(l, h);
      b.setAttribute("aria-label", `L${l} · H${h}: layer ${l} · head ${h} (${mapName(l, h)})`);
      const img = document.createElement("img");
      img.src = mapURL(l, h);
      img.alt = "";
      const cap = document.createElement("span");
      cap.className = "cell-cap";
      cap.textContent = `L${l} · H${h}`;
      b.append(img, cap);
      b.addEventListener("click", () => selectHead(l, h));
      buttonCell(row, b);
    }
  }
}

// ---- the keyboard in the pickers ---------------------------------------------------------------
// Each picker of heads is one Tab stop, the chosen head's button (the WAI-ARIA grid pattern, a "roving
// tabindex"). Inside it the arrow keys move the focus one button at a time as the buttons are laid out
// (data-r, data-c: row and column), Home and End to the first and last of the row, Ctrl+Home and Ctrl+End
// to the first and last of the grid; Enter or Space, the button's own, shows that head. The keys a picker
// uses never reach stage.js, which would otherwise go to the next stage on →.
// The ARIA rows and cells have no box of their own: the buttons and labels stay the CSS grid's items.
function gridRow(parent) {
  const r = document.createElement("div");
  r.setAttribute("role", "row");
  r.style.display = "contents";
  parent.append(r);
  return r;
}
// A label of the grid (a grid item itself): a row's or a column's header, or the empty corner.
function labelCell(row, role, className = "") {
  const c = document.createElement("span");
  c.setAttribute("role", role);
  c.className = className;
  row.append(c);
  return c;
}
// A button's cell: the button is the grid item.
function buttonCell(row, button) {
  const c = document.createElement("span");
  c.setAttribute("role", "gridcell");
  c.style.display = "contents";
  c.append(button);
  row.append(c);
}
const pickers = [];
// The picker's Tab stop: the focused button while the focus is inside it, else the chosen head's.
function restTabStop(box, keepFocus = true) {
  const buttons = [...box.querySelectorAll("button[data-c]")];
  const stop = (keepFocus && buttons.find((b) => b === document.activeElement))
    || buttons.find((b) => b.getAttribute("aria-pressed") === "true") || buttons[0];
  for (const b of buttons) b.tabIndex = b === stop ? 0 : -1;
}
function roving(box, { rows = true } = {}) {
  pickers.push(box);
  box.addEventListener("keydown", (ev) => {
    const b = ev.target.closest("button[data-c]");
    if (!b || !box.contains(b) || ev.altKey || ev.metaKey || ev.shiftKey) return;
    const r = Number(b.dataset.r), c = Number(b.dataset.c);
    const lastOf = (row) => Math.max(...[...box.querySelectorAll(`button[data-r="${row}"]`)].map((x) => Number(x.dataset.c)));
    const lastRow = () => Math.max(...[...box.querySelectorAll("button[data-r]")].map((x) => Number(x.dataset.r)));
    const moves = {
      ArrowLeft: () => [r, c - 1], ArrowRight: () => [r, c + 1],
      ArrowUp: rows && (() => [r - 1, c]), ArrowDown: rows && (() => [r + 1, c]),
      Home: () => (ev.ctrlKey ? [0, 0] : [r, 0]),
      End: () => { const lr = ev.ctrlKey ? lastRow() : r; return [lr, lastOf(lr)]; },
    };
    if (!moves[ev.key] || (ev.ctrlKey && !["Home", "End"].includes(ev.key))) return;
    ev.preventDefault();  // at an edge too: the focus stays, the stage does not change
    const [tr, tc] = moves[ev.key]();
    const next = box.querySelector(`button[data-r="${tr}"][data-c="${tc}"]`);
    if (!next) return;
    for (const x of box.querySelectorAll("button[data-c]")) x.tabIndex = x === next ? 0 : -1;
    next.focus();
  });
  // leaving it without choosing: Tab comes back to the chosen head
  box.addEventListener("focusout", (ev) => { if (!box.contains(ev.relatedTarget)) restTabStop(box, false); });
}

function markGrid() {
  for (const b of document.querySelectorAll(".attn-cell, .head-cell")) {
    const on = Number(b.dataset.layer) === state.layer && Number(b.dataset.head) === state.head;
    b.setAttribute("aria-pressed", String(on));
  }
  if (COMPACT) {
    document.getElementById("attn-grid-title").textContent = `The ${H} heads of layer ${state.layer}`;
    document.getElementById("attends-all-title").textContent = `… in every head of layer ${state.layer}`;
  }
  for (const b of document.querySelectorAll("[data-pick-layer]")) b.setAttribute("aria-pressed", String(Number(b.dataset.pickLayer) === state.layer));
  for (const b of document.querySelectorAll("[data-pick-head]")) b.setAttribute("aria-pressed", String(Number(b.dataset.pickHead) === state.head));
  for (const box of pickers) restTabStop(box);
}
for (const b of document.querySelectorAll("[data-pick-layer]")) b.addEventListener("click", () => selectHead(Number(b.dataset.pickLayer), state.head));
for (const b of document.querySelectorAll("[data-pick-head]")) b.addEventListener("click", () => selectHead(state.layer, Number(b.dataset.pickHead)));
// The main visual's layer and head buttons (a small model): two toolbars, ← and → move along each.
for (const bar of document.querySelectorAll(".tf-seg[role=toolbar]")) {
  bar.querySelectorAll("button").forEach((b, i) => { b.dataset.r = 0; b.dataset.c = i; });
  roving(bar, { rows: false });
}

// COMPACT: the picker is one small cell per head (layers across, heads down), coloured by how much
// weight the head gives the token right before each token (habits.prev); the arrow keys move between cells.
const headGrid = document.getElementById("head-grid");
const habit = (l, h) => ({ prev: data.habits.prev[l * H + h], first: data.habits.first[l * H + h] });
function headWords(l, h) {
  const { prev, first } = habit(l, h);
  return `layer ${l} · head ${h}: ${fmt(prev, 2)} on the previous token, ${fmt(first, 2)} on the first`;
}
const headLine = (l, h) => `L${l} · H${h}: previous token ${fmt(habit(l, h).prev, 2)} · first ${fmt(habit(l, h).first, 2)}`;
function buildHeadGrid() {
  headGrid.style.setProperty("--layers", L);
  headGrid.style.setProperty("--heads", H);
  const step = L > 20 ? 5 : L > 10 ? 2 : 1;  // layer numbers that fit over cells of about 11 px
  headGrid.replaceChildren();
  const top = gridRow(headGrid);
  labelCell(top, "columnheader", "hg-corner").textContent = "head";
  for (let l = 0; l < L; l++) {
    const c = labelCell(top, "columnheader", "hg-col");
    c.textContent = l % step === 0 ? String(l) : "";
    c.setAttribute("aria-label", `layer ${l}`);
  }
  for (let h = 0; h < H; h++) {
    const row = gridRow(headGrid);
    const r = labelCell(row, "rowheader", "hg-row");
    r.textContent = String(h);
    r.setAttribute("aria-label", `head ${h}`);
    for (let l = 0; l < L; l++) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "head-cell";
      b.dataset.layer = l;
      b.dataset.head = h;
      [b.dataset.r, b.dataset.c] = [h, l];  // as drawn: layers across, heads down
      b.tabIndex = -1;
      b.style.background = viridis(habit(l, h).prev);
      b.setAttribute("aria-label", headWords(l, h));
      b.addEventListener("click", () => selectHead(l, h));
      b.addEventListener("mouseenter", () => readout("head-grid-readout", headLine(l, h)));
      b.addEventListener("focus", () => readout("head-grid-readout", headLine(l, h)));
      buttonCell(row, b);
    }
  }
  headGrid.addEventListener("mouseleave", () => readout("head-grid-readout", ""));
  roving(headGrid);
}

// Another layer's maps, from the page's own /data with that layer chosen. The window is the one this
// page was drawn for: the token it was opened at (view.token) decides it, whatever token is outlined now.
const fetching = new Map();  // layer -> its pending fetch
function ensureLayer(l) {
  if (maps.has(l)) return Promise.resolve();
  if (!fetching.has(l)) {
    const url = new URL(location.href);
    url.searchParams.set("layer", l);
    if (view.token === view.default_token) url.searchParams.delete("token");
    else url.searchParams.set("token", view.token);
    fetching.set(l, fetch(dataUrl(url.href))
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`the server answered ${r.status}`))))
      .then((body) => {
        const d = body.data["tf-data"];
        if (d.start !== START || d.end !== END) throw new Error("the prompt's window moved; reload the page");
        addMaps(d.attention);
      })
      .finally(() => fetching.delete(l)));
  }
  return fetching.get(l);
}

const bigBox = document.getElementById("attn-big");
const mainCard = document.querySelector(".tf-main");
// In a presenter's room the parent page adds html.projector after load: the big map is then drawn again,
// bigger, with 24 px labels, over a window of the last tokens only (transformer.css lays out the card).
const projector = () => document.documentElement.classList.contains("projector");
const PROJ_FONT = 24;  // the projector's smallest text, in CSS pixels
const PROJ_CELL = 36;  // a row at least this tall per token label
// The big map is sized to what is left of the first screen under its top (and to its column's width),
// and drawn at that size, so its labels stay FONT pixels tall instead of being scaled down.
function bigLayout() {
  if (projector()) return projLayout();
  const narrow = mainCard.clientWidth < 640;
  const chars = narrow ? 7 : 12;
  const labelW = Math.ceil(chars * CHAR_W) + 8; // row labels on the left; the column labels, turned, need as much below
  // Under the map: on a laptop only the card's edge (the legend sits beside it); on a phone, where the
  // map's box dissolves into its figure (display: contents), the legend, the colour scale and the
  // token strip follow it, inside the card.
  const stacked = getComputedStyle(bigBox).display === "contents";
  const card = mainCard.getBoundingClientRect();
  const old = bigBox.querySelector("svg");
  const fig = bigBox.parentElement.getBoundingClientRect();
  const top = (stacked ? fig.top : bigBox.getBoundingClientRect().top) + window.scrollY;
  // (a COMPACT phone card ends with the head grid, which is left below the first screen)
  const picker = COMPACT && stacked ? document.querySelector(".tf-pick").getBoundingClientRect().height : 0;
  const after = stacked ? card.bottom - fig.top - (old ? old.getBoundingClientRect().height : 0) - picker + 10 : 24;
  // (the download control joins the colour scale's row once the chart is drawn)
  const byHeight = window.innerHeight - top - after - labelW - 12;
  // beside the map on a laptop: the download control, then the caption column (12rem and its gap)
  const byWidth = (stacked ? bigBox.parentElement.clientWidth : bigBox.parentElement.clientWidth - 208 - 130) - labelW - 8;
  const size = Math.floor(Math.max(150, Math.min(byWidth, byHeight, 560)));
  return { x0: labelW, y0: 4, cell: size / W, font: FONT, size, chars, labelW, width: bigBox.clientWidth, s: 0, k: W, earlier: 0 };
}
// Projector: the map fills the card's left column down to the frame's bottom edge; it shows the k
// tokens that end at the outlined one (as many as get a row of PROJ_CELL px), each row and column
// labelled at 24 px, and a column "earlier" for the attention that goes to the tokens before them.
function projLayout(keepStart = null) {
  const font = PROJ_FONT, cw = font * 0.61;
  const chars = 6;
  const rowW = Math.ceil(chars * cw) + 10;   // the row labels' column
  const colH = Math.ceil(7 * cw) + 12;       // the column labels under the map, turned ("earlier" is 7 letters)
  const side = 230 + 20;  // the picker, caption, legend and colour scale beside the map (transformer.css)
  // the map's box has no box of its own here (display: contents): it starts at the card's padding edge
  const cs = getComputedStyle(mainCard);
  const pad = parseFloat(cs.paddingBottom) + parseFloat(cs.borderBottomWidth) + 4;  // under the map
  const top = mainCard.getBoundingClientRect().top + window.scrollY + parseFloat(cs.paddingTop) + parseFloat(cs.borderTopWidth);
  const byHeight = window.innerHeight - top - pad - 4 - colH - 6;
  const byWidth = mainCard.clientWidth - 28 - side - rowW - 6;
  let size = Math.floor(Math.max(150, Math.min(byHeight, byWidth)));
  const k = Math.max(1, Math.min(W, Math.floor(size / PROJ_CELL)));
  const i = state.token - START;
  let s = keepStart !== null && i >= keepStart && i < keepStart + k ? keepStart : i - k + 1;
  s = Math.max(0, Math.min(W - k, s));
  const earlier = START + s > 0;
  // the "earlier" column (a cell and a gap) comes out of the width, never out of the labels
  let cell = Math.min(96, size / k, earlier ? (byWidth - 8) / (k + 1) : Infinity);
  size = cell * k;
  const ew = earlier ? cell + 8 : 0;
  return { x0: rowW + ew, y0: 4, cell, font, size, chars, labelW: colH, width: bigBox.clientWidth, s, k, earlier, rowW };
}
let BIG = null;
let big = null;
function buildBig() {
  const keep = BIG && projector() && BIG.k < W ? BIG.s : null;
  BIG = projector() ? projLayout(keep) : bigLayout();
  const { x0, y0, cell, font, size, chars, labelW, s: s0, k } = BIG;
  const l = state.layer, h = state.head;
  const proj = projector();
  const s = svg(x0 + size + 6, y0 + size + labelW + 6, { label: `Attention map, layer ${l} head ${h}: rows are the tokens looking, columns the tokens looked at`, className: "heat" });
  s.style.width = `${x0 + size + 6}px`;
  s.style.maxWidth = "100%";
  if (!proj) {
    image(s, mapURL(l, h), x0, y0, size, size);
    rowLabels(s, x0 - 4, y0, cell, W, (i) => tokLabel(START + i, chars), font);
    colLabels(s, x0, y0 + size + 4, cell, W, (j) => tokLabel(START + j, chars), font);
    text(s, x0 - 6, y0 + size + 16, "query ↓", { "text-anchor": "end", "font-size": font, class: "lbl axis" });
    text(s, x0 - 6, y0 + size + 32, "key →", { "text-anchor": "end", "font-size": font, class: "lbl axis" });
  } else {
    image(s, heatURL(k, k, (i, j) => (j > i ? null : shade(weight(l, h, s0 + i, s0 + j)))), x0, y0, size, size);
    if (BIG.earlier) {
      // what each row gives the tokens before the drawn ones, all together (a row adds up to 1)
      const rest = (i) => { let a = 0; for (let j = s0; j <= s0 + i; j++) a += weight(l, h, s0 + i, j); return Math.max(0, 1 - a); };
      image(s, heatURL(k, 1, (i) => shade(rest(i))), BIG.rowW + 2, y0, cell, size);
      const cx = BIG.rowW + 2 + cell / 2;
      text(s, cx, y0 + size + 6, "earlier", { "text-anchor": "end", "dominant-baseline": "central", "font-size": font, class: "lbl axis", transform: `rotate(-90 ${cx} ${y0 + size + 6})` });
    }
    rowLabels(s, BIG.rowW - 4, y0, cell, k, (i) => tokLabel(START + s0 + i, chars), font);
    colLabels(s, x0, y0 + size + 6, cell, k, (j) => tokLabel(START + s0 + j, chars), font);
  }
  const rowSel = el("rect", { x: x0 - 1, y: 0, width: size + 2, height: cell, class: "sel-outline" }, s);
  const hover = el("rect", { x: 0, y: 0, width: cell, height: cell, class: "hover-outline", visibility: "hidden" }, s);
  const n = proj ? k : W;
  s.addEventListener("mousemove", (ev) => {
    const c = cellAt(s, ev, x0, y0, cell, cell, n, n);
    if (!c) { hover.setAttribute("visibility", "hidden"); readout("attn-readout", ""); return; }
    const [i, j] = [c[0] + BIG.s, c[1] + BIG.s];
    hover.setAttribute("x", x0 + c[1] * cell);
    hover.setAttribute("y", y0 + c[0] * cell);
    hover.setAttribute("visibility", "visible");
    const [a, b] = [START + i, START + j];
    readout("attn-readout", proj  // beside the projected map there is room for two short lines
      ? `${short(tokText(a), 6)} → ${short(tokText(b), 6)}: ${j > i ? "masked" : fmt(weight(l, h, i, j))}`
      : j > i
        ? `${where(a)} cannot see ${where(b)}: it comes later (masked).`
        : `${where(a)} → ${where(b)}: weight ${fmt(weight(l, h, i, j))}`);
  });
  s.addEventListener("mouseleave", () => { hover.setAttribute("visibility", "hidden"); readout("attn-readout", ""); });
  s.addEventListener("click", (ev) => { const c = cellAt(s, ev, x0, y0, cell, cell, n, n); if (c) selectToken(START + BIG.s + c[0]); });
  bigBox.replaceChildren(s);
  big = { rowSel };
  document.getElementById("attn-title").textContent = `layer ${l} · head ${h}`;
  document.getElementById("attn-name").textContent = mapName(l, h);
  markBig();
}
function markBig() {
  const i = state.token - START - BIG.s;
  if (i < 0 || i >= BIG.k) { buildBig(); return; }  // projector: the outlined token left the drawn window
  big.rowSel.setAttribute("y", BIG.y0 + i * BIG.cell);
}
// The charts are drawn at their size on screen (labels FONT px): when the card's width changes they are drawn
// again. Watched on the card itself, not the window: the tutorial's panel docking beside the page, or folding,
// narrows or widens the page without resizing the window (the map's labels went down to 8 px beside it).
let resizing = 0;
let laidOutAt = mainCard.clientWidth;
function relayout() {
  cancelAnimationFrame(resizing);
  resizing = requestAnimationFrame(() => {
    if (mainCard.clientWidth === laidOutAt) return;  // a phone's toolbar sliding away changes only the height
    laidOutAt = mainCard.clientWidth;
    buildBig(); buildEmbedding(); markEmbedding(); buildMlp(); markMlp(); buildAttends(); buildResid();
  });
}
if (window.ResizeObserver) new ResizeObserver(relayout).observe(mainCard);
else window.addEventListener("resize", relayout);

function buildAttends() {
  const i = state.token - START;
  const w = (j) => weight(state.layer, state.head, i, j);
  document.getElementById("attends-head-label").textContent = `in layer ${state.layer} · head ${state.head} (${mapName(state.layer, state.head)}), strongest first:`;
  const rows = [];
  let inside = 0;
  for (let j = 0; j <= i; j++) { rows.push([j, w(j)]); inside += w(j); }
  rows.sort((a, b) => b[1] - a[1]);
  const list = document.getElementById("attends-list");
  list.replaceChildren();
  for (const [j, w] of rows.slice(0, 8)) {
    const li = document.createElement("li");
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0.5, w * 100)}%`;
    fill.style.background = viridis(w);
    bar.append(fill);
    const v = document.createElement("span");
    v.className = "w";
    v.textContent = fmt(w);
    const pos = document.createElement("span");
    pos.className = "pos";
    pos.textContent = `#${START + j}`;
    li.append(chip(tokText(START + j), tokens[START + j][0]), pos, bar, v);
    list.append(li);
  }
  const rest = [];
  if (rows.length > 8) rest.push(`${rows.length - 8} more tokens share ${fmt(rows.slice(8).reduce((a, r) => a + r[1], 0))}.`);
  if (START > 0) rest.push(`The ${START} tokens before the window (not drawn) get ${fmt(Math.max(0, 1 - inside))}.`);
  rest.push(`All weights of a row add up to 1.`);
  document.getElementById("attends-outside").textContent = rest.join(" ");
  buildAllHeads(i);
}

// One row per head (every head of a small model; the selected layer's of a COMPACT one).
function buildAllHeads(i) {
  const box = document.getElementById("attends-all");
  const heads = COMPACT ? [...Array(H).keys()].map((h) => [state.layer, h]) : [...Array(L * H).keys()].map((r) => [Math.floor(r / H), r % H]);
  const n = heads.length;
  const cols = i + 1;
  const x0 = Math.ceil(6 * CHAR_W) + 8, y0 = 4, ch = 16;
  const cw = Math.max(2, Math.min(22, (widthOf("attends-all", 360) - x0 - 4) / cols));
  const colH = Math.ceil(11 * CHAR_W) + 8;
  const s = chart(x0 + cols * cw + 4, y0 + n * ch + colH, { label: `Attention of position ${state.token} in every head${COMPACT ? ` of layer ${state.layer}` : ""}`, className: "heat" });
  image(s, heatURL(n, cols, (r, j) => shade(weight(heads[r][0], heads[r][1], i, j)), 256), x0, y0, cols * cw, n * ch);
  heads.forEach(([l, h], r) => {
    text(s, x0 - 4, y0 + r * ch + ch / 2, `L${l} H${h}`, { "text-anchor": "end", "dominant-baseline": "central", "font-size": FONT, class: "lbl" });
  });
  if (!COMPACT) for (let l = 1; l < L; l++) el("line", { x1: 0, x2: x0 + cols * cw, y1: y0 + l * H * ch, y2: y0 + l * H * ch, class: "sep" }, s);
  colLabels(s, x0, y0 + n * ch + 4, cw, cols, (j) => tokLabel(START + j, 11), FONT);
  const sel = heads.findIndex(([l, h]) => l === state.layer && h === state.head);
  el("rect", { x: 1, y: y0 + sel * ch, width: cols * cw + x0 - 1, height: ch, class: "sel-outline" }, s);
  const pick = (ev) => {
    const p = svgPoint(s, ev);
    const r = Math.floor((p.y - y0) / ch);
    return r >= 0 && r < n ? r : null;
  };
  s.addEventListener("mousemove", (ev) => {
    const c = cellAt(s, ev, x0, y0, cw, ch, n, cols);
    if (!c) { readout("attends-readout", ""); return; }
    const [l, h] = heads[c[0]];
    readout("attends-readout", `layer ${l} · head ${h}: ${where(state.token)} → ${where(START + c[1])}: ${fmt(weight(l, h, i, c[1]))}`);
  });
  s.addEventListener("mouseleave", () => readout("attends-readout", ""));
  s.addEventListener("click", (ev) => { const r = pick(ev); if (r !== null) selectHead(...heads[r]); });
  box.replaceChildren(s);
}

// ---- 4. MLP activity -----------------------------------------------------------------------

let MLP = null;
let mlpSel = null;
function buildMlp() {
  const left = Math.ceil(7 * CHAR_W) + 8;
  // rows of 26 px for a few layers; a deep model's rows shrink (never under the labels' 12 px) to keep the chart short
  const rowH = Math.max(13, Math.min(26, Math.floor(420 / L)));
  MLP = { x0: left, y0: 4, cw: Math.max(2, Math.min(30, (widthOf("mlp") - left - 4) / W)), ch: rowH, font: FONT };
  const { x0, y0, cw, ch, font } = MLP;
  const vals = data.mlp.mean_abs;
  const max = data.mlp.max;
  const s = chart(x0 + W * cw + 4, y0 + L * ch + Math.ceil(11 * CHAR_W) + 10, { label: "MLP activity: mean absolute activation per layer and token", className: "heat" });
  image(s, heatURL(L, W, (l, j) => vals[l][j] / max, 512), x0, y0, W * cw, L * ch);
  for (let l = 0; l < L; l++) text(s, x0 - 4, y0 + l * ch + ch / 2, `layer ${l}`, { "text-anchor": "end", "dominant-baseline": "central", "font-size": FONT, class: "lbl" });
  colLabels(s, x0, y0 + L * ch + 4, cw, W, (j) => tokLabel(START + j, 11), font);
  mlpSel = el("rect", { x: 0, y: y0 - 2, width: cw, height: L * ch + 4, class: "sel-outline" }, s);
  s.addEventListener("mousemove", (ev) => {
    const c = cellAt(s, ev, x0, y0, cw, ch, L, W);
    readout("mlp-readout", c ? `${data.mlp.names[c[0]]}, ${where(START + c[1])}: mean |activation| ${fmt(vals[c[0]][c[1]])}` : "");
  });
  s.addEventListener("mouseleave", () => readout("mlp-readout", ""));
  s.addEventListener("click", (ev) => { const c = cellAt(s, ev, x0, y0, cw, ch, L, W); if (c) selectToken(START + c[1]); });
  document.getElementById("mlp").replaceChildren(s);
  legend(document.getElementById("mlp-legend"), viridis, { min: 0, max: fmt(max), label: "mean |activation|" });
}
function markMlp() { mlpSel.setAttribute("x", MLP.x0 + (state.token - START) * MLP.cw); }

// ---- 5. residual-stream norms --------------------------------------------------------------

function buildResid() {
  const norms = data.resid.norm; // [L+1][W]
  const depth = data.resid.names.length;
  const x0 = 48, y0 = 12, h = 200;
  const w = Math.max(200, Math.min(440, widthOf("resid") - x0 - 40));
  const narrow = w < 360;
  const top = Math.max(...norms.flat()) * 1.08;
  const X = (d) => x0 + 24 + (d * (w - 24)) / (depth - 1);
  const Y = (v) => y0 + h - (v / top) * h;
  const s = chart(x0 + w + 40, y0 + h + 44, { label: `Residual-stream norm after each block; selected token ${state.token}`, className: "chart" });
  const tick = Math.pow(10, Math.floor(Math.log10(top / 2)));
  const stepV = top / tick > 8 ? tick * 2 : tick;
  for (let v = 0; v <= top; v += stepV) {
    el("line", { x1: x0, x2: x0 + w, y1: Y(v), y2: Y(v), class: "gridline" }, s);
    text(s, x0 - 6, Y(v), String(Math.round(v * 10) / 10), { "text-anchor": "end", "dominant-baseline": "central", "font-size": FONT, class: "lbl" });
  }
  // the embedding, then a label every `every` depths (as many as fit side by side), and the last layer
  const terse = narrow || depth > 9;
  const every = Math.max(1, Math.ceil(((terse ? 5 : 9) * CHAR_W + 8) / ((w - 24) / (depth - 1))));
  const labelled = [0];
  for (let d = every === 1 ? 1 : 1 + every; d < depth - 1; d += every) labelled.push(d);
  if (labelled.length > 1 && depth - 1 - labelled[labelled.length - 1] < every) labelled.pop();
  labelled.push(depth - 1);
  for (const d of labelled) {
    text(s, X(d), y0 + h + 16, d === 0 ? (terse ? "embed" : "embedding") : (terse ? `L${d - 1}` : `layer ${d - 1}`), { "text-anchor": "middle", "font-size": FONT, class: "lbl" });
  }
  text(s, x0, y0 + h + 36, "L2 norm of the residual stream, after …", { "font-size": FONT, class: "lbl axis" });
  const line = (j) => norms.map((row, d) => `${X(d)},${Y(row[j])}`).join(" ");
  for (let j = 0; j < W; j++) if (START + j !== state.token) el("polyline", { points: line(j), class: "others" }, s);
  const sel = state.token - START;
  el("polyline", { points: line(sel), class: "selected" }, s);
  norms.forEach((row, d) => {
    el("circle", { cx: X(d), cy: Y(row[sel]), r: depth > 12 ? 3 : 4, class: "selected-dot" }, s);
    if (depth <= 12 || d === 0 || d === depth - 1) text(s, X(d), Y(row[sel]) - 9, fmt(row[sel], 1), { "text-anchor": "middle", "font-size": FONT, class: "val" });
  });
  document.getElementById("resid").replaceChildren(s);
  readout("resid-readout", `${where(state.token)}: ` + norms.map((row, d) => `${d === 0 ? "embedding" : "layer " + (d - 1)} ${fmt(row[sel], 2)}`).join(" · "));
}

// ---- 6. logit lens ---------------------------------------------------------------------------

function buildLens() {
  const i = state.token - START;
  const row = data.lens.rows[i];
  const table = document.getElementById("lens-table");
  const cap = document.getElementById("lens-caption");
  cap.replaceChildren(`Top ${row.depths[0].top.length} next tokens at position ${state.token}`);
  if (row.next !== null) {
    const sampled = state.token === view.default_token;
    cap.append(sampled ? "; the last column follows the token the model actually sampled next, " : "; the last column follows the next token in the prompt, ",
      chip(data.labels[row.next], row.next), ".");
  } else cap.append(".");
  const body = document.createElement("tbody");
  row.depths.forEach((d, k) => {
    const tr = document.createElement("tr");
    const final = k === row.depths.length - 1;
    if (final) tr.className = "final";
    const th = document.createElement("th");
    th.scope = "row";
    th.append(k === 0 ? "after the embedding" : `after layer ${k - 1}`);
    if (final) {
      const b = document.createElement("span");
      b.className = "badge";
      b.textContent = "= real output";
      th.append(" ", b);
    }
    const code = document.createElement("code");
    code.textContent = data.lens.depth_names[k];
    th.append(code);
    tr.append(th);
    for (const [id, p] of d.top) {
      const td = document.createElement("td");
      td.dataset.id = id;
      td.dataset.p = p;
      td.append(chip(data.labels[id], id), probBar(p));
      if (row.next !== null && id === row.next) td.classList.add("is-next");
      tr.append(td);
    }
    const nx = document.createElement("td");
    nx.className = "next-col";
    if (d.next === null) nx.textContent = "–";
    else {
      const pv = document.createElement("span");
      pv.className = "p";
      pv.textContent = fmt(d.next);
      const rk = document.createElement("span");
      rk.className = "rank";
      rk.textContent = `rank ${d.next_rank}`;
      nx.append(pv, rk);
    }
    tr.append(nx);
    body.append(tr);
  });
  table.tBodies[0].replaceWith(body);
}
// A probability as text over a bar whose length and viridis colour both follow it.
function probBar(p) {
  const wrap = document.createElement("span");
  wrap.className = "pbar";
  const fill = document.createElement("span");
  fill.style.width = `${Math.max(1, p * 100)}%`;
  fill.style.background = viridis(p);
  const v = document.createElement("span");
  v.className = "p";
  v.textContent = fmt(p);
  wrap.append(fill);
  const frag = document.createDocumentFragment();
  frag.append(v, wrap);
  return frag;
}

// ---- selection -----------------------------------------------------------------------------

function selectToken(pos) {
  if (pos === state.token) return;
  if (pos < START || pos >= END) {
    // Outside the drawn window: reload with a window around it.
    const url = new URL(location.href);
    url.searchParams.set("token", pos);
    location.assign(url);
    return;
  }
  state.token = pos;
  setViewOption("token", pos === view.default_token ? null : pos);
  markStrip();
  markEmbedding();
  markBig();
  buildAttends();
  markMlp();
  buildResid();
  buildLens();
}

function attnLegend() {
  const box = document.getElementById("attn-legend");
  box.replaceChildren();
  legend(box, viridis, state.scale === "log"
    ? { min: `≤${LOG_MIN}`, max: 1, label: "attention weight (log scale)" }
    : { min: 0, max: 1, label: "attention weight" });
  const m = document.createElement("span");
  m.className = "masked-key";
  const more = document.createElement("span");
  more.className = "more";
  more.textContent = " (a later token)";
  m.append("masked", more);
  box.append(m);
}

function selectScale(scale) {
  if (scale === state.scale) return;
  state.scale = scale;
  setViewOption("scale", scale === view.default_scale ? null : scale);
  for (const b of grid.querySelectorAll(".attn-cell")) b.querySelector("img").src = mapURL(Number(b.dataset.layer), Number(b.dataset.head));
  buildBig();
  buildAttends();
  attnLegend();
}
for (const input of document.querySelectorAll('input[name="attn-scale"]')) {
  input.checked = input.value === state.scale;
  input.addEventListener("change", () => { if (input.checked) selectScale(input.value); });
}

let choosing = 0;  // the latest choice: a slower fetch for an earlier one is not applied over it
async function selectHead(l, h) {
  if (l === state.layer && h === state.head) return;
  const ticket = ++choosing;
  if (!maps.has(l)) {
    readout("attn-readout", `Fetching the maps of layer ${l}…`);
    try {
      await ensureLayer(l);
    } catch (err) {
      if (ticket === choosing) readout("attn-readout", `The maps of layer ${l} could not be fetched: ${err.message}.`);
      return;
    }
    if (ticket !== choosing) return;
    readout("attn-readout", "");
  }
  const newLayer = l !== state.layer;
  state.layer = l;
  state.head = h;
  setViewOption("layer", l || null);
  setViewOption("head", h || null);
  if (COMPACT && newLayer) buildGrid();
  markGrid();
  buildBig();
  buildAttends();
}

laidOutAt = mainCard.clientWidth;
buildStrip();
buildEmbedding();
if (COMPACT) buildHeadGrid();
buildGrid();
roving(grid);
attnLegend();
buildBig();
buildMlp();
legend(document.getElementById("lens-legend"), viridis, { min: 0, max: 1, label: "probability" });
markStrip();
markEmbedding();
markGrid();
buildAttends();
markMlp();
buildResid();
buildLens();
// presenter.js adds the class, then its stylesheet: the big map is drawn again once each has come (and when the class goes)
let wasProjector = projector();
const redrawBig = () => { BIG = null; buildBig(); };
new MutationObserver(() => { if (projector() !== wasProjector) { wasProjector = projector(); redrawBig(); } })
  .observe(document.documentElement, { attributes: true, attributeFilter: ["class"] });
new MutationObserver((changes) => {
  for (const c of changes) for (const n of c.addedNodes) if (n.id === "projector-css") n.addEventListener("load", redrawBig);
}).observe(document.head, { childList: true });
// the masked cells are pixels in the scheme's colour (cssColor): a system that turns dark or light draws the maps again
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  mapURLs.linear.length = 0;
  mapURLs.log.length = 0;
  for (const b of grid.querySelectorAll(".attn-cell")) b.querySelector("img").src = mapURL(Number(b.dataset.layer), Number(b.dataset.head));
  redrawBig();
});
