// The caching stage: tick breakpoints, move the simulated clock, and redraw from the server's real runs.
// Every number comes from the server: the page's json_script "caching-data" on load, then, after a change of
// breakpoints, TTL or clock, /learn/caching/data for the new options; its view is bound into the page's own
// markup in place (lib/bind.js). No HTML is fetched.

import { dataUrl, readJSON, setViewOption } from "../stage.js";
import { bind } from "../lib/bind.js";
import { el, svg, text } from "../lib/svg.js";

const $ = (id) => document.getElementById(id);
const boxes = [...document.querySelectorAll("input[data-bp]")];
const ttlSelect = (key) => document.querySelector(`select[data-ttl-for="${CSS.escape(key)}"]`);
const clockInput = $("clock");
let data = readJSON("caching-data");
let ticket = 0;
let timer = null;

// ---- formatting ------------------------------------------------------------------------------------

function money(x, unit) {
  if (unit === "tokens") return `${x.toLocaleString("en-US", { maximumFractionDigits: 0 })} tok`;
  if (x === 0) return "$0";
  const digits = Math.max(2, -Math.floor(Math.log10(Math.abs(x))) + 2);
  return `$${x.toFixed(Math.min(digits, 10))}`;
}

function minutes(m) {
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60), r = m % 60;
  return r ? `${h} h ${r} min` : `${h} h`;
}

// ---- breakpoints -----------------------------------------------------------------------------------

function marked() {
  return boxes.filter((b) => b.checked).map((b) => [b.value, ttlSelect(b.value).value]);
}

// The view options for the ticked boxes: one ttl for all when they agree, else one per breakpoint.
function markOptions() {
  const m = marked();
  if (!m.length) return { bp: "none", ttl: null };
  const ttls = new Set(m.map(([, t]) => t));
  if (ttls.size === 1) {
    const t = [...ttls][0];
    return { bp: m.map(([k]) => k).join(","), ttl: t === data.defaults.ttl ? null : t };
  }
  return { bp: m.map(([k, t]) => `${k}:${t}`).join(","), ttl: null };
}

function syncMarks(count = true) {
  for (const b of boxes) {
    ttlSelect(b.value).disabled = !b.checked;
    b.closest(".ca-turn").classList.toggle("marked", b.checked);
  }
  if (!count) return;  // the server's own words on load
  const n = marked().length;
  const max = Number(document.getElementById("turns").dataset.max || 4);
  $("bp-count").textContent = `${n} breakpoint${n === 1 ? "" : "s"} marked (at most ${max}).`
    + (n > max ? " The API will refuse this request." : "");
}

// ---- fetch the data for new options and bind it in place --------------------------------------------

function targetUrl() {
  const u = new URL(location.href);
  const { bp, ttl } = markOptions();
  u.searchParams.set("bp", bp);
  if (ttl) u.searchParams.set("ttl", ttl); else u.searchParams.delete("ttl");
  const c = Number(clockInput.value);
  if (c === data.defaults.clock) u.searchParams.delete("clock"); else u.searchParams.set("clock", String(c));
  return u;
}

async function refresh() {
  const url = targetUrl();
  const mine = ++ticket;
  document.body.classList.add("ca-loading");
  $("expiry-caption").textContent = `Sending request 2 at ${minutes(Number(clockInput.value))}…`;
  try {
    const d = await fetch(dataUrl(url), { headers: { accept: "application/json" } });
    if (!d.ok) throw new Error(`HTTP ${d.status}`);
    const fresh = (await d.json()).data["caching-data"];
    if (!fresh.view) throw new Error("no results");  // the request cannot run: the page says so on reload
    if (mine !== ticket) return;  // a later change won
    // the main visual (the two requests' usage, its caption and its links), its footnote and the results below
    for (const id of ["ca-main", "timing-note", "cache-results"]) bind($(id), fresh.view);
    data = fresh;
    for (const name of ["bp", "ttl", "clock"]) setViewOption(name, url.searchParams.get(name));
    render();
    document.body.dataset.cachingLoads = String(Number(document.body.dataset.cachingLoads || 0) + 1);
  } catch {
    location.href = url.href;  // the page works without the fetch, just with a reload
  } finally {
    if (mine === ticket) document.body.classList.remove("ca-loading");
  }
}

function later(ms = 250) {
  clearTimeout(timer);
  timer = setTimeout(refresh, ms);
}

for (const b of boxes) b.addEventListener("change", () => { syncMarks(); later(); });
for (const s of document.querySelectorAll("select[data-ttl-for]")) s.addEventListener("change", () => later());

// ---- the clock and the expiry timeline -------------------------------------------------------------

// While the slider moves, predict what the engine will decide (the longest unexpired prefix is read and
// its timer restarts; an expired one is written again); the server's real run replaces the prediction.
function predict(entries, clock) {
  const alive = entries.filter((e) => clock < e.ttl_min);
  const longest = Math.max(-1, ...alive.map((e) => e.length));
  return entries.map((e) => ({ ...e, fate: clock >= e.ttl_min ? "expired" : e.length === longest ? "refreshed" : "kept" }));
}

function niceMax(clock, entries) {
  const ttl = Math.max(5, ...entries.map((e) => e.ttl_min));
  const want = Math.max(clock + Math.min(ttl, 10), entries.length ? ttl + 2 : 0, 15);
  const step = want <= 20 ? 5 : want <= 60 ? 10 : 15;
  return Math.ceil(want / step) * step;
}

function drawTimeline(entries, clock, notes = true) {
  const box = $("timeline");
  if (!box) return;
  const W = Math.max(300, Math.round(box.clientWidth || 600));
  const narrow = W < 520;
  const left = 12, right = 12, top = 34, row = 40, axis = 30;
  const H = top + Math.max(1, entries.length) * row + axis;
  const xmax = niceMax(clock, entries);
  const x = (m) => left + (Math.min(m, xmax) / xmax) * (W - left - right);
  const fig = svg(W, H, { label: `Cache entries over time: request 1 at 0 minutes, request 2 at ${clock} minutes`, className: "ca-tl" });
  fig.setAttribute("height", String(H));

  // axis
  const ay = top + Math.max(1, entries.length) * row + 6;
  el("line", { x1: x(0), x2: x(xmax), y1: ay, y2: ay, class: "axis" }, fig);
  const step = xmax <= 20 ? 5 : xmax <= 60 ? 10 : narrow ? 30 : 15;
  for (let m = 0; m <= xmax; m += step) {
    el("line", { x1: x(m), x2: x(m), y1: ay, y2: ay + 4, class: "axis" }, fig);
    text(fig, x(m), ay + 17, minutes(m), { class: "tick", "text-anchor": m === 0 ? "start" : m === xmax ? "end" : "middle" });
  }

  // the two requests
  for (const [m, label, cls] of [[0, "request 1", "req1"], [clock, "request 2", "req2"]]) {
    el("line", { x1: x(m), x2: x(m), y1: 18, y2: ay, class: `req ${cls}` }, fig);
    const anchor = x(m) > W - 90 ? "end" : m === 0 || x(m) < 90 ? "start" : "middle";
    const low = cls === "req2" && x(clock) - x(0) < 150;  // close to request 1: one line lower, so the labels do not collide
    text(fig, x(m) + (anchor === "start" ? 3 : anchor === "end" ? -3 : 0), low ? 28 : 13, label, { class: `req-label ${cls}`, "text-anchor": anchor });
  }

  if (!entries.length) {
    text(fig, x(0) + 8, top + row / 2 + 4, "nothing was stored", { class: "none" });
  }
  entries.forEach((e, i) => {
    const y = top + i * row;
    const h = 16, by = y + 14;
    text(fig, x(0) + 4, y + 10, `${e.length}-token prefix, ${e.ttl === "1h" ? "1-hour" : "5-minute"} TTL`, { class: "entry-label" });
    if (e.fate === "expired") {
      el("rect", { x: x(0), y: by, width: x(e.ttl_min) - x(0), height: h, rx: 3, class: "life first" }, fig);
      el("line", { x1: x(e.ttl_min), x2: x(e.ttl_min), y1: by - 3, y2: by + h + 3, class: "expiry" }, fig);
      if (x(clock) - x(e.ttl_min) > 60) text(fig, x(e.ttl_min) + 4, by + 12, "expired", { class: "expired-label" });
      el("rect", { x: x(clock), y: by, width: Math.max(2, x(clock + e.ttl_min) - x(clock)), height: h, rx: 3, class: "life again" }, fig);
    } else if (e.fate === "refreshed") {
      el("rect", { x: x(0), y: by, width: Math.max(2, x(clock) - x(0)), height: h, rx: 3, class: "life first" }, fig);
      el("rect", { x: x(clock), y: by, width: Math.max(2, x(clock + e.ttl_min) - x(clock)), height: h, rx: 3, class: "life refreshed" }, fig);
    } else {
      el("rect", { x: x(0), y: by, width: x(e.ttl_min) - x(0), height: h, rx: 3, class: "life first" }, fig);
    }
  });
  box.replaceChildren(fig);

  // a key for the bar colours that are on screen
  const key = document.createElement("p");
  key.className = "ca-tl-key";
  const kinds = [["first", "kept since request 1"], ["refreshed", "timer restarted by a hit"], ["expiry", "expired"],
    ["again", "written again after a miss"]];
  for (const [k, words] of kinds) {
    if (k === "first" && !entries.length) continue;
    if (k === "refreshed" && !entries.some((e) => e.fate === "refreshed")) continue;
    if ((k === "again" || k === "expiry") && !entries.some((e) => e.fate === "expired")) continue;
    const s = document.createElement("span");
    const i = document.createElement("i");
    i.className = `sw ${k}`;
    s.append(i, words);
    key.append(s);
  }
  box.append(key);
  if (notes && entries.length) {  // what became of each entry, in words (the server's)
    const list = document.createElement("ul");
    list.className = "ca-tl-notes";
    for (const e of entries) {
      const li = document.createElement("li");
      const b = document.createElement("strong");
      b.textContent = `${e.length}-token prefix (${e.ttl}):`;
      li.append(b, ` ${e.words}`);
      list.append(li);
    }
    box.append(list);
  }
}

clockInput?.addEventListener("input", () => {
  const c = Number(clockInput.value);
  $("clock-out").textContent = minutes(c);
  drawTimeline(predict(data.entries || [], c), c, false);
});
clockInput?.addEventListener("change", () => later(200));

// ---- break-even: cumulative cost over N requests -----------------------------------------------------

const LINES = [
  ["plain", "without caching", (c, n) => c.plain * n],
  ["cached", "with caching (requests within the TTL)", (c, n) => c.first + (n - 1) * c.hit],
  ["miss", "with caching, every request after expiry", (c, n) => c.first * n],
];

// Round axis steps: 1, 2, 2.5 or 5 times a power of ten.
function niceStep(span, count) {
  const raw = span / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
}

function tickLabel(v, step, unit) {
  if (unit === "tokens") return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (v === 0) return "$0";
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + (step / 10 ** Math.floor(Math.log10(step)) === 2.5 ? 1 : 0));
  return `$${v.toFixed(digits)}`;
}

function panel(costs, unit, nmax, title, crossing, width) {
  const box = document.createElement("figure");
  box.className = "ca-panel";
  const cap = document.createElement("figcaption");
  cap.textContent = title;
  box.append(cap);
  const W = width, H = 220, L = 64, R = 14, T = 12, B = 34;
  const top = Math.max(...LINES.map(([, , f]) => f(costs, nmax))) || 1;
  const step = niceStep(top, 4);
  const ymax = Math.ceil(top / step - 1e-9) * step;
  const x = (n) => L + ((n - 1) / (nmax - 1)) * (W - L - R);
  const y = (v) => T + (1 - v / ymax) * (H - T - B);
  const fig = svg(W, H, { label: `${title}: cumulative cost with and without caching`, className: "ca-even-svg" });
  fig.setAttribute("height", String(H));
  for (let v = 0; v <= ymax + step / 2; v += step) {
    el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: v ? "grid" : "axis" }, fig);
    text(fig, L - 6, y(v) + 4, tickLabel(v, step, unit), { class: "tick", "text-anchor": "end" });
  }
  const ticks = nmax <= 10 ? Array.from({ length: nmax }, (_, i) => i + 1) : [1, 10, 20, 30, 40, 50].filter((n) => n <= nmax);
  for (const n of ticks) {
    el("line", { x1: x(n), x2: x(n), y1: H - B, y2: H - B + 4, class: "axis" }, fig);
    text(fig, x(n), H - B + 17, String(n), { class: "tick", "text-anchor": "middle" });
  }
  text(fig, (L + W - R) / 2, H - 3, "requests sent", { class: "axis-label", "text-anchor": "middle" });
  // each line is straight: every request adds the same cost
  for (const [k, , f] of LINES) {
    const pts = Array.from({ length: nmax }, (_, i) => `${x(i + 1).toFixed(1)},${y(f(costs, i + 1)).toFixed(1)}`).join(" ");
    el("polyline", { points: pts, class: `line ${k}` }, fig);
    if (nmax <= 10) {
      for (let n = 1; n <= nmax; n++) el("circle", { cx: x(n), cy: y(f(costs, n)), r: 3, class: `dot ${k}` }, fig);
    }
  }
  if (crossing && crossing <= nmax) {
    // the lines start low on the left, so the label goes at the top of the plot with a leader down to the point
    const cx = x(crossing), cy = y(costs.plain * crossing);
    el("line", { x1: cx, x2: cx, y1: T + 20, y2: cy - 7, class: "leader" }, fig);
    el("circle", { cx, cy, r: 6, class: "crossing" }, fig);
    text(fig, cx + 6, T + 16, `break-even: ${crossing.toFixed(2)} requests`, { class: "crossing-label", "text-anchor": "start" });
  }
  box.append(fig);
  return box;
}

function drawBreakEven() {
  const holder = $("break-even");
  if (!holder || !data.costs) return;
  const c = data.costs;
  const crossing = data.break_even.cheaper_from ? data.break_even.crossing : null;
  const wrap = document.createElement("div");
  wrap.className = "ca-panels";
  const side = holder.clientWidth >= 640;
  const width = Math.max(260, Math.round(side ? (holder.clientWidth - 24) / 2 : holder.clientWidth || 360));
  wrap.classList.toggle("side", side);
  wrap.append(panel(c, data.unit, 5, "The first 5 requests", crossing, width),
    panel(c, data.unit, data.n_max, `All ${data.n_max} requests`, crossing, width));
  const key = document.createElement("p");
  key.className = "ca-even-key";
  for (const [k, words] of LINES) {
    const s = document.createElement("span");
    const i = document.createElement("i");
    i.className = `ln ${k}`;
    s.append(i, words);
    key.append(s);
  }
  holder.replaceChildren(wrap, key);
}

// ---- everything that depends on the data ------------------------------------------------------------

function render() {
  const wait = $("wait");
  if (wait) wait.hidden = !data.ok;
  if (data.ok) {
    clockInput.value = String(data.clock);
    $("clock-out").textContent = minutes(data.clock);
    $("expiry-caption").textContent = data.caption;
    drawTimeline(data.entries, data.clock);
  }
  drawBreakEven();
}

let width = window.innerWidth;
window.addEventListener("resize", () => {
  if (window.innerWidth === width) return;
  width = window.innerWidth;
  clearTimeout(render.timer);
  render.timer = setTimeout(render, 150);
});

syncMarks(false);
render();
document.body.dataset.cachingReady = "1";
