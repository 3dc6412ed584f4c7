// Fill a server-rendered fragment with new data in place: the template says where each value goes, so the
// markup and its words stay in the template, and a script that gets new data (a stage's /data) only moves
// values; it builds no markup of its own and never fetches a page's HTML.
//
//   data-text="a.b"               the element's text is the value ("" for null), invisible characters marked
//                                 (lib/text.js, the twin of the templates' show_controls); a text with {a.b}
//                                 in it is the element's whole text, each {path} replaced by the value
//   data-show="a.b"               hidden unless the value is truthy (an empty list is not); data-hide: the reverse
//   data-attrs="name=… {a.b} …;…" each attribute set to its text, {path} replaced by the value
//   data-vars="--n=a.b;…"         each CSS custom property set to the value
//   data-each="a.b"               a list: the element's <template> child, cloned and bound for each item
//
// Paths are dot-separated keys, looked up in the item of the innermost data-each first, then outwards.

import { setText } from "./text.js";

function dig(obj, path) {
  return path.split(".").reduce((o, k) => (o === null || o === undefined ? undefined : o[k]), obj);
}

function lookup(scopes, path) {
  for (const s of scopes) {
    const v = dig(s, path);
    if (v !== undefined) return v;
  }
  return undefined;
}

function truthy(v) {
  return Array.isArray(v) ? v.length > 0 : Boolean(v);
}

function shown(v) {
  return v === null || v === undefined ? "" : String(v);
}

function pairs(spec) {
  return spec.split(";").filter((s) => s.trim()).map((s) => {
    const i = s.indexOf("=");
    return [s.slice(0, i).trim(), s.slice(i + 1)];
  });
}

function fill(text, scopes) {
  return text.replace(/\{([\w.]+)\}/g, (_, path) => shown(lookup(scopes, path)));
}

function apply(el, scopes) {
  const d = el.dataset;
  if (d.text !== undefined) setText(el, d.text.includes("{") ? fill(d.text, scopes) : shown(lookup(scopes, d.text)));
  if (d.show !== undefined) el.hidden = !truthy(lookup(scopes, d.show));
  if (d.hide !== undefined) el.hidden = truthy(lookup(scopes, d.hide));
  if (d.attrs !== undefined) {
    for (const [name, text] of pairs(d.attrs)) {
      el.setAttribute(name, fill(text, scopes));
    }
  }
  if (d.vars !== undefined) {
    for (const [name, path] of pairs(d.vars)) el.style.setProperty(name, shown(lookup(scopes, path.trim())));
  }
}

function walk(el, scopes) {
  apply(el, scopes);
  if (el.dataset.each !== undefined) {
    const tpl = el.querySelector(":scope > template");
    for (const child of [...el.children]) if (child !== tpl) child.remove();
    for (const item of lookup(scopes, el.dataset.each) || []) {
      const copy = tpl.content.cloneNode(true);
      for (const child of copy.children) walk(child, [item, ...scopes]);
      el.append(copy);
    }
    return;
  }
  for (const child of el.children) walk(child, scopes);
}

export function bind(root, data) {
  if (root) walk(root, [data]);
}
