// The self-paced tutorial in the browser. Progress lives in localStorage under one key (no account):
// which lesson is on, and which are done. On /tutorial/ this script fills in the lesson path; on a stage
// page it shows the current lesson's task panel, and nothing at all when no lesson is on or the page is
// embedded (?embed=1). Whether a task is done is decided by the server (GET /tutorial/check/<lesson>
// with the page's own query string). Text from the server is only ever set with textContent.
import { node } from "./lib/dom.js";

const KEY = "explainer.tutorial";
const LESSON_HASH = /^#tutorial=([a-z][a-z0-9-]{0,39})$/;
const RECHECK_MS = 600;  // after the page changes its own URL, wait for it to settle before checking

// ---- progress ---------------------------------------------------------------------------------------

function load() {
  const empty = { active: null, done: {}, collapsed: false, phoneOpen: false, resume: null };
  try {
    const v = JSON.parse(localStorage.getItem(KEY));
    if (!v || typeof v !== "object") return empty;
    return {
      active: typeof v.active === "string" ? v.active : null,
      done: v.done && typeof v.done === "object" && !Array.isArray(v.done) ? v.done : {},
      collapsed: v.collapsed === true,
      phoneOpen: v.phoneOpen === true,  // a phone shows the one-line bar unless the learner opened the task there
      resume: resumable(v.resume),
    };
  } catch {
    return empty;  // no storage (a locked-down browser) or a value this version cannot read
  }
}

// Where the learner was in the active lesson: its stage page as they left it (same site, stage pages only).
function resumable(r) {
  return r && typeof r === "object" && typeof r.id === "string" && typeof r.url === "string"
    && /^\/learn\/[a-z]+\/(\?[^#]*)?$/.test(r.url) ? { id: r.id, url: r.url } : null;
}

function resumeUrl(state, lesson) {
  const r = state.resume;
  return r && r.id === lesson.id && state.active === lesson.id ? `${r.url}#tutorial=${lesson.id}` : null;
}

function save(state) {
  try { localStorage.setItem(KEY, JSON.stringify(state)); return true; } catch { return false; }
}

function update(change) {
  const state = { ...load(), ...change };
  save(state);
  return state;
}

function resetProgress() {
  try { localStorage.removeItem(KEY); } catch { /* nothing was stored */ }
}

// ---- the lesson path: /tutorial/ ----------------------------------------------------------------------

function pathPage(list) {
  const data = JSON.parse(document.getElementById("tutorial-data").textContent);
  const lessons = data.lessons;
  const progress = document.getElementById("tut-progress-text");
  const meter = document.getElementById("tut-meter-fill");
  const cont = document.getElementById("tut-continue");
  const resetBtn = document.getElementById("tut-reset");

  function render() {
    const state = load();
    let n = 0;
    for (const li of list.querySelectorAll("[data-lesson]")) {
      const lesson = lessons.find((l) => l.id === li.dataset.lesson);
      const done = !!state.done[lesson.id];
      const resume = resumeUrl(state, lesson);
      if (done) n++;
      li.classList.toggle("is-done", done);
      li.classList.toggle("is-active", state.active === lesson.id);
      li.querySelector("[data-state]").textContent = done ? "✓ done" : state.active === lesson.id ? "in progress" : "not done yet";
      const go = li.querySelector("[data-start]");
      go.textContent = resume ? "Continue" : done ? "Do it again" : "Start";
      go.href = resume || lesson.start_url;
      go.setAttribute("aria-label", `${go.textContent} lesson ${lessons.indexOf(lesson) + 1}: ${lesson.title}`);
      li.querySelector("[data-restart]").hidden = !resume;
    }
    progress.textContent = n === lessons.length ? `All ${n} lessons done.` : `${n} of ${lessons.length} lessons done.`;
    meter.style.width = `${(n / lessons.length) * 100}%`;
    const current = lessons.find((l) => l.id === state.active && !state.done[l.id]);
    const next = current || lessons.find((l) => !state.done[l.id]);
    const index = next ? lessons.indexOf(next) + 1 : 1;
    cont.href = (next && resumeUrl(state, next)) || (next || lessons[0]).start_url;
    cont.textContent = !next ? "All done: start again from lesson 1"
      : n === 0 && !current ? "Start with lesson 1" : `Continue with lesson ${index}: ${next.title}`;
    resetBtn.hidden = n === 0 && !state.active;
  }

  // The stage page turns the lesson on from the start link's #tutorial=<id>; setting it here as well
  // keeps the path right when the learner comes straight back.
  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[href^='/tutorial/start/']");
    if (a) update({ active: new URL(a.href).pathname.split("/").pop(), resume: null });  // the link may carry ?model=
  });
  resetBtn.addEventListener("click", () => {
    if (!window.confirm("Reset your tutorial progress? Every lesson will be marked as not done.")) return;
    resetProgress();
    render();
    progress.textContent = `Progress reset. 0 of ${lessons.length} lessons done.`;
    cont.focus();
  });
  window.addEventListener("storage", (e) => { if (e.key === KEY || e.key === null) render(); });
  window.addEventListener("pageshow", (e) => { if (e.persisted) render(); });
  render();
}

// ---- the task panel on a stage page -------------------------------------------------------------------

let panel = null;       // the panel element while one is shown
let stopWatching = null;
let sizer = null;       // keeps the page's bottom padding as tall as the panel
const seen = new Set(); // what the learner has seen on this page (the page reports it: "explainer:seen")

function stageSlug() {
  const m = location.pathname.match(/^\/learn\/([^/]+)\/$/);
  return m ? m[1] : null;
}

function loadStyles() {
  const href = new URL("../css/tutorial.css", import.meta.url).href;
  if ([...document.styleSheets].some((s) => s.href === href)) return Promise.resolve();
  return new Promise((resolve) => {
    const link = node("link", { rel: "stylesheet", href });
    link.addEventListener("load", resolve);
    link.addEventListener("error", resolve);  // unstyled beats missing
    document.head.append(link);
  });
}

function removePanel() {
  if (stopWatching) stopWatching();
  if (sizer) sizer.disconnect();
  stopWatching = sizer = null;
  if (panel) panel.remove();
  panel = null;
  document.body.classList.remove("tut-on");
}

// The page keeps its scenario and view options in the URL and changes them in place (history.replaceState):
// call back when they change. The Navigation API reports it; elsewhere, look once a second.
function watchUrl(callback) {
  let last = location.search;
  const look = () => { if (location.search !== last) { last = location.search; callback(); } };
  if (window.navigation && typeof window.navigation.addEventListener === "function") {
    window.navigation.addEventListener("currententrychange", look);
    return () => window.navigation.removeEventListener("currententrychange", look);
  }
  const timer = setInterval(look, 1000);
  return () => clearInterval(timer);
}

// The part of the window the panel leaves free: left of the column, or above the bottom bar.
function freeArea() {
  const r = panel ? panel.getBoundingClientRect() : null;
  const docked = r && getComputedStyle(panel).position === "fixed";
  if (!docked) return { right: innerWidth, bottom: innerHeight };
  return r.left > innerWidth / 2 ? { right: r.left, bottom: innerHeight } : { right: innerWidth, bottom: r.top };
}

// If the panel would hide the part of the page the task needs, scroll the page so that part is clear of it.
function keepClear(target) {
  const r = target.getBoundingClientRect();
  const free = freeArea();
  // covered wholly or in part by the bottom bar, while on the screen: scroll it up, never past its top
  if (r.bottom > free.bottom && r.top < innerHeight) {
    window.scrollBy({ top: Math.min(r.bottom - free.bottom + 8, r.top - 8), behavior: "auto" });
  }
}

// A phone: the panel is a one-line bar (the lesson's title and a button to open the task) unless opened.
const PHONE = matchMedia("(max-width: 600px)");

// "Show me where": bring the task's part of the page into the free area and mark it for a moment.
function reveal(target, mark) {
  for (let el = target; el; el = el.parentElement) if (el.tagName === "DETAILS") el.open = true;
  const free = freeArea();
  const r = target.getBoundingClientRect();
  const room = free.bottom;
  const top = r.height + 16 < room ? r.top - Math.max(8, (room - r.height) / 3) : r.top - 8;
  window.scrollBy({ top, behavior: "auto" });
  if (mark) {
    target.classList.add("tut-target");
    setTimeout(() => target.classList.remove("tut-target"), 2500);
  }
}

function buildPanel(lesson, lessons, pathUrl) {
  const state = load();
  const total = lessons.length;
  const here = stageSlug() === lesson.stage;
  const next = lessons.find((l) => l.id === lesson.next);

  panel = node("section", { className: "tut-panel", id: "tut-panel", "aria-labelledby": "tut-panel-title" });
  panel.dataset.lesson = lesson.id;
  const head = node("div", { className: "tut-panel-head" });
  const titles = node("div", { className: "tut-panel-titles" });
  const kicker = node("p", { className: "tut-kicker" });
  kicker.append(`Tutorial · lesson ${lesson.number} of ${total} · ${lesson.stage_title}`);
  const badge = node("span", { className: "tut-badge", hidden: "" }, "✓ done");
  kicker.append(" ", badge);
  titles.append(kicker, node("h2", { id: "tut-panel-title" }, lesson.title));
  const toggle = node("button", { type: "button", className: "button small tut-toggle", "aria-controls": "tut-panel-body" });
  head.append(titles, toggle);

  const body = node("div", { className: "tut-panel-body", id: "tut-panel-body" });
  body.append(node("p", { className: "tut-task" }, lesson.task));
  const target = here && lesson.target ? document.querySelector(lesson.target) : null;
  if (target) {
    const show = node("button", { type: "button", className: "button small tut-show", id: "tut-show" }, "Show me where");
    show.addEventListener("click", () => {
      if (PHONE.matches) setCollapsed(true);  // on a phone, back to the one-line bar: the control shows above it
      reveal(target, true);
    });
    body.append(show);
  }
  const hint = node("details", { className: "tut-hint" });
  hint.append(node("summary", {}, "Hint"), node("p", {}, lesson.hint));
  body.append(hint);

  const verdict = node("p", { className: "tut-verdict", id: "tut-verdict", role: "status", "aria-live": "polite" });
  const learned = node("p", { className: "tut-learned", hidden: "" });
  learned.append(node("strong", {}, "What this shows: "), lesson.learned);
  const links = node("div", { className: "tut-links" });
  let checkBtn = null;
  let back = null;
  if (here) {
    checkBtn = node("button", { type: "button", className: "button small primary", id: "tut-check" }, "Check");
    const row = node("div", { className: "tut-check-row" });
    row.append(checkBtn, verdict);
    body.append(row);
  } else {
    back = node("a", { className: "button small primary", id: "tut-back" }, `Back to ${lesson.stage_title}`);
    const p = node("p", { className: "tut-elsewhere" }, `This lesson's task is checked on the ${lesson.stage_title} page. `
      + "Make your changes here if you need to, then go back: the link keeps the request as it is now.");
    const row = node("div", { className: "tut-check-row" });
    row.append(back);
    body.append(p, row);
  }
  const nextLink = next
    ? node("a", { className: "button small", id: "tut-next", href: next.start_url, hidden: "" }, `Next: lesson ${next.number} →`)
    : node("a", { className: "button small", id: "tut-next", href: pathUrl, hidden: "" }, "Last lesson: see the path");
  const leave = node("button", { type: "button", className: "button small tut-leave", id: "tut-leave" }, "Leave the tutorial");
  links.append(nextLink, node("a", { href: pathUrl, className: "tut-path-link" }, "All lessons"), leave);
  body.append(links, learned);  // the way on stays in view; what the task showed comes last
  panel.append(head, body);

  // The page reports what the learner has done and seen there (a 429 received, say): check again at once.
  document.addEventListener("explainer:seen", (e) => {
    const what = String(e.detail || "");
    if (!/^[a-z0-9][a-z0-9-]{0,39}$/.test(what) || seen.has(what)) return;
    seen.add(what);
    if (here && panel) { clearTimeout(timer); check(false); }
  });

  function setCollapsed(collapsed) {
    body.hidden = collapsed;
    toggle.textContent = collapsed ? "Show" : "Hide";
    toggle.setAttribute("aria-expanded", String(!collapsed));
    toggle.setAttribute("aria-label", collapsed ? "Show the tutorial task" : "Hide the tutorial task");
    panel.classList.toggle("collapsed", collapsed);
  }
  function showDone(done) {
    badge.hidden = !done;
    panel.classList.toggle("is-done", done);
    nextLink.hidden = !done;
    learned.hidden = !done;
  }
  function retargetBack() {
    if (!back) return;
    const u = new URL(`/learn/${lesson.stage}/`, location.href);
    const s = new URLSearchParams(location.search).get("s");
    if (s) u.searchParams.set("s", s);
    back.href = u.pathname + u.search;
  }

  setCollapsed(PHONE.matches ? !state.phoneOpen : state.collapsed);
  showDone(!!state.done[lesson.id]);
  retargetBack();
  toggle.addEventListener("click", () => {
    const collapsed = !body.hidden;
    setCollapsed(collapsed);
    update(PHONE.matches ? { phoneOpen: !collapsed } : { collapsed });
  });
  leave.addEventListener("click", () => {
    update({ active: null });
    removePanel();
    const main = document.getElementById("main");
    if (main) { main.setAttribute("tabindex", "-1"); main.focus({ preventScroll: true }); }
  });

  let ticket = 0;
  let timer = 0;
  async function check(manual) {
    const mine = ++ticket;
    if (manual) { verdict.textContent = "Checking…"; checkBtn.disabled = true; }
    verdict.classList.remove("ok", "bad");
    try {
      const q = new URLSearchParams(location.search);
      for (const what of seen) q.append("seen", what);
      const r = await fetch(`${lesson.check_url}?${q}`, { headers: { accept: "application/json" } });
      const data = await r.json().catch(() => ({ error: `The server answered ${r.status}.` }));
      if (mine !== ticket || !panel) return;  // a later check, or the learner left
      if (!r.ok) {
        verdict.textContent = data.error || `The server answered ${r.status}.`;
        verdict.classList.add("bad");
        return;
      }
      if (data.next_url) nextLink.href = data.next_url;  // the next lesson, on the model this page runs
      const before = load();
      if (data.done) {
        update({ done: { ...before.done, [lesson.id]: true } });
        verdict.textContent = `✓ Done. ${data.message}`;
        verdict.classList.add("ok");
        showDone(true);
        if (manual) nextLink.focus();
      } else {
        verdict.textContent = before.done[lesson.id]
          ? `Not as the page is now (you did this task before): ${data.message}` : `Not yet. ${data.message}`;
      }
    } catch {
      if (mine === ticket) verdict.textContent = "The check could not reach the server. Try again.";
    } finally {
      if (checkBtn && mine === ticket) checkBtn.disabled = false;
    }
  }
  if (checkBtn) checkBtn.addEventListener("click", () => { clearTimeout(timer); check(true); });

  const remember = () => { if (here) update({ resume: { id: lesson.id, url: location.pathname + location.search } }); };
  remember();
  stopWatching = watchUrl(() => {
    retargetBack();
    remember();
    if (here) { clearTimeout(timer); timer = setTimeout(() => check(false), RECHECK_MS); }
  });

  // Docked, never floating over the page: a column beside the page on a wide screen, a bar along the
  // bottom of a phone's screen whose height the page keeps free at its end (--tut-space).
  document.body.append(panel);
  document.body.classList.add("tut-on");
  const space = () => document.documentElement.style.setProperty("--tut-space", `${panel ? panel.offsetHeight + 12 : 0}px`);
  if (window.ResizeObserver) { sizer = new ResizeObserver(() => { space(); if (target) keepClear(target); }); sizer.observe(panel); }
  space();
  if (target) keepClear(target);
  if (here) check(false);
}

async function stagePage() {
  const m = location.hash.match(LESSON_HASH);
  if (m) {
    const before = load();
    update({ active: m[1], resume: before.resume && before.resume.id === m[1] ? before.resume : null });
    const u = new URL(location.href);
    u.hash = "";
    history.replaceState(history.state, "", u.pathname + u.search);
  }
  const state = load();
  if (!state.active || !stageSlug()) return;
  let data;
  try {
    const r = await fetch("/tutorial/lessons.json", { headers: { accept: "application/json" } });
    if (!r.ok) return;
    data = await r.json();
  } catch {
    return;  // the tutorial is an extra: the page works without it
  }
  const lesson = data.lessons.find((l) => l.id === state.active);
  if (!lesson) { update({ active: null }); return; }  // a lesson this version no longer has
  await loadStyles();
  removePanel();
  buildPanel(lesson, data.lessons, data.path_url);
}

// Another tab started, finished or left a lesson, or the page came back from the back/forward cache.
function resync() {
  const state = load();
  const shown = panel ? panel.dataset.lesson : null;
  if (state.active !== shown) { removePanel(); if (state.active) stagePage(); }
}

function main() {
  if (new URLSearchParams(location.search).get("embed") === "1") return;  // embedded: show nothing
  const list = document.getElementById("tutorial-path");
  if (list) { pathPage(list); return; }
  if (!stageSlug()) return;
  window.addEventListener("storage", (e) => { if (e.key === KEY || e.key === null) resync(); });
  window.addEventListener("pageshow", (e) => { if (e.persisted) resync(); });
  stagePage();
}

main();
