// Small helpers for drawing charts as plain SVG (no charting library needed for bars and heatmaps).

const NS = "http://www.w3.org/2000/svg";

// el("rect", {x: 1, y: 2}, parent) -> the new element (appended to parent when given)
export function el(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  if (parent) parent.append(node);
  return node;
}

// svg(width, height, {label}) -> a responsive <svg> with a viewBox and an accessible name
export function svg(width, height, { label = "", className = "" } = {}) {
  const s = el("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", class: className, preserveAspectRatio: "xMinYMin meet" });
  if (label) el("title", {}, s).textContent = label;
  return s;
}

// text(parent, x, y, string, attrs) -> a <text> node whose content is set as text (never as markup)
export function text(parent, x, y, str, attrs = {}) {
  const t = el("text", { x, y, ...attrs }, parent);
  t.textContent = str;
  return t;
}
