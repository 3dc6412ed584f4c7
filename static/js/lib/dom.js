// node("li", {className: "hit", "aria-label": "…"}, "text"): an element with attributes and text
// (never HTML). Attributes that are null or undefined are left out.
export function node(tag, attrs = {}, text = null) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "className") n.className = v; else if (v !== null && v !== undefined) n.setAttribute(k, String(v));
  }
  if (text !== null) n.textContent = text;
  return n;
}
