// The tokenize stage: the context as token spans, a details panel, the vocabulary slider and its
// curve, a BPE merge stepper, prose-vs-code statistics and the image-token estimate.
//
// Data ("tokenize-data", see pages/tokenize.py): for every pre-tokenised chunk, its text and the
// ranks of the merges BPE applies with the whole merge list. With the first N merges BPE makes the
// same merges and stops at the first rank >= N, so the browser re-tokenises any N by replaying
// that prefix. Ids are the model's own: bytes, merges and special tokens are not id ranges, so the
// page gets the byte ids, the merges its chunks replay (rank -> pair, rank -> the id it makes) and
// the special tokens it shows, never a table over the whole vocabulary.
// Text from the scenario is only ever inserted with textContent / setAttribute.

import { readJSON, setViewOption } from "../stage.js";
import { tokenRuns, tokenText, utf8Characters, visibleToken, withJoined } from "../lib/tokens.js";
import { el, svg, text } from "../lib/svg.js";
import { textFigures } from "../lib/figures.js";
import { scrollBehavior } from "../lib/motion.js";

const D = readJSON("tokenize-data");
const $ = (id) => document.getElementById(id);
const NF = new Intl.NumberFormat("en-US");
const fmt = (n) => NF.format(n);
const L = D.n_merges;
const MODEL = D.model_merges;
const enc = new TextEncoder();
const looseUTF8 = new TextDecoder("utf-8");

// ---- the tokenizer's data -----------------------------------------------------------------

const byteOf = new Map(D.byte_ids.map((id, b) => [id, b]));
const rankMade = new Map(); // id -> the lowest shown rank that makes it
for (const [r, id] of Object.entries(D.made)) if (!rankMade.has(id) || Number(r) < rankMade.get(id)) rankMade.set(id, Number(r));
const isSpecial = (id) => Object.hasOwn(D.specials, id);
const rankOf = (id) => (rankMade.has(id) ? rankMade.get(id) : null);
const pair = (rank) => D.pairs[rank];

const bytesCache = new Map();
function tokenBytes(id) {
  if (byteOf.has(id)) return [byteOf.get(id)];
  if (isSpecial(id)) return [...enc.encode(D.specials[id])];
  if (Object.hasOwn(D.bytes_of, id)) return D.bytes_of[id];
  let b = bytesCache.get(id);
  if (!b) {
    const r = rankOf(id);
    const [a, c] = r === null ? [] : pair(r);
    b = r === null ? [] : [...tokenBytes(a), ...tokenBytes(c)];
    bytesCache.set(id, b);
  }
  return b;
}

// One pre-tokenised chunk: states[k] = its tokens after k merges (computed lazily, replaying BPE).
// `extra` (pages/tokenize.py's _chunk_json): template (what the chat template adds), ids (kept as they
// are at every size: a special token), start (not its bytes: an added token), whole ([n, id]: from n
// merges on, one token) and states (every state, where replaying the ranks would not give them).
class Chunk {
  constructor(textValue, ranks, extra = {}) {
    this.text = textValue;
    this.ranks = ranks;
    this.kind = extra.template ? "template" : "text";
    this.fixed = extra.ids || null;
    this.whole = extra.whole || null;
    this.given = Boolean(extra.states);
    this.states = extra.states || [extra.start || [...enc.encode(textValue)].map((b) => D.byte_ids[b])];
  }
  after(k) {
    if (this.given) return this.states[Math.min(k, this.states.length - 1)];
    while (this.states.length <= k) {
      const prev = this.states[this.states.length - 1];
      const r = this.ranks[this.states.length - 1];
      const [a, b] = pair(r);
      const id = D.made[r];
      const next = [];
      for (let i = 0; i < prev.length; i++) {
        if (i + 1 < prev.length && prev[i] === a && prev[i + 1] === b) { next.push(id); i++; } else next.push(prev[i]);
      }
      this.states.push(next);
    }
    return this.states[k];
  }
  stepsWithin(n) { // how many of its merges a vocabulary of n merges allows
    let k = 0;
    while (k < this.ranks.length && this.ranks[k] < n) k++;
    return k;
  }
  tokensAt(n) {
    if (this.fixed) return this.fixed;
    if (this.whole && n >= this.whole[0]) return [this.whole[1]];
    return this.after(this.stepsWithin(n));
  }
}

const toChunk = ([t, r, extra]) => new Chunk(t, r, extra);
const chunks = D.chunks.map(toChunk);
const textChunks = chunks.filter((c) => c.kind === "text"); // the conversation's own text, not the template's
const samples = Object.fromEntries(Object.entries(D.samples).map(([name, cs]) => [name, cs.map(toChunk)]));
const ROLE_LABEL = { system: "system", user: "user", assistant: "assistant", prefill: "assistant (prefill)", reply: "reply starts", template: "template’s own" };

// ---- showing a token ------------------------------------------------------------------------

const hex = (b) => b.toString(16).toUpperCase().padStart(2, "0");

// Printable form of decoded text: the app's one way of showing a token (lib/tokens.js).
const visible = visibleToken;

// The exact text as a quoted string, invisible characters written as \u escapes.
function quoted(str) {
  return JSON.stringify(str).replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (c) => `\\u${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`);
}

const labelCache = new Map();
function tokenInfo(id) {
  let info = labelCache.get(id);
  if (info) return info;
  const bytes = tokenBytes(id);
  if (isSpecial(id)) {
    info = { bytes, label: D.specials[id], text: D.specials[id], partial: false };
  } else {
    // a byte that is not part of a whole character in the token is shown ‹E4› (lib/tokens.js tokenText)
    const partial = utf8Characters(bytes).some(([, , ch]) => ch === null);
    info = { bytes, label: visible(tokenText(bytes)), text: partial ? null : looseUTF8.decode(new Uint8Array(bytes)), partial };
  }
  labelCache.set(id, info);
  return info;
}

// The native tooltip on hover; the details panel (click, tap, keyboard) says the same and more.
function hoverText(id) {
  const info = tokenInfo(id);
  const r = rankOf(id);
  const kind = isSpecial(id) ? "special token" : byteOf.has(id) ? "byte" : r === null ? "token of the vocabulary" : `merge rank ${fmt(r)}`;
  const txt = info.partial ? "part of a character" : quoted(info.text);
  return `id ${id} · ${kind} · bytes ${info.bytes.map(hex).join(" ")} · ${txt}`;
}

// For each of `ids`, the characters a run of byte tokens ending there makes (null elsewhere): shown once,
// after the run (lib/tokens.js tokenRuns, joinedMark), as on every stage.
const joinsOf = (ids) => tokenRuns(ids.map(tokenBytes)).map((r) => r.joins);
// inside the listbox only options speak: the token's own label says what its run makes
const joined = (chipEl, joins) => withJoined(chipEl, joins, { hidden: true });

function chip(id, { index = null, small = false, template = false } = {}) {
  const info = tokenInfo(id);
  const span = document.createElement("span");
  span.className = "tk" + (isSpecial(id) ? " special" : template ? " template" : "") + (info.partial ? " partial" : "") + (small ? " small" : "");
  if (index !== null && !isSpecial(id)) span.style.setProperty("--hue", String(Math.round((index * 137.508) % 360)));
  span.textContent = info.label;
  return span;
}

// ---- state ----------------------------------------------------------------------------------

const state = {
  merges: D.sel.merges,
  token: D.sel.token ?? 0,
  word: D.sel.word,
  merge: D.sel.merge,
};
let tokens = []; // [{id, part, chunk}] for the current vocabulary

function contextTokens(n) {
  const out = [];
  D.parts.forEach(([role, open, first, end, close], p) => {
    if (open !== null) out.push({ id: open, part: p, chunk: null, key: `${p}:open` });
    for (let c = first; c < end; c++) {
      let off = 0;
      const template = chunks[c].kind !== "text";
      for (const id of chunks[c].tokensAt(n)) {
        const len = tokenBytes(id).length;
        out.push({ id, part: p, chunk: c, off, len, template });
        off += len;
      }
    }
    if (close !== null) out.push({ id: close, part: p, chunk: null, key: `${p}:close` });
  });
  return out;
}

// After re-tokenising, the token that now covers the same place in the text as `old` did.
function samePlace(old, list) {
  if (!old) return 0;
  const i = list.findIndex((t) => (old.key ? t.key === old.key : t.chunk === old.chunk && t.off <= old.off && old.off < t.off + t.len));
  return i < 0 ? 0 : i;
}

// ---- the strip and the details panel --------------------------------------------------------

const strip = $("strip");
const detail = $("detail");

function renderStrip() {
  if (!strip) return;
  const old = tokens[state.token];
  const fresh = contextTokens(state.merges);
  if (old) {
    const at = samePlace(old, fresh);
    if (at !== state.token) { state.token = at; setViewOption("token", at); }
  }
  tokens = fresh;
  if (state.token >= tokens.length) state.token = Math.max(0, tokens.length - 1);
  const frag = document.createDocumentFragment();
  let group = null;
  let part = -1;
  const joins = joinsOf(tokens.map((t) => t.id));
  tokens.forEach((t, i) => {
    if (t.part !== part) {
      part = t.part;
      const role = D.parts[part][0];
      const turn = document.createElement("div");
      turn.className = `tk-turn role-${role}`;
      const tag = document.createElement("span");
      tag.className = "tk-role";
      tag.setAttribute("aria-hidden", "true");
      tag.textContent = ROLE_LABEL[role];
      group = document.createElement("div");
      group.className = "tk-group";
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", `${ROLE_LABEL[role]} turn`);
      turn.append(tag, group);
      frag.append(turn);
    }
    const span = chip(t.id, { index: i, template: t.template });
    span.id = `tok-${i}`;
    span.dataset.i = String(i);
    span.dataset.id = String(t.id); // drawn under the token's text (CSS), and in the list of ids below
    span.setAttribute("role", "option");
    span.setAttribute("aria-selected", i === state.token ? "true" : "false");
    span.setAttribute("aria-label", `${tokenInfo(t.id).label}, id ${t.id}${joins[i] ? `, completes ${joins[i]}` : ""}`);
    span.title = hoverText(t.id);
    span.tabIndex = i === state.token ? 0 : -1;
    group.append(joined(span, joins[i]));
    const info = tokenInfo(t.id);
    if (!isSpecial(t.id) && info.text !== null && info.text.includes("\n")) {
      const br = document.createElement("span");
      br.className = "tk-break";
      br.setAttribute("aria-hidden", "true");
      group.append(br);
    }
  });
  strip.replaceChildren(frag);
  renderIds();
  renderDetail();
}

// The whole list of ids the model receives, as one array; the selected token's id is marked.
const idList = $("ids");
function renderIds() {
  if (!idList) return;
  const frag = document.createDocumentFragment();
  frag.append("[");
  tokens.forEach((t, i) => {
    const span = document.createElement("span");
    span.textContent = String(t.id);
    span.dataset.i = String(i);
    if (isSpecial(t.id)) span.className = "special";
    frag.append(span, i < tokens.length - 1 ? ", " : "");
  });
  frag.append("]");
  idList.replaceChildren(frag);
  markId();
  for (const c of document.querySelectorAll("[data-ids-count]")) c.textContent = fmt(tokens.length);
}

function markId() {
  if (!idList) return;
  for (const old of idList.querySelectorAll(".sel")) old.classList.remove("sel");
  const cur = idList.querySelector(`[data-i="${state.token}"]`);
  if (cur) cur.classList.add("sel");
}

function row(dl, term, value, cls = "") {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  if (value instanceof Node) dd.append(value); else dd.textContent = value;
  if (cls) dd.className = cls;
  dl.append(dt, dd);
  return dd;
}

function renderDetail() {
  if (!detail) return;
  const t = tokens[state.token];
  detail.replaceChildren();
  if (!t) return;
  const info = tokenInfo(t.id);
  const h = document.createElement("h3");
  h.textContent = `Token at position ${fmt(state.token)}`;
  const where = document.createElement("p");
  where.className = "hint";
  where.textContent = `of positions 0–${fmt(tokens.length - 1)}, in the ${ROLE_LABEL[D.parts[t.part][0]]} turn`;
  const big = chip(t.id, { index: state.token, template: t.template });
  big.classList.add("big");
  const dl = document.createElement("dl");
  dl.className = "tk-facts";
  const idv = document.createElement("strong");
  idv.textContent = String(t.id);
  idv.dataset.detailId = "";
  row(dl, "id", idv);
  const r = rankOf(t.id);
  if (isSpecial(t.id)) {
    row(dl, "kind", "special token of the chat template (never made from text)");
  } else if (byteOf.has(t.id)) {
    row(dl, "kind", `byte (0x${hex(byteOf.get(t.id))}): one of the 256 base tokens`);
  } else if (r === null) {
    row(dl, "kind", "a token of the vocabulary that the model takes whole, without merging");
  } else {
    const [a, b] = pair(r);
    const made = document.createElement("span");
    made.append(`merge rank ${fmt(r)}: `, chip(a, { small: true }), " + ", chip(b, { small: true }));
    row(dl, "kind", made).dataset.rank = String(r);
    if (r >= MODEL) row(dl, "note", `Not in the model’s vocabulary: it uses only the first ${fmt(MODEL)} merges.`, "warn");
  }
  row(dl, "bytes", info.bytes.map(hex).join(" ") + ` (${info.bytes.length} byte${info.bytes.length === 1 ? "" : "s"})`, "mono");
  if (info.partial) {
    row(dl, "text", "not text on its own: part of a UTF-8 character that continues in a neighbouring token");
  } else {
    const code = document.createElement("code");
    code.className = "tk-true";
    code.textContent = quoted(info.text);
    row(dl, "text", code);
  }
  if (t.template && !isSpecial(t.id)) row(dl, "from", "the chat template’s own text, not the conversation’s");
  detail.append(h, where, big, dl);
  if (t.chunk !== null && chunks[t.chunk].ranks.length && !chunks[t.chunk].fixed && wordSelect) {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "button small";
    btn.textContent = "Step through this chunk’s merges";
    btn.addEventListener("click", () => {
      chooseWord(t.chunk);
      $("bpe-h").scrollIntoView({ behavior: scrollBehavior(), block: "start" });
      $("merge-next").focus({ preventScroll: true });
    });
    detail.append(btn);
  }
}

// On a phone the page opens on the tokens and their ids; the details panel waits for a tap (unless the
// link names a token).
if (detail && matchMedia("(max-width: 800px)").matches && !new URL(location.href).searchParams.has("token")) {
  detail.classList.add("waiting");
}

function selectToken(i, { focus = false } = {}) {
  if (!tokens.length) return;
  if (detail) detail.classList.remove("waiting");
  i = Math.max(0, Math.min(tokens.length - 1, i));
  const old = strip.querySelector(`#tok-${state.token}`);
  if (old) { old.setAttribute("aria-selected", "false"); old.tabIndex = -1; }
  state.token = i;
  const cur = strip.querySelector(`#tok-${i}`);
  if (cur) {
    cur.setAttribute("aria-selected", "true");
    cur.tabIndex = 0;
    if (focus) cur.focus();
  }
  setViewOption("token", i);
  markId();
  renderDetail();
}

if (strip) {
  strip.addEventListener("click", (e) => {
    const t = e.target.closest("[data-i]");
    if (t) selectToken(Number(t.dataset.i), { focus: true });
  });
  strip.addEventListener("keydown", (e) => {
    const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: -Infinity, End: Infinity, PageDown: 20, PageUp: -20 };
    if (!(e.key in moves)) return;
    e.preventDefault(); // also keeps stage.js from leaving the page on ←/→
    const d = moves[e.key];
    const to = d === -Infinity ? 0 : d === Infinity ? tokens.length - 1 : state.token + d;
    selectToken(to, { focus: true });
  });
}

// ---- vocabulary slider and the tokens-vs-N curve --------------------------------------------

const range = $("vocab-range");
const toPos = (n) => Math.round((1000 * Math.log1p(n)) / Math.log1p(L));
const fromPos = (p) => Math.max(0, Math.min(L, Math.round(Math.expm1((p / 1000) * Math.log1p(L)))));
const curveBox = $("curve");
let curveMarker = null;

function drawCurve() {
  if (!curveBox || !D.curve.length) return;
  const W = Math.round(Math.max(300, Math.min(620, curveBox.clientWidth || 560)));
  const H = 250, m = { l: 52, r: 14, t: 22, b: 44 };
  const maxY = Math.max(...D.curve.map((p) => p[1]));
  const x = (n) => m.l + (Math.log1p(n) / Math.log1p(L)) * (W - m.l - m.r);
  const y = (c) => H - m.b - (c / maxY) * (H - m.t - m.b);
  const s = svg(W, H, { label: `Tokens in this context for vocabulary sizes from 0 to ${fmt(L)} merges`, className: "tk-svg" });
  const axis = el("g", { class: "axis" }, s);
  el("line", { x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b }, axis);
  el("line", { x1: m.l, y1: m.t, x2: m.l, y2: H - m.b }, axis);
  const ticks = [0, 10, 100, 1000, 10000].filter((v) => v < L && x(L) - x(v) > 44).concat([L]);
  for (const n of ticks) {
    el("line", { x1: x(n), y1: H - m.b, x2: x(n), y2: H - m.b + 4 }, axis);
    text(axis, x(n), H - m.b + 17, fmt(n), { "text-anchor": n === L ? "end" : "middle" });
  }
  text(axis, (m.l + W - m.r) / 2, H - 6, "merges used (log scale)", { "text-anchor": "middle", class: "axis-title" });
  const step = niceStep(maxY / 4);
  for (let v = 0; v <= maxY; v += step) {
    el("line", { x1: m.l - 4, y1: y(v), x2: W - m.r, y2: y(v), class: v ? "grid" : "" }, axis);
    text(axis, m.l - 8, y(v) + 4, fmt(v), { "text-anchor": "end" });
  }
  text(axis, 14, (m.t + H - m.b) / 2, "tokens", { "text-anchor": "middle", class: "axis-title", transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})` });
  el("polyline", { points: D.curve.map(([n, c]) => `${x(n)},${y(c)}`).join(" "), class: "curve" }, s);
  for (const [n, c] of D.curve) {
    const dot = el("circle", { cx: x(n), cy: y(c), r: n === MODEL ? 6 : 3.5, class: n === MODEL ? "dot model" : "dot", "data-n": n, "data-count": c }, s);
    el("title", {}, dot).textContent = `${fmt(n)} merges: ${fmt(c)} tokens${n === MODEL ? " (the model's setting)" : ""}`;
    if (n === MODEL) {
      const left = x(n) > W * 0.6;
      text(s, x(n) + (left ? -10 : 10), y(c) - 10, `the model: ${fmt(c)} tokens`, { class: "model-label", "text-anchor": left ? "end" : "start" });
    }
  }
  curveMarker = el("g", { class: "marker" }, s);
  curveBox.replaceChildren(s);
  curveBox._scale = { x, y, W, H, m };
}

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  return [1, 2, 5, 10].map((k) => k * p).find((v) => v >= raw) || p * 10;
}

function moveMarker(count) {
  if (!curveMarker) return;
  const { x, y, W, H, m } = curveBox._scale;
  curveMarker.replaceChildren();
  const n = state.merges;
  el("line", { x1: x(n), y1: y(count), x2: x(n), y2: H - m.b }, curveMarker);
  el("circle", { cx: x(n), cy: y(count), r: 5 }, curveMarker);
  if (n !== MODEL) { // at the model's setting its own label says it
    const right = x(n) > W * 0.6;
    text(curveMarker, x(n) + (right ? -9 : 9), y(count) + 20, `${fmt(n)} merges → ${fmt(count)}`, { "text-anchor": right ? "end" : "start" });
  }
  curveMarker.setAttribute("data-n", String(n));
  curveMarker.setAttribute("data-count", String(count));
}

function setMerges(n, { fromSlider = false } = {}) {
  state.merges = n;
  if (range && !fromSlider) range.value = String(toPos(n));
  setViewOption("merges", n === MODEL ? null : n);
  renderStrip();
  const count = tokens.length;
  for (const o of document.querySelectorAll("[data-merges]")) o.textContent = fmt(n);
  const out = $("vocab-out");
  if (out) out.textContent = fmt(n);
  const v = document.querySelector("[data-vocab]");
  if (v) v.textContent = fmt(D.base + n);
  const shown = document.querySelector("[data-shown]");
  if (shown) shown.textContent = fmt(count);
  const banner = $("vocab-banner");
  if (banner) {
    banner.replaceChildren();
    if (n !== MODEL) {
      banner.append(`Shown with ${fmt(n)} merges, a vocabulary of ${fmt(D.base + n)}: ${fmt(count)} tokens. The model itself uses ${fmt(MODEL)} merges (${fmt(D.model_tokens)} tokens). `);
      const back = document.createElement("button");
      back.type = "button";
      back.className = "button small";
      back.textContent = "Back to the model’s vocabulary";
      back.addEventListener("click", () => setMerges(MODEL));
      banner.append(back);
    }
    banner.hidden = n === MODEL;
  }
  moveMarker(count);
  renderStats();
  renderStepper();
}

if (range) {
  range.value = String(toPos(state.merges));
  range.setAttribute("aria-valuetext", `${fmt(state.merges)} merges`);
  let pending = false;
  range.addEventListener("input", () => {
    const n = fromPos(Number(range.value));
    range.setAttribute("aria-valuetext", `${fmt(n)} merges`);
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; setMerges(fromPos(Number(range.value)), { fromSlider: true }); });
  });
  const mark = $("model-mark");
  if (mark) mark.style.setProperty("--at", String(toPos(MODEL) / 1000));
}
for (const b of document.querySelectorAll("[data-merges-set]")) {
  b.addEventListener("click", () => setMerges(Number(b.dataset.mergesSet)));
}

// ---- statistics: this context, prose and code -----------------------------------------------

// The counts come from lib/figures.js, the browser's copy of the server's figures module.
function stats(cs, n) {
  const all = cs.map((c) => c.text).join("");
  return textFigures(all, cs.reduce((sum, c) => sum + c.tokensAt(n).length, 0));
}

function renderStats() {
  const sets = { context: textChunks, ...samples };
  for (const box of document.querySelectorAll(".tk-stat[data-sample]")) {
    const cs = sets[box.dataset.sample];
    if (!cs) continue;
    const st = stats(cs, state.merges);
    for (const [k, v] of Object.entries(st)) {
      const dd = box.querySelector(`[data-stat="${k}"]`);
      if (dd) dd.textContent = v === null ? "–" : fmt(v);
    }
    const sampleStrip = box.querySelector("[data-sample-strip]");
    if (sampleStrip) {
      const frag = document.createDocumentFragment();
      let i = 0;
      const ids = cs.flatMap((c) => c.tokensAt(state.merges));
      const joins = joinsOf(ids);
      for (const c of cs) {
        for (const id of c.tokensAt(state.merges)) {
          frag.append(joined(chip(id, { index: i, small: true }), joins[i]));
          i++;
          if (tokenInfo(id).text?.includes("\n")) {
            const br = document.createElement("span");
            br.className = "tk-break";
            frag.append(br);
          }
        }
      }
      sampleStrip.replaceChildren(frag);
    }
  }
}

// ---- the merge stepper ----------------------------------------------------------------------

const wordSelect = $("word-select");
const pieces = $("bpe-pieces");
const what = $("bpe-what");
const trace = $("bpe-trace");
const pos = $("merge-pos");

function chooseWord(ci) {
  state.word = ci;
  state.merge = 0;
  if (wordSelect) {
    if (![...wordSelect.options].some((o) => Number(o.value) === ci)) {
      const o = document.createElement("option");
      o.value = String(ci);
      o.textContent = `${visible(chunks[ci].text)} (${chunks[ci].ranks.length} merges)`;
      wordSelect.prepend(o);
    }
    wordSelect.value = String(ci);
  }
  setViewOption("word", ci);
  setViewOption("merge", null);
  renderStepper();
}

function setStep(k) {
  const c = chunks[state.word];
  state.merge = Math.max(0, Math.min(c.ranks.length, k));
  setViewOption("merge", state.merge || null);
  renderStepper();
}

function renderStepper() {
  if (!pieces || state.word === null || state.word === undefined) return;
  const c = chunks[state.word];
  const k = state.merge;
  const S = c.ranks.length;
  const within = c.stepsWithin(state.merges);
  const made = k > 0 ? D.made[c.ranks[k - 1]] : null;
  const frag = document.createDocumentFragment();
  const joins = joinsOf(c.after(k));
  c.after(k).forEach((id, i) => {
    const ch = chip(id, { index: i });
    if (id === made) ch.classList.add("just-made");
    frag.append(withJoined(ch, joins[i]));
  });
  pieces.replaceChildren(frag);
  pieces.dataset.count = String(c.after(k).length);

  what.replaceChildren();
  if (k === 0) {
    what.append(`“${visible(c.text)}” starts as ${fmt(c.after(0).length)} bytes, one token each. `);
    what.append(S ? "Press Next to apply the first merge." : "No merge in the list applies to it.");
  } else {
    const r = c.ranks[k - 1];
    const [a, b] = pair(r);
    what.append(`Merge ${k} of ${S}: `, chip(a, { small: true }), " + ", chip(b, { small: true }), " → ", chip(made, { small: true }),
      ` (rank ${fmt(r)}, new id ${made}).`);
    if (r >= state.merges) {
      const warn = document.createElement("strong");
      warn.className = "warn";
      warn.textContent = ` Past a vocabulary of ${fmt(state.merges)} merges: BPE would have stopped after merge ${within}.`;
      what.append(warn);
    }
  }
  if (c.whole && k === S) {
    what.append(" The model’s tokenizer skips these merges: the whole chunk is one token of its vocabulary, ",
      chip(c.whole[1], { small: true }), ` (id ${c.whole[1]}).`);
  }
  pos.textContent = `Step ${k} of ${S} · ${fmt(c.after(k).length)} pieces`;
  $("merge-prev").disabled = k === 0;
  $("merge-next").disabled = k === S;

  const items = document.createDocumentFragment();
  const start = document.createElement("li");
  start.append(stepButton(0, `bytes (${c.after(0).length})`));
  if (k === 0) start.classList.add("current");
  items.append(start);
  for (let s = 1; s <= S; s++) {
    const r = c.ranks[s - 1];
    if (s - 1 === within) {
      const stop = document.createElement("li");
      stop.className = "stop";
      stop.textContent = `— a vocabulary of ${fmt(state.merges)} merges stops here —`;
      items.append(stop);
    }
    const li = document.createElement("li");
    const [a, b] = pair(r);
    const btn = stepButton(s, "");
    btn.append(`rank ${fmt(r)}: `, chip(a, { small: true }), "+", chip(b, { small: true }));
    li.append(btn);
    if (s === k) li.classList.add("current");
    if (r >= state.merges) li.classList.add("beyond");
    items.append(li);
  }
  trace.replaceChildren(items);
}

function stepButton(s, label) {
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "tk-step";
  btn.textContent = label;
  btn.addEventListener("click", () => setStep(s));
  return btn;
}

if (wordSelect) wordSelect.addEventListener("change", () => chooseWord(Number(wordSelect.value)));
$("merge-prev")?.addEventListener("click", () => setStep(state.merge - 1));
$("merge-next")?.addEventListener("click", () => setStep(state.merge + 1));

// ---- image tokens ---------------------------------------------------------------------------

const MAX_EDGE = 1568;
const MAX_IMAGE_TOKENS = 1600;
const PX_PER_TOKEN = 750;

function renderImage() {
  const out = $("img-result");
  const w = Number($("img-w").value), h = Number($("img-h").value);
  out.replaceChildren();
  const ok = (v) => Number.isInteger(v) && v >= 1 && v <= 8000;
  if (!ok(w) || !ok(h)) {
    row(out, "estimate", "Enter whole numbers from 1 to 8000: the API rejects larger images.", "warn");
    return;
  }
  setViewOption("img_w", w === 1920 ? null : w);
  setViewOption("img_h", h === 1080 ? null : h);
  const raw = (w * h) / PX_PER_TOKEN;
  const s = Math.min(1, MAX_EDGE / Math.max(w, h), Math.sqrt((MAX_IMAGE_TOKENS * PX_PER_TOKEN) / (w * h)));
  const w2 = Math.max(1, Math.floor(w * s)), h2 = Math.max(1, Math.floor(h * s));
  const est = Math.ceil((w2 * h2) / PX_PER_TOKEN);
  row(out, "as sent", `${fmt(w)} × ${fmt(h)} / 750 ≈ ${fmt(Math.ceil(raw))} tokens`);
  if (s < 1) {
    row(out, "scaled first to", `about ${fmt(w2)} × ${fmt(h2)} px`);
  } else {
    row(out, "scaling", "none: already within the limits");
  }
  const strong = document.createElement("strong");
  strong.textContent = `≈ ${fmt(est)} tokens`;
  strong.dataset.imageTokens = String(est);
  row(out, "estimate", strong);
  const prose = stats(samples.prose, MODEL);
  if (prose.chars_per_token) {
    row(out, "as many tokens as", `about ${fmt(Math.round((est * prose.chars_per_token) / 100) * 100)} characters of the prose sample, with ${D.model}’s tokenizer`);
  }
}

for (const id of ["img-w", "img-h"]) $(id)?.addEventListener("input", renderImage);
$("img-form")?.addEventListener("submit", (e) => e.preventDefault());

// ---- start ----------------------------------------------------------------------------------

drawCurve();
setMerges(state.merges);
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { drawCurve(); moveMarker(tokens.length); }, 150);
});
if ($("img-result")) renderImage();
