// Shared by every stage page: arrow-key navigation and the "Copy link" button.

import { arrowsBelongTo } from "./lib/keys.js";

document.addEventListener("keydown", (e) => {
  if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || arrowsBelongTo(document.activeElement)) return;
  const which = e.key === "ArrowLeft" ? "prev" : e.key === "ArrowRight" ? "next" : null;
  if (!which) return;
  const link = document.querySelector(`a[data-nav="${which}"]`);
  if (link) { e.preventDefault(); location.href = link.href; }
});

export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return true;
  }
  // Plain-HTTP classroom servers have no async clipboard: fall back to a selection.
  const ta = document.createElement("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  ta.style.position = "fixed";
  ta.style.opacity = "0";
  document.body.append(ta);
  ta.select();
  const ok = document.execCommand("copy");
  ta.remove();
  return ok;
}

for (const btn of document.querySelectorAll("[data-copy-link]")) {
  btn.addEventListener("click", async () => {
    const status = btn.parentElement.querySelector(".copy-status");
    const url = btn.dataset.copyLink;
    let ok = false;
    try { ok = await copyText(url); } catch { ok = false; }
    if (status) status.textContent = ok ? "Link copied." : `Copy this link: ${url}`;
  });
}

// Pages that change view options in place call this so "Copy link" and the address bar follow.
export function setViewOption(name, value) {
  const url = new URL(location.href);
  if (value === null || value === undefined || value === "") url.searchParams.delete(name);
  else url.searchParams.set(name, String(value));
  history.replaceState(null, "", url);
  for (const btn of document.querySelectorAll("[data-copy-link]")) btn.dataset.copyLink = url.href;
  notifyParent();
}

// A page shown in a frame of this site (a classroom room) tells the room where it is now,
// since changes made in place (history.replaceState) fire no event the room could see.
function notifyParent() {
  if (window.parent !== window) {
    try { window.parent.postMessage({ type: "explainer.location", href: location.pathname + location.search }, location.origin); } catch { /* other origin */ }
  }
}

// ---- in a classroom room: the request on screen is the one the class runs ----------------------------
// The presenter's page (templates/rooms/present.html) shows a stage in a frame marked data-room="presenter", and
// its Run runs the stage's request for every phone (static/js/rooms/presenter.js). A stage whose request can be
// edited in place offers the edit: apply() resolves to the page's address for an edit not yet sent (made the
// page's scenario in place where the page can: setScenarioBlob), or null when the page shows its own scenario;
// it throws with a sentence when the edit cannot become a request.
export function offerEdit(apply) {
  window.explainerApplyEdit = apply;
}

// Whether this page is the stage a room's presenter shows: its Send then runs the request for the class.
export function inPresentersRoom() {
  try { return window.frameElement?.dataset.room === "presenter"; } catch { return false; }
}

// Hand the request on screen to the room, which applies the edit (offerEdit) and runs it for everyone.
export function runInRoom() {
  window.parent.postMessage({ type: "explainer.run" }, location.origin);
}

// A stage page's address -> its data's (the JSON the page embeds): /learn/<slug>/?q -> /learn/<slug>/data?q
export function dataUrl(pageUrl) {
  const u = new URL(pageUrl, location.href);
  u.pathname = u.pathname.replace(/\/$/, "/data");
  return u.pathname + u.search;
}

export function readJSON(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

// After the scenario changed in place (e.g. the overview's Send), point the address bar, the
// "Copy link" button and every link that carries the scenario (rail, pager, edit) at the new one.
export function setScenarioBlob(blob) {
  const retarget = (href) => {
    const u = new URL(href, location.href);
    if (blob) u.searchParams.set("s", blob); else u.searchParams.delete("s");
    return u;
  };
  const here = retarget(location.href);
  history.replaceState(null, "", here);
  for (const btn of document.querySelectorAll("[data-copy-link]")) btn.dataset.copyLink = here.href;
  for (const a of document.querySelectorAll(".rail a, .pager a, .scenario-bar a.edit, a[data-keeps-scenario]")) {
    const u = retarget(a.href);
    a.href = u.pathname + u.search;
  }
  notifyParent();
}

// POST scenario fields to the server's encoder; resolves to the new blob or throws with its message.
export async function encodeScenario(fields) {
  const r = await fetch("/scenario/encode", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(fields),
  });
  const data = await r.json().catch(() => ({ error: "The server did not answer." }));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data.s;
}

// Folded sections keep their anchors: a link to #how-it-works, or to anything inside a fold,
// opens the folds around its target before the browser scrolls to it.
function openFoldsFor(hash) {
  if (!hash || hash.length < 2) return;
  let target = null;
  try { target = document.getElementById(decodeURIComponent(hash.slice(1))); } catch { return; }
  if (!target) return;
  for (let el = target; el; el = el.parentElement) if (el.tagName === "DETAILS") el.open = true;
  target.scrollIntoView({ block: "start" });
}
openFoldsFor(location.hash);
window.addEventListener("hashchange", () => openFoldsFor(location.hash));

// The rail is one line that scrolls sideways on a phone: keep the current stage in view.
const current = document.querySelector(".rail li.current");
if (current && current.parentElement.scrollWidth > current.parentElement.clientWidth) {
  const ol = current.parentElement;
  ol.scrollLeft = current.offsetLeft - (ol.clientWidth - current.offsetWidth) / 2;
}

