// A student's screen: follows the presenter's stage until the student explores on their own,
// shows the live run, and sends guesses.
import { roomSocket, stageHref, embedded, frameHref } from "./socket.js";
import { createLive } from "./live.js";
import { createAskStudent } from "./ask.js";

const $ = (id) => document.getElementById(id);
const root = $("room");
const code = root.dataset.code;
const frame = $("stage-frame");
let presenterHref = stageHref(frame.getAttribute("src"));
let following = true, expected = presenterHref;
const lastSeq = {};

// The nickname, optional: from the join page (in the link's #nick= fragment) or typed here. This tab keeps it
// to send again after a reconnect; the server checks it every time and keeps it for this connection only.
const nickKey = `room-nick-${code}`;
const fromJoin = new URLSearchParams(location.hash.slice(1)).get("nick");
if (fromJoin !== null) {
  sessionStorage.setItem(nickKey, fromJoin);
  history.replaceState(null, "", location.pathname + location.search);
}
function sendNickname(name) {
  if (sock.send({ type: "nickname", name })) return;
  if (name.trim()) sessionStorage.setItem(nickKey, name); else sessionStorage.removeItem(nickKey);
  nickMessage("Not connected: your nickname is sent when the connection is back.", false);
}

// Who this student is in the room's rounds (the server's room.hello says it): sent again on every reconnect,
// so a reload or a lost connection rejoins the same guess round with the answer already given.
const sidKey = `room-sid-${code}`;

const sock = roomSocket(code, {
  query: () => (sessionStorage.getItem(sidKey) ? `sid=${encodeURIComponent(sessionStorage.getItem(sidKey))}` : ""),
  onStatus: (s) => { $("conn").textContent = s; },
  onOpen: () => {
    const saved = sessionStorage.getItem(nickKey);
    if (saved) sendNickname(saved);
  },
  onFrame,
  banner: $("room-banner"),
  // the run on screen stops here; on rejoining, the presenter's catch-up brings a run still going
  onLost: () => live.setStatus("connection lost"),
});
const live = createLive({ role: "student", sendGuess: (text) => sock.send({ type: "guess", text }) });
const ask = createAskStudent({ send: (f) => sock.send(f) });

function showError(msg) {
  const el = $("room-error");
  el.textContent = msg;
  el.hidden = !msg;
}

function setFollowing(on) {
  following = on;
  $("follow").hidden = on;
  $("following").hidden = !on;
}

function load(href) {
  expected = href;
  if (frameHref(frame) !== href) frame.src = embedded(href);
}

function onFrame(f) {
  if (f.seq !== undefined) {  // consecutive per presenter connection: a gap means a lost frame
    const prev = lastSeq[f.src];
    if (prev !== undefined && f.seq !== prev + 1) console.warn(`room: frame ${f.seq} after ${prev}`);
    lastSeq[f.src] = f.seq;
  }
  switch (f.type) {
    case "room.hello":
      if (f.sid) sessionStorage.setItem(sidKey, f.sid);
      // falls through: the hello carries the stage, as room.state does
    case "room.state":
      presenterHref = f.state.href;
      $("stage-title").textContent = f.state.number ? `${f.state.number}. ${f.state.title}` : f.state.title;
      if (following) load(presenterHref);
      break;
    case "room.ended":
      showError("The presenter ended this room. Thanks for joining!");
      live.setStatus("room ended");
      break;
    case "room.nickname":
      if (f.name) sessionStorage.setItem(nickKey, f.name); else sessionStorage.removeItem(nickKey);
      $("nick-input").value = f.name || "";
      $("nick-shown").textContent = f.name || "none";  // text from a person: never HTML
      nickMessage(f.name ? `The presenter's screen shows you as “${f.name}”.` : "No nickname: you stay anonymous.", false);
      break;
    case "error":
      if (f.frame === "nickname") {  // refused: say why beside the box, and keep what was typed to edit it
          if (f.error.type !== "rate_limit_error") sessionStorage.removeItem(nickKey);
        nickMessage(f.error.message, true);
        $("nick").open = true;  // the reason must be seen
        break;
      }
      if (f.frame === "question") break;  // said beside the question box (ask.js)
      showError(f.error.message);
      break;
    default: break;
  }
  live.handle(f);
  ask.handle(f);
}

function check() {
  const here = frameHref(frame);
  if (here && here !== presenterHref && here !== expected) setFollowing(false);
}
frame.addEventListener("load", check);

// On a phone nothing scrolls inside a scroll area: the stage frame is as tall as the page in it, and the room's
// page is the only thing that scrolls. In the frame, the stage's main visual comes first (html.in-room).
let sizer = null;
function fitFrame() {
  let doc;
  try { doc = frame.contentDocument; } catch { return; }
  if (!doc || !doc.documentElement) return;
  doc.documentElement.classList.add("in-room");
  const fit = () => { frame.style.height = `${Math.max(200, doc.documentElement.scrollHeight)}px`; };
  if (sizer) sizer.disconnect();
  if (window.ResizeObserver && doc.body) { sizer = new ResizeObserver(fit); sizer.observe(doc.body); }
  fit();
}
frame.addEventListener("load", fitFrame);
fitFrame();
window.addEventListener("message", (e) => {
  if (e.origin === location.origin && e.data && e.data.type === "explainer.location") check();
});
function nickMessage(text, bad) {
  const msg = $("nick-msg");
  msg.textContent = text;  // a nickname is text from a person: never HTML
  msg.classList.toggle("bad", bad);
  $("nick-input").setAttribute("aria-invalid", String(bad));
}
$("nick-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sendNickname($("nick-input").value);
});
const saved = sessionStorage.getItem(nickKey);
if (saved) { $("nick-input").value = saved; $("nick-shown").textContent = saved; }

$("follow").addEventListener("click", () => {
  setFollowing(true);
  load(presenterHref);
});
setFollowing(true);
