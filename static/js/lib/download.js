// "Download PNG / SVG" for every chart on a stage page, for slides and notes.
//
// A chart is an <svg> (not one nested in another, not an icon inside a link or button) or a
// <canvas> inside <main>. Each gets a small disclosure control right after it. Charts drawn later
// (after a Send, a changed option) are found by a MutationObserver; a chart can opt out with
// data-no-download and name its file with data-chart-name (on the chart or its figure).
//
// The SVG file carries the page's computed styles inline (CSS variables resolved), a background,
// a <title> and a <desc> with the link it came from, so it looks the same in a slide deck as here.
// The PNG is that SVG drawn into a canvas at twice its size on screen.

const SVG_NS = "http://www.w3.org/2000/svg";
const XMLNS_NS = "http://www.w3.org/2000/xmlns/";
const XLINK_NS = "http://www.w3.org/1999/xlink";
const PNG_SCALE = 2;
const MAX_PNG_SIDE = 8192;

// [property, value outside any page (null: always written on the root), inherited]
const PROPS = [
  ["fill", "rgb(0, 0, 0)", true], ["fill-opacity", "1", true], ["fill-rule", "nonzero", true],
  ["stroke", "none", true], ["stroke-width", "1px", true], ["stroke-opacity", "1", true],
  ["stroke-dasharray", "none", true], ["stroke-dashoffset", "0px", true],
  ["stroke-linecap", "butt", true], ["stroke-linejoin", "miter", true],
  ["font-family", null, true], ["font-size", null, true], ["font-weight", "400", true], ["font-style", "normal", true],
  ["text-anchor", "start", true], ["dominant-baseline", "auto", true], ["letter-spacing", "normal", true],
  ["paint-order", "normal", true], ["visibility", "visible", true],
  ["shape-rendering", "auto", true], ["image-rendering", "auto", true],
  ["opacity", "1", false], ["display", "inline", false], ["stop-color", "rgb(0, 0, 0)", false], ["stop-opacity", "1", false],
];
const NOT_DRAWN = new Set(["title", "desc", "metadata", "script", "style"]);

const stageSlug = () => document.body.dataset.stage || location.pathname.split("/").filter(Boolean).pop() || "chart";

function slugify(s, max = 48) {
  let out = s.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  if (out.length > max) out = out.slice(0, max).replace(/-[^-]*$/, "");
  return out;
}

export function isChart(node) {
  if (!node || !(node instanceof Element) || node.hasAttribute("data-no-download")) return false;
  const tag = node.localName;
  if (tag !== "svg" && tag !== "canvas") return false;
  if (!node.closest("main") || node.closest("a, button, summary, label, .chart-dl, [data-no-download]")) return false;
  if (tag === "svg" && node.parentElement && node.parentElement.closest("svg")) return false;
  if (tag === "canvas" && !(node.width && node.height)) return false;
  const r = node.getBoundingClientRect();
  // An icon is not a chart; a chart hidden for now (a closed panel) still gets its control.
  return !(r.width && r.height && r.width < 48 && r.height < 48);
}

export function charts(root = document) {
  return [...root.querySelectorAll(root === document ? "main svg, main canvas" : "svg, canvas")].filter(isChart);
}

function titleOf(chart) {
  const t = chart.localName === "svg" && chart.querySelector(":scope > title");
  const fig = chart.closest("figure");
  const cap = fig && fig.querySelector("figcaption");
  return ((t && t.textContent) || chart.getAttribute("aria-label") || (cap && cap.textContent) || "").trim().replace(/\s+/g, " ");
}

function baseName(chart) {
  const named = chart.closest("[data-chart-name]");
  if (named) return slugify(named.dataset.chartName) || "chart";
  const fromTitle = slugify(titleOf(chart).split(/[:;]/)[0]);
  if (fromTitle) return fromTitle;
  const withId = chart.parentElement && chart.parentElement.closest("[id]");
  return (withId && slugify(withId.id)) || "chart";
}

// "<stage>-<chart>", numbered when two charts on the page would get the same name.
export function chartFileName(chart) {
  const base = baseName(chart);
  const same = charts().filter((c) => baseName(c) === base);
  const n = same.indexOf(chart);
  return `${stageSlug()}-${base}${same.length > 1 && n > 0 ? `-${n + 1}` : ""}`;
}

function backgroundOf(node) {
  for (let n = node; n && n.nodeType === 1; n = n.parentElement) {
    const bg = getComputedStyle(n).backgroundColor;
    if (bg && bg !== "transparent" && !/rgba\(.*,\s*0\)$/.test(bg)) return bg;
  }
  return "rgb(255, 255, 255)";
}

function sourceLink() {
  const u = new URL(location.href);
  u.searchParams.delete("embed");
  return u.href;
}

// Inline every property that differs from what the element would get outside this page.
function inlineStyles(orig, clone, parentStyle) {
  const cs = getComputedStyle(orig);
  const decl = [];
  for (const [name, initial, inherited] of PROPS) {
    const v = cs.getPropertyValue(name);
    if (!v) continue;
    if (name === "display" && v !== "none") continue;  // only "none" means anything inside an SVG file
    const outside = inherited && parentStyle ? parentStyle.getPropertyValue(name) : initial;
    // A presentation attribute may hold something only this page understands (var(--x)): always restate it.
    if (v !== outside || clone.hasAttribute(name)) decl.push(`${name}:${v}`);
  }
  if (decl.length) clone.setAttribute("style", decl.join(";")); else clone.removeAttribute("style");
  const kids = [...orig.children], cloneKids = [...clone.children];
  kids.forEach((k, i) => {
    if (NOT_DRAWN.has(k.localName)) { cloneKids[i].removeAttribute("style"); return; }
    inlineStyles(k, cloneKids[i], cs);
  });
}

async function toDataURL(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(blob);
  });
}

// Images referenced by address would not load inside a standalone file: put their bytes in.
async function inlineImages(svgEl) {
  for (const img of svgEl.querySelectorAll("image")) {
    const href = img.getAttribute("href") || img.getAttributeNS(XLINK_NS, "href");
    if (!href || href.startsWith("data:")) continue;
    const r = await fetch(new URL(href, location.href));
    if (!r.ok) throw new Error(`could not read ${href}`);
    img.setAttribute("href", await toDataURL(await r.blob()));
    img.removeAttributeNS(XLINK_NS, "href");
  }
}

function size(chart) {
  const r = chart.getBoundingClientRect();
  let w = r.width, h = r.height;
  const vb = chart.localName === "svg" && chart.viewBox && chart.viewBox.baseVal;
  if ((!w || !h) && vb && vb.width) { w = vb.width; h = vb.height; }
  if ((!w || !h) && chart.localName === "canvas") { w = chart.width; h = chart.height; }
  return { w: Math.max(1, Math.round(w)), h: Math.max(1, Math.round(h)) };
}

function headOf(svgEl, title, bg, box) {
  const doc = svgEl.ownerDocument;
  for (const old of svgEl.querySelectorAll(":scope > title, :scope > desc")) old.remove();
  const t = doc.createElementNS(SVG_NS, "title");
  t.textContent = title;
  const d = doc.createElementNS(SVG_NS, "desc");
  d.textContent = `From the Lifecycle Explainer (${stageSlug()} stage): ${sourceLink()}`;
  const rect = doc.createElementNS(SVG_NS, "rect");
  for (const [k, v] of Object.entries({ x: box.x, y: box.y, width: box.width, height: box.height, fill: bg })) rect.setAttribute(k, String(v));
  svgEl.prepend(t, d, rect);
}

// The chart as a standalone SVG document (a string) and its size on screen.
export async function serializeChart(chart) {
  const { w, h } = size(chart);
  const title = titleOf(chart) || `${stageSlug()} chart`;
  const bg = backgroundOf(chart);
  let out;
  if (chart.localName === "canvas") {
    out = document.createElementNS(SVG_NS, "svg");
    out.setAttribute("viewBox", `0 0 ${chart.width} ${chart.height}`);
    const img = document.createElementNS(SVG_NS, "image");
    for (const [k, v] of Object.entries({ width: chart.width, height: chart.height, href: chart.toDataURL("image/png") })) img.setAttribute(k, String(v));
    out.append(img);
    headOf(out, title, bg, { x: 0, y: 0, width: chart.width, height: chart.height });
  } else {
    out = chart.cloneNode(true);
    inlineStyles(chart, out, null);
    const vb = chart.viewBox && chart.viewBox.baseVal;
    const box = vb && vb.width ? { x: vb.x, y: vb.y, width: vb.width, height: vb.height } : { x: 0, y: 0, width: w, height: h };
    if (!out.hasAttribute("viewBox")) out.setAttribute("viewBox", `${box.x} ${box.y} ${box.width} ${box.height}`);
    headOf(out, title, bg, box);
    await inlineImages(out);
  }
  out.setAttributeNS(XMLNS_NS, "xmlns", SVG_NS);
  if (out.querySelector("[*|href]:not([href])")) out.setAttributeNS(XMLNS_NS, "xmlns:xlink", XLINK_NS);
  out.setAttribute("width", String(w));
  out.setAttribute("height", String(h));
  out.removeAttribute("class");
  const text = '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(out);
  return { text, width: w, height: h, background: bg };
}

function canvasToBlob(canvas) {
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the browser could not encode the PNG"))), "image/png"));
}

export async function chartPNG(chart) {
  const { text, width, height, background } = await serializeChart(chart);
  const scale = Math.min(PNG_SCALE, MAX_PNG_SIDE / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = background;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (chart.localName === "canvas") {
    ctx.imageSmoothingEnabled = false;  // a heatmap's cells stay sharp
    ctx.drawImage(chart, 0, 0, canvas.width, canvas.height);
  } else {
    const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
    try {
      const img = new Image();
      img.src = url;
      await img.decode();
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    } finally {
      URL.revokeObjectURL(url);
    }
  }
  return canvasToBlob(canvas);
}

function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export async function download(chart, format) {
  const name = `${chartFileName(chart)}.${format}`;
  const blob = format === "png" ? await chartPNG(chart)
    : new Blob([(await serializeChart(chart)).text], { type: "image/svg+xml" });
  save(blob, name);
  return name;
}

// ---- the control ----------------------------------------------------------------------------

function span(className, text) {
  const s = document.createElement("span");
  s.className = className;
  s.textContent = text;
  return s;
}

function formatButton(format, label, target, status, menu) {
  const what = format === "png" ? "picture" : "drawing";
  const b = document.createElement("button");
  b.type = "button";
  b.className = "button small";
  b.dataset.format = format;
  b.append(format.toUpperCase(), span("visually-hidden", ` ${what}${label ? ` of ${label}` : ""}`));
  b.addEventListener("click", async () => {
    const chart = target();
    // Busy, not disabled: a disabled button would drop the keyboard focus to the page.
    if (!isChart(chart) || menu.getAttribute("aria-busy") === "true") return;
    menu.setAttribute("aria-busy", "true");
    status.textContent = "";
    try {
      status.textContent = `Saved ${await download(chart, format)}`;
    } catch (err) {
      status.textContent = `Could not make the ${format.toUpperCase()}: ${err.message}`;
    } finally {
      menu.removeAttribute("aria-busy");
    }
  });
  return b;
}

// <div class="chart-dl"> [status] <details> <summary>⤓ Download</summary> [PNG] [SVG] </details> </div>
// A group's control (data-chart-group) lists each of its charts: "name: [PNG] [SVG]".
function control(chart, group = null) {
  const wrap = document.createElement("div");
  wrap.className = "chart-dl";
  const box = document.createElement("details");
  const members = group ? charts(group).filter((c) => groupOf(c) === group) : [chart];
  const short = group ? group.dataset.chartGroup : titleOf(chart).split(/[:;]/)[0] || "this chart";
  const sum = document.createElement("summary");
  const icon = span("chart-dl-icon", "⤓");
  icon.setAttribute("aria-hidden", "true");
  sum.append(icon, " Download", span("visually-hidden", ` ${group ? "charts" : "chart"}: ${short}`));
  const menu = document.createElement("div");
  menu.className = "chart-dl-menu";
  const status = span("chart-dl-status", "");
  status.setAttribute("role", "status");
  if (group) {
    wrap.classList.add("group");
    wrap.dataset.charts = String(members.length);
    members.forEach((c, i) => {
      const row = document.createElement("span");
      row.className = "chart-dl-row";
      const label = titleOf(c).split(/[:;]/)[0] || `chart ${i + 1}`;
      const target = () => charts(group).filter((x) => groupOf(x) === group)[i] || null;
      row.append(span("chart-dl-name", label), formatButton("png", label, target, status, menu), formatButton("svg", label, target, status, menu));
      row.dataset.chart = String(i);
      menu.append(row);
    });
  } else {
    for (const format of ["png", "svg"]) menu.append(formatButton(format, "", () => chartOf(wrap), status, menu));
  }
  box.append(sum, menu);
  box.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && box.open) { box.open = false; sum.focus(); }
  });
  wrap.append(status, box);
  return wrap;
}

// Charts that belong together (three small bucket charts, a row of sparklines) sit in an element
// with data-chart-group: they share one control, at the end of the group, instead of one each.
function groupOf(chart) {
  return chart.closest("[data-chart-group]");
}

// The control goes right after the chart, or after the chart's outermost aria-hidden box: a
// button inside a part of the page hidden from screen readers could be focused but not announced.
function anchorOf(chart) {
  let anchor = chart;
  for (let n = chart.parentElement; n && n.localName !== "main"; n = n.parentElement) {
    if (n.getAttribute("aria-hidden") === "true") anchor = n;
  }
  return anchor;
}

// The chart a control downloads: the element before it, or the first chart inside that element.
function chartOf(ctl) {
  const prev = ctl.previousElementSibling;
  if (isChart(prev)) return prev;
  return prev ? charts(prev).find((c) => anchorOf(c) === prev && !groupOf(c)) || null : null;
}

function ensureControls() {
  const groups = new Set();
  for (const chart of charts()) {
    const group = groupOf(chart);
    if (group) { groups.add(group); continue; }
    const anchor = anchorOf(chart);
    const next = anchor.nextElementSibling;
    if (!(next && next.classList.contains("chart-dl"))) anchor.after(control(chart));
  }
  for (const group of groups) {
    const n = charts(group).filter((c) => groupOf(c) === group).length;
    const last = group.lastElementChild;
    const have = last && last.classList.contains("chart-dl") && last.classList.contains("group") ? last : null;
    if (have && have.dataset.charts === String(n)) continue;
    if (have) have.remove();
    group.append(control(null, group));
  }
  // A chart replaced without its control, or removed: drop the control that lost it.
  for (const ctl of document.querySelectorAll("main .chart-dl")) {
    if (ctl.classList.contains("group")) {
      const g = ctl.parentElement;
      if (!g || !g.hasAttribute("data-chart-group") || !charts(g).some((c) => groupOf(c) === g)) ctl.remove();
    } else if (!chartOf(ctl)) ctl.remove();
  }
}

const main = document.querySelector("main");
if (main) {
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; ensureControls(); });
  }).observe(main, { childList: true, subtree: true });
  ensureControls();
}
