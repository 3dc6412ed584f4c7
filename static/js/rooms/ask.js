// "Everyone asks" on both screens (the rules are explainer/rooms/asking.py's): a student's phone shows the question
// box while a round is open, then streams its own reply; the presenter's (projected) screen shows the class's
// questions, lets the presenter hide any of them, and draws the scheduler's record of the class's requests with the
// Serving stage's own timeline. Questions are text from people: inserted as text, never as HTML.
import { drawTimeline } from "../stages/serving-timeline.js";
import { node } from "../lib/dom.js";
import { stopReasonInWords } from "../lib/text.js";
import { timelineSummary } from "./ask-summary.js";

const $ = (id) => document.getElementById(id);

// ---- a student's phone -----------------------------------------------------------------------------

const WAITING = "One question each. It waits until your teacher sends everyone's together, so that they all start at once.";

export function createAskStudent({ send }) {
  const box = $("ask-mine"), form = $("ask-form"), input = $("ask-input"), submit = $("ask-submit");
  const msg = $("ask-msg"), left = $("ask-left"), asked = $("ask-asked"), askedText = $("ask-text");
  const replyBox = $("ask-reply-box"), reply = $("ask-reply"), replyStatus = $("ask-reply-status");
  const max = Number(input.getAttribute("maxlength")) || 160;
  let round = null, mine = false, lastIndex = -1;

  function message(text, bad = false) {
    msg.textContent = text;
    msg.classList.toggle("bad", bad);
    input.setAttribute("aria-invalid", String(bad));
  }
  function countLeft() {
    const n = max - input.value.length;
    left.textContent = `${n} character${n === 1 ? "" : "s"} left`;
  }
  input.addEventListener("input", countLeft);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!input.value.trim()) { message("Type a question first.", true); return; }
    if (!send({ type: "question", text: input.value })) { message("Not connected: wait a moment, then send it again.", true); return; }
    submit.disabled = true;
    message("Sending…");
  });

  function openRound(f) {
    round = f.round; mine = false; lastIndex = -1;
    box.hidden = false; form.hidden = false; asked.hidden = true; replyBox.hidden = true; $("ask-projector").hidden = true;
    submit.disabled = false;
    reply.replaceChildren();
    countLeft();
    message(WAITING);
    box.scrollIntoView({ block: "start" });
  }

  function roundFrame(f) {
    if (f.phase === "open") return openRound(f);
    if (f.round !== round) return;
    form.hidden = true;
    if (f.phase === "sent") {
      if (mine) {
        message("");
        replyBox.hidden = false;
        replyStatus.textContent = "waiting for the model…";
      } else {
        message(`The class's ${f.count} question${f.count === 1 ? "" : "s"} went to the model together. You did not ask this round, so no reply comes to this phone.`);
      }
    } else if (!mine) {
      box.hidden = true;  // closed before this student asked: the box goes away
    } else if (replyBox.hidden) {
      message("Your teacher ended the round before sending the questions.");
    }
  }

  function replyFrame(f) {
    if (f.round !== round) return;
    if (f.phase === "start") {
      replyBox.hidden = false;
      reply.replaceChildren();
      lastIndex = -1;
      replyStatus.textContent = "the model is writing…";
    } else if (f.phase === "token") {
      if (f.index <= lastIndex) return;
      lastIndex = f.index;
      reply.append(node("span", { className: "live-tok" }, f.piece));
      reply.scrollTop = reply.scrollHeight;
    } else if (f.error) {
      replyBox.hidden = false;
      replyStatus.textContent = "";
      message(f.error.message, true);
    } else {
      replyStatus.textContent = `done: ${f.output_tokens} token${f.output_tokens === 1 ? "" : "s"}, ${stopReasonInWords(f.stop_reason)}`;
      $("ask-projector").hidden = false;
    }
  }

  function handle(f) {
    switch (f.type) {
      case "room.ask": roundFrame(f); break;
      case "room.asked":
        if (f.round !== round) break;
        mine = true;
        form.hidden = true;
        asked.hidden = false;
        askedText.textContent = f.text;
        message("Your question is in. It starts when your teacher presses Send all.");
        break;
      case "room.reply": replyFrame(f); break;
      case "error":
        if (f.frame !== "question") break;
        message(f.error.message, true);
        submit.disabled = false;
        break;
      default: break;
    }
  }
  return { handle };
}

// ---- the presenter's screen ----------------------------------------------------------------------------

const STATUS = {
  waiting: "waiting", answering: "answering…", done: "answered", left: "left the room (cancelled)",
  busy: "server full (529)", failed: "failed",
};

export function createAskPresenter({ send }) {
  const panel = $("ask-panel"), list = $("ask-list"), count = $("ask-count"), hiddenLine = $("ask-hidden");
  const how = $("ask-how"), errorLine = $("ask-error"), box = $("ask-timeline-box"), draw = $("ask-timeline");
  let round = null, phase = null, timeline = null, answered = 0;

  // The panel covers the screen: opening it takes the keyboard's focus there (Tab reaches its buttons next), closing
  // it gives the focus back to the button that opens it.
  function showPanel(on) {
    const was = !panel.hidden;
    panel.hidden = !on;
    document.body.classList.toggle("ask-open", on);
    if (on && !was) panel.focus({ preventScroll: true });
    if (!on && was && panel.contains(document.activeElement)) $("ask-open").focus({ preventScroll: true });
    if (on && timeline) redraw();
  }
  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }
  function sync() {
    $("ask-send").hidden = phase !== "open";
    $("ask-new").hidden = phase === "open";
    $("ask-close-round").hidden = phase !== "open" && phase !== "sent";
    how.hidden = phase !== "open";
  }

  // A (and the "Everyone asks" button): bring the round back on screen, send its questions, or open a new round.
  function key() {
    showError("");
    if (panel.hidden && phase !== null && phase !== "closed") return showPanel(true);
    showPanel(true);
    send({ type: "ask", op: phase === "open" ? "send" : "open" });
  }
  $("ask-open").addEventListener("click", () => { showError(""); if (phase === "open" || phase === "sent") showPanel(true); else key(); });
  $("ask-send").addEventListener("click", () => { showError(""); send({ type: "ask", op: "send" }); });
  $("ask-new").addEventListener("click", () => { showError(""); send({ type: "ask", op: "open" }); });
  $("ask-close-round").addEventListener("click", () => send({ type: "ask", op: "close" }));
  $("ask-hide-panel").addEventListener("click", () => showPanel(false));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !panel.hidden) showPanel(false); });

  function questions(f) {
    list.replaceChildren(...f.questions.map((q) => {
      const who = q.name ? `Q${q.qid} · ${q.name}` : `Q${q.qid}`;
      const li = node("li", { className: `ask-q status-${q.status}`, "data-qid": q.qid });
      const head = node("div", { className: "ask-q-head" });
      head.append(node("span", { className: "ask-who" }, who),
        node("span", { className: "ask-status" }, q.status === "done" ? `${STATUS.done} · ${q.tokens} tokens` : STATUS[q.status] || q.status));
      const hide = node("button", { type: "button", className: "button small ask-hide", "aria-label": `Hide question ${q.qid} from the projector` }, "Hide");
      hide.addEventListener("click", () => send({ type: "ask", op: "hide", qid: q.qid }));
      li.append(head, hide, node("p", { className: "ask-q-text" }, q.text));
      return li;
    }));
    const students = `${f.connected} student${f.connected === 1 ? "" : "s"}`;
    count.textContent = f.phase === "open" ? `${f.asked} of ${students} asked` + (f.asked >= f.max_questions ? " (the round is full)" : "")
      : `${f.asked} question${f.asked === 1 ? "" : "s"} sent together`;
    hiddenLine.hidden = !f.hidden;
    hiddenLine.textContent = f.hidden ? `${f.hidden} question${f.hidden === 1 ? "" : "s"} hidden from this screen` : "";
  }

  // The timeline fills what the panel has left under its caption, keeping room for the two lines under it. Rows are
  // at least as tall as the type, so every name stays readable: past what fits, the renderer sums the rest up
  // ("+ 6 more"); a few rows get thick ones, up to 64 px, that the back row can see.
  function redraw() {
    if (!timeline || panel.hidden) return;
    box.hidden = false;
    const projector = document.body.classList.contains("projector");
    const font = projector ? 24 : 13;  // the renderer's type size
    const top = draw.getBoundingClientRect().top - panel.getBoundingClientRect().top;
    const room = Math.max(font * 12, panel.clientHeight - top - 5 * font);
    const fixed = Math.round(font * 5.8) + 10;  // the renderer's batch strip, axis and "+ N more" line
    const least = Math.ceil(font * 1.15);
    const maxRows = Math.max(3, Math.min(32, Math.floor((room - fixed) / least)));
    const shown = Math.min(maxRows, timeline.requests.length) || 1;
    const rowHeight = Math.round(Math.min(64, Math.max(least, (room - fixed) / (shown + 1))));
    drawTimeline(draw, timeline, { projector, maxRows, rowHeight,
      label: "The class's requests in the model's decode steps: one row per question, one mark per step it took part in" });
    $("ask-timeline-sum").textContent = timelineSummary(timeline, answered);
  }
  window.addEventListener("resize", redraw);
  new MutationObserver(redraw).observe(document.body, { attributes: true, attributeFilter: ["class"] });

  function handle(f) {
    switch (f.type) {
      case "room.ask":
        round = f.round; phase = f.phase;
        if (f.phase === "open") { timeline = null; box.hidden = true; draw.replaceChildren(); list.replaceChildren(); }
        if (f.phase !== "closed") showPanel(true);
        sync();
        break;
      case "room.questions":
        if (f.round !== round) break;
        questions(f);
        answered = f.answered;
        break;
      case "room.timeline":
        if (f.round !== round) break;
        timeline = f;
        redraw();
        break;
      case "error":
        if (!panel.hidden) showError(f.error.message);
        break;
      default: break;
    }
  }
  sync();
  return { handle, key, get open() { return !panel.hidden; } };
}
