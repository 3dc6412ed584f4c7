// A student's screen: follows the presenter's stage until the student explores on their own,
// shows the live run, and sends guesses.
import { roomSocket, stageHref, embedded, frameHref } from "./socket.js";
import { createLive } from "./live.js";

const $ = (id) => document.getElementById(id);
const root = $("room");
const code = root.dataset.code;
const frame = $("stage-frame");
let presenterHref = stageHref(frame.getAttribute("src"));
let following = true, expected = presenterHref;
const lastSeq = {};

const sock = roomSocket(code, {
  onStatus: (s) => { $("conn").textContent = s; },
  onFrame,
  banner: $("room-banner"),
  // the run on screen stops here; on rejoining, the presenter's catch-up brings a run still going
  onLost: () => live.setStatus("connection lost"),
});
const live = createLive({ role: "student", sendGuess: (text) => sock.send({ type: "guess", text }) });

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
    case "room.state":
      presenterHref = f.state.href;
      $("stage-title").textContent = f.state.number ? `${f.state.number}. ${f.state.title}` : f.state.title;
      if (following) load(presenterHref);
      break;
    case "room.ended":
      showError("The presenter ended this room. Thanks for joining!");
      live.setStatus("room ended");
      break;
    case "error":
      showError(f.error.message);
      break;
    default: break;
  }
  live.handle(f);
}

function check() {
  const here = frameHref(frame);
  if (here && here !== presenterHref && here !== expected) setFollowing(false);
}
frame.addEventListener("load", check);
window.addEventListener("message", (e) => {
  if (e.origin === location.origin && e.data && e.data.type === "explainer.location") check();
});
$("follow").addEventListener("click", () => {
  setFollowing(true);
  load(presenterHref);
});
setFollowing(true);
