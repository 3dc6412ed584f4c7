// The presenter's screen: drives the room. The secret is in the link's #k= fragment, which
// never reaches the server's logs; it is sent once, in the socket's auth frame.
import { roomSocket, embedded, frameHref, stageHref } from "./socket.js";
import { createLive } from "./live.js";
import { createAskPresenter } from "./ask.js";
import { arrowsBelongTo, typingIn } from "../lib/keys.js";

const $ = (id) => document.getElementById(id);
const root = $("room");
const code = root.dataset.code;
const stages = JSON.parse($("room-stages").textContent);
const frame = $("stage-frame");
const projectorCss = root.dataset.projectorCss;
const secret = new URLSearchParams(location.hash.slice(1)).get("k") || sessionStorage.getItem(`room-secret-${code}`) || "";
if (secret) sessionStorage.setItem(`room-secret-${code}`, secret);

let lastSent = null, mode = "play", running = false, held = false, guessOpen = false, isPresenter = false, starting = false;
const live = createLive({ role: "presenter" });
const ask = createAskPresenter({ send: (f) => send(f) });

function showError(msg) {
  const el = $("room-error");
  el.textContent = msg;
  el.hidden = !msg;
}

const sock = roomSocket(code, {
  onStatus: (s) => { $("conn").textContent = s; $("lobby-conn").textContent = `your link to the room: ${s}`; },
  onOpen: () => { isPresenter = false; sock.send({ type: "auth", secret }); },
  onFrame,
  banner: $("room-banner"),
  onLost: () => {  // the server stopped the run with the connection: start afresh once back
    isPresenter = false; running = false; held = false; guessOpen = false;
    live.setStatus("connection lost: the run stopped");
    syncButtons();
  },
});

function onFrame(f) {
  switch (f.type) {
    case "room.hello":
      if (f.role === "presenter") {
        isPresenter = true;
        showError("");
        lastSent = null;
        report();
      }
      break;
    case "room.students":
      $("student-count").textContent = f.count;
      $("student-word").textContent = f.count === 1 ? "student" : "students";
      $("proj-count").textContent = f.count;
      $("proj-word").textContent = f.count === 1 ? "student" : "students";
      showArrivals(f);
      break;
    case "room.mode":
      mode = f.mode;
      break;
    case "room.run":
      running = f.phase === "start";
      if (running) mode = f.mode;
      if (running) closeLobby();  // the lesson has begun: the stage and the run take the screen
      held = false; guessOpen = false;
      break;
    case "room.guess": guessOpen = true; showError(""); break;
    case "room.reveal": guessOpen = false; break;
    case "room.ended":
      closeLobby();
      showError("You ended this room. Students see that it is over.");
      break;
    case "error":
      if (f.error.type === "authentication_error") closeLobby();  // this page cannot drive the room: say so, in view
      showError(f.error.type === "authentication_error"
        ? "This link does not hold the presenter's secret for this room, so it cannot drive it. Use the link you got when you started the room."
        : f.error.message);
      break;
    default: break;
  }
  live.handle(f);
  ask.handle(f);
  syncButtons();
}

function syncButtons() {
  $("run").disabled = !isPresenter || running;
  $("pause").disabled = !running;
  $("pause").textContent = mode === "pause" ? "Play" : "Pause";
  $("step").disabled = !running || mode !== "pause" || guessOpen;
  $("guess-open").disabled = !running || guessOpen;
  $("reveal-btn").disabled = !guessOpen;
  $("stop").disabled = !running;
}

// G always answers: it opens a guess, or says why it cannot (a silent key in front of a class looks broken).
function guessKey() {
  if (!isPresenter) return showError("Only the presenter's page can open a guess.");
  if (!running) return showError("G opens a guess on the next token of a run, and no run is going: press Run (or Space) first.");
  if (guessOpen) return showError("A guess is already open: R reveals it.");
  showError("");
  const seconds = Number($("countdown").value) || 0;
  send(seconds ? { type: "guess", seconds } : { type: "guess" });
}

// The class score: off by default; accuracy only; nicknames only on this screen and only when asked.
function sendScore() {
  $("score-names").disabled = !$("score-on").checked;
  if (!$("score-on").checked) $("score-names").checked = false;
  send({ type: "score", on: $("score-on").checked, names: $("score-names").checked });
}
$("score-on").addEventListener("change", sendScore);
$("score-names").addEventListener("change", sendScore);

function send(f) {
  if (!sock.send(f)) showError("Not connected; trying again…");
}

// ---- the stage on screen ------------------------------------------------------------------------

function report() {
  const href = frameHref(frame);
  if (!href || !isPresenter || href === lastSent) return;
  lastSent = href;
  send({ type: "state", href });
  const slug = href.split("/")[2];
  $("stage-select").value = slug;
  showStageName();
}

function goStage(slug) {
  const cur = frameHref(frame) || "/learn/overview/";
  const s = new URL(cur, location.origin).searchParams.get("s");
  frame.src = embedded(`/learn/${slug}/` + (s ? `?s=${encodeURIComponent(s)}` : ""));
}

function move(delta) {
  const i = stages.findIndex((s) => s.slug === $("stage-select").value);
  const next = stages[Math.min(stages.length - 1, Math.max(0, i + delta))];
  if (next && next.slug !== $("stage-select").value) goStage(next.slug);
}

frame.addEventListener("load", () => {
  hookFrame();
  report();
});
window.addEventListener("message", (e) => {
  if (e.origin !== location.origin || !e.data || e.source !== frame.contentWindow) return;
  if (e.data.type === "explainer.location") report();
  if (e.data.type === "explainer.run") runShown();  // the stage's own Send (stage.js, runInRoom)
});
$("stage-select").addEventListener("change", (e) => goStage(e.target.value));
// An example question (chosen by measurement on the server): the same stage, with that request.
$("example-select")?.addEventListener("change", (e) => {
  const blob = e.target.value;
  if (!blob) return;
  const slug = $("stage-select").value || "overview";
  frame.src = embedded(`/learn/${slug}/?s=${encodeURIComponent(blob)}`);
  e.target.value = "";
});
$("stage-prev").addEventListener("click", () => move(-1));
$("stage-next").addEventListener("click", () => move(1));

// ---- the run ------------------------------------------------------------------------------------

$("pace").addEventListener("input", (e) => {
  $("pace-out").textContent = `${e.target.value} ms`;
});
$("pace").addEventListener("change", (e) => { if (running) send({ type: "pace", pace_ms: Number(e.target.value) }); });
// The class runs the request the stage shows. An edit there not yet sent (a new prompt typed into the
// overview, a Compose form not applied, a next message typed on Conversation) becomes the stage's scenario
// first (stage.js, offerEdit), and the run names the stage's address: the room's stage and scenario follow
// it, so the phones get what the projector shows.
async function runShown(runMode = "play") {
  if (starting || !isPresenter) return;
  if (running) { showError("A run is already going: stop it first, then run the stage's request."); return; }
  starting = true;
  try {
    let href = frameHref(frame);
    let apply = null;
    try { apply = frame.contentWindow.explainerApplyEdit; } catch { /* between pages */ }
    const edited = apply ? await apply() : null;
    if (edited) {
      href = stageHref(edited);
      if (frameHref(frame) !== href) frame.src = embedded(href);  // a stage that loads its applied page (Compose)
    }
    const f = { type: "run", pace_ms: Number($("pace").value), mode: runMode };
    if (href) {
      f.href = href;
      lastSent = href;  // the run sets the room's stage: no separate "state" for it
      $("stage-select").value = href.split("/")[2];
      showStageName();
    }
    showError("");
    send(f);
  } catch (err) {
    showError(`The request on the stage cannot run: ${err.message}`);
  } finally {
    starting = false;
  }
}
$("run").addEventListener("click", () => runShown());
$("pause").addEventListener("click", () => { live.closeReveal(); send({ type: mode === "pause" ? "play" : "pause" }); });
$("step").addEventListener("click", () => { live.closeReveal(); send({ type: "step" }); });
$("guess-open").addEventListener("click", () => guessKey());
$("reveal-btn").addEventListener("click", () => send({ type: "reveal" }));
$("stop").addEventListener("click", () => send({ type: "stop" }));
$("end-room").addEventListener("click", () => {
  if (confirm("End this room for everyone? Students will see that it is over.")) send({ type: "end" });
});

// ---- the lobby: the join address, the code, the QR code and who has arrived ---------------------

const lobby = $("lobby");
const lobbyKey = `room-lobby-closed-${code}`;

function openLobby() {
  if (!lobby.open) lobby.showModal();
  document.body.classList.add("lobby-open");
}

function closeLobby() {
  if (lobby.open) lobby.close();  // "close" below remembers it
}

lobby.addEventListener("close", () => {  // Start, Enter, Esc, or the first run
  document.body.classList.remove("lobby-open");
  sessionStorage.setItem(lobbyKey, "1");  // a reload in the middle of the lesson does not bring it back
});
$("lobby-start").addEventListener("click", closeLobby);
$("lobby-open").addEventListener("click", openLobby);

// Nicknames come from students: inserted as text, never as HTML.
function showArrivals(f) {
  $("lobby-count").textContent = f.count;
  $("lobby-word").textContent = f.count === 1 ? "student" : "students";
  const list = $("lobby-names");
  list.replaceChildren(...(f.names || []).map((name) => {
    const li = document.createElement("li");
    li.textContent = name;
    return li;
  }));
  // "3 students joined" with 2 names: say that one joined without a nickname (an older server sends no "unnamed")
  const unnamed = f.unnamed ?? Math.max(0, f.count - (f.names || []).length - (f.more || 0));
  const parts = [];
  if (f.more > 0) parts.push(`${f.more} more`);
  if (unnamed > 0) parts.push(`${unnamed} without a nickname`);
  const more = $("lobby-more");
  more.hidden = !parts.length;
  more.textContent = !parts.length ? "" : (f.names || []).length ? `and ${parts.join(", and ")}` : `${unnamed} without a nickname`;
}

if (!sessionStorage.getItem(lobbyKey)) openLobby();

// ---- QR code and projector mode -----------------------------------------------------------------

// (no QR code where phones cannot reach this server: the page says why instead)
$("qr-toggle")?.addEventListener("click", () => {
  const big = $("qr-big");
  big.hidden = !big.hidden;
  $("qr-toggle").setAttribute("aria-expanded", String(!big.hidden));
});
$("qr-big")?.addEventListener("click", () => { $("qr-big").hidden = true; $("qr-toggle").setAttribute("aria-expanded", "false"); });

function styleFrame() {
  let doc;
  try { doc = frame.contentDocument; } catch { return; }
  if (!doc || !doc.head) return;
  const on = document.body.classList.contains("projector");
  doc.documentElement.classList.toggle("projector", on);
  if (on && !doc.getElementById("projector-css")) {
    const link = doc.createElement("link");
    link.id = "projector-css";
    link.rel = "stylesheet";
    link.href = projectorCss;
    doc.head.append(link);
  }
}

async function toggleProjector() {
  const on = !document.body.classList.contains("projector");
  document.body.classList.toggle("projector", on);
  document.documentElement.classList.toggle("projector", on);
  $("projector").setAttribute("aria-pressed", String(on));
  styleFrame();
  try {
    if (on && !document.fullscreenElement) await document.documentElement.requestFullscreen();
    if (!on && document.fullscreenElement) await document.exitFullscreen();
  } catch { /* full screen refused (no user gesture, or not allowed): the large layout still applies */ }
}
$("projector").addEventListener("click", toggleProjector);
$("projector-exit").addEventListener("click", toggleProjector);

// In projector mode the controls hide behind C (and this button); on the presenter's own screen they stay.
function toggleControls(show = !document.body.classList.contains("show-controls")) {
  document.body.classList.toggle("show-controls", show);
  $("controls-toggle").setAttribute("aria-expanded", String(show));
}
$("controls-toggle").addEventListener("click", () => toggleControls());

// The slim bar names the stage as the pages number it.
function showStageName() {
  const sel = $("stage-select");
  $("proj-stage").textContent = sel.selectedOptions[0] ? sel.selectedOptions[0].textContent : "";
}
$("stage-select").addEventListener("change", showStageName);
showStageName();

// ---- keys, also while the focus is inside the stage frame ---------------------------------------

function onKey(e, doc) {
  if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || typingIn(doc.activeElement)) return;
  // The stage's own widgets keep their keys: arrows in the transformer's grid of heads, tokenize's listbox or
  // Compose's tabs move there, not the room's stage; in the stage, Space presses a focused control (a head
  // of the grid) rather than starting a run.
  if (e.key.startsWith("Arrow") && arrowsBelongTo(doc.activeElement)) return;
  if (e.key === " " && doc !== document && doc.activeElement?.closest("button, a, summary, [role]")) return;
  const actions = {
    ArrowLeft: () => move(-1),
    ArrowRight: () => move(1),
    " ": () => { if (!running) runShown("pause"); else if (mode !== "pause") send({ type: "pause" }); else if (!guessOpen) send({ type: "step" }); },
    p: () => running && send({ type: mode === "pause" ? "play" : "pause" }),
    g: () => guessKey(),
    r: () => (guessOpen ? send({ type: "reveal" }) : showError("R reveals an open guess, and none is open: press G during a run to open one.")),
    f: () => toggleProjector(),
    c: () => document.body.classList.contains("projector") && toggleControls(),
    l: () => (lobby.open ? closeLobby() : openLobby()),
    a: () => { closeLobby(); live.closeReveal(); if (!isPresenter) showError("Only the presenter's page can start “Everyone asks”."); else ask.key(); },
    Enter: () => closeLobby(),
  };
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  const act = actions[key];
  if (!act) return;
  // Enter means "start" only in the lobby, and only where it would not press a focused button or follow a link
  if (key === "Enter" && (!lobby.open || doc.activeElement?.closest("button, a, summary"))) return;
  e.preventDefault();
  if (key === " " || key === "p") live.closeReveal();  // the run moves on: back to the stage
  act();
}
document.addEventListener("keydown", (e) => onKey(e, document));

function hookFrame() {
  styleFrame();
  try {
    const w = frame.contentWindow;
    if (w && !w.__roomKeys) {
      w.__roomKeys = true;
      w.addEventListener("keydown", (e) => onKey(e, w.document), true);
    }
  } catch { /* not same-origin (never here) */ }
}
hookFrame();
syncButtons();
