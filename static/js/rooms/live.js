// The live run panel on both screens: the reply as it streams, the last token's candidates,
// the guess, and the reveal. Everything from the server is inserted as text, never as HTML.

import { visibleToken } from "../lib/tokens.js";

const $ = (id) => document.getElementById(id);

export function label(text) {
  return text === null || text === undefined ? "other" : visibleToken(text);
}

function bars(list, rows, { valueText, highlight }) {
  list.replaceChildren();
  const max = Math.max(1e-9, ...rows.map((r) => r.value));
  for (const r of rows) {
    const li = document.createElement("li");
    if (highlight && highlight(r)) li.classList.add("hit");
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = label(r.text);
    const track = document.createElement("span");
    track.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${Math.max(1, (100 * r.value) / max)}%`;
    track.append(fill);
    const val = document.createElement("span");
    val.className = "bar-value";
    val.textContent = valueText(r);
    li.append(name, track, val);
    list.append(li);
  }
}

const pct = (p) => (p >= 0.095 ? `${Math.round(p * 100)}%` : `${(p * 100).toFixed(1)}%`);

// The page's footer names the model that computes what is on screen (templates/base.html's sentence): the
// presenter may switch between the bundled model and a local one during the lesson, so each run renames it.
function nameInFooter(name) {
  const foot = document.querySelector("footer.site");
  const bundledName = document.querySelector(".live")?.dataset.bundledName;
  if (!foot || !bundledName) return;
  const which = name === bundledName ? "the bundled model" : "the local model";
  foot.textContent = `Every number here is computed by ${which} (${name}) running on this server, not by Claude.`;
}

export function createLive({ role, sendGuess }) {
  const status = $("live-status"), text = $("live-text"), prompt = $("live-prompt"), model = $("live-model");
  const cands = $("live-candidates"), guess = $("guess"), reveal = $("reveal");
  let runId = null, guessIndex = null, lastIndex = -1;
  let guessOpen = false;
  let answers = null;  // the presenter's latest room.answers: it can arrive just before the room.guess it counts
  let paused = false, running = false;  // the run's mode, from room.run and (on the presenter's screen) room.mode
  const PAUSED = role === "presenter" ? "paused: Space releases one token" : "paused by the presenter";
  const runningStatus = () => (paused ? PAUSED : "generating");

  function setStatus(s) { status.textContent = s; }

  // On the presenter's screen (the one projected) a reveal fills the screen: two large bar charts
  // side by side that the back row can read. It closes when the presenter moves on (a step, play,
  // a new guess or run), or with Esc or its button.
  function fullReveal(on) {
    if (role !== "presenter") return;
    reveal.classList.toggle("full", on);
    document.body.classList.toggle("reveal-open", on);
    const back = $("reveal-close");
    if (back) back.hidden = !on;
  }
  $("reveal-close")?.addEventListener("click", () => fullReveal(false));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") fullReveal(false); });

  // A student's phone during a guess: the buttons first and in view, and nothing that could give the
  // answer away (the last token's candidates, and the stage page, whose recorded run already holds it).
  function guessing(on) {
    if (role !== "student") return;
    document.getElementById("room")?.classList.toggle("guessing", on);
    if (on) cands.hidden = true;
  }

  // A countdown the presenter chose: the seconds left, on every screen; the server reveals when they run out.
  let timer = null;
  function countdown(seconds) {
    clearInterval(timer);
    const el = $("guess-timer");
    el.hidden = !seconds;
    if (!seconds) return;
    const ends = Date.now() + seconds * 1000;
    const tick = () => {
      const left = Math.max(0, Math.ceil((ends - Date.now()) / 1000));
      el.textContent = left ? `${left} s left` : "time is up";
      if (!left) clearInterval(timer);
    };
    tick();
    timer = setInterval(tick, 250);
  }

  function markMine(text) {
    $("guess-mine").textContent = `Your guess: ${label(text)} (you can change it until the reveal)`;
    for (const b of $("guess-choices").querySelectorAll("button")) b.classList.toggle("mine", b.dataset.text === text);
  }

  function showGuess(frame) {
    fullReveal(false);
    guessing(true);
    guessIndex = frame.index;
    guessOpen = true;
    reveal.hidden = true;
    $("reveal-mine").hidden = true;
    guess.hidden = false;
    $("guess-mine").textContent = "";
    countdown(frame.seconds || 0);
    const box = $("guess-choices");
    box.replaceChildren();
    for (const c of frame.choices) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "button choice";
      b.textContent = label(c);
      b.setAttribute("aria-label", `Guess ${JSON.stringify(c)}`);
      b.dataset.text = c;
      b.disabled = role !== "student";
      b.addEventListener("click", () => sendGuess && sendGuess(c));
      box.append(b);
    }
    $("guess-form").hidden = role !== "student";
    showAnswers();
    setStatus(role === "student" ? "your guess?" : "the class is guessing");
    if (role === "student") guess.scrollIntoView({ block: "start" });
  }

  if (role === "student") {
    $("guess-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = $("guess-input").value;
      if (v.trim() && sendGuess) sendGuess(v);
    });
  }

  // "12 of 20 answered", on the presenter's screen while the class guesses
  function showAnswers() {
    const el = $("answer-count");
    const a = answers && guessOpen && answers.index === guessIndex ? answers : null;
    el.hidden = !a;
    el.textContent = a ? `${a.answered} of ${a.connected} answered` : "";
  }

  function tallyBars(frame, target) {
    const total = Math.max(1, frame.total);
    bars(target, frame.guesses.map((g) => ({ text: g.text, value: g.count / total, count: g.count })), {
      valueText: (r) => `${r.count}`,
      highlight: frame.drawn ? (r) => r.text === frame.drawn.text : null,
    });
  }

  function handle(frame) {
    switch (frame.type) {
      case "room.state":  // the class moved on to another stage: last stage's reveal goes with it
        if (!guessOpen) { fullReveal(false); reveal.hidden = true; }
        break;
      case "room.run":
        if (frame.phase === "start") {
          fullReveal(false);
          runId = frame.run_id;
          lastIndex = -1;
          text.replaceChildren();
          prompt.hidden = false;
          prompt.textContent = `Prompt (${frame.input_tokens} tokens): …${frame.prompt.slice(-160)}`;
          model.hidden = !frame.model;  // the model that computes this run: the bundled one or a local model
          model.textContent = frame.model ? `on ${frame.model}` : "";
          if (frame.model) nameInFooter(frame.model);
          cands.hidden = true; guess.hidden = true; reveal.hidden = true;
          running = true;
          paused = frame.mode === "pause";
          setStatus(runningStatus());
        } else if (frame.run_id === runId) {
          running = false;
          guessOpen = false; guess.hidden = true;
          setStatus(frame.error ? `stopped: ${frame.error.message}` : `finished (${frame.stop_reason})`);
        }
        break;
      case "room.token": {
        if (frame.run_id !== runId || frame.index <= lastIndex) break;
        lastIndex = frame.index;
        for (const old of text.querySelectorAll(".live-tok.last")) old.classList.remove("last");
        const span = document.createElement("span");
        span.className = "live-tok last";
        span.textContent = frame.piece;
        span.title = `token ${frame.token} ${JSON.stringify(frame.text)}`;
        text.append(span);
        text.scrollTop = text.scrollHeight;  // keep the newest token in view
        cands.hidden = false;
        bars($("live-bars"), frame.candidates.map((c) => ({ text: c.text, value: c.p, token: c.token })), {
          valueText: (r) => pct(r.value), highlight: (r) => r.token === frame.token,
        });
        if (!guessOpen) setStatus(runningStatus());
        break;
      }
      case "room.mode":
        paused = frame.mode === "pause";
        if (running && !guessOpen) setStatus(runningStatus());
        break;
      case "room.guess":
        showGuess(frame);
        break;
      case "room.catchup": {  // joined (or rejoined after a lost connection) in the middle of a run: everything so far at once
        handle(frame.run);
        for (const t of frame.tokens.slice(0, -1)) {
          const span = document.createElement("span");
          span.className = "live-tok";
          span.textContent = t.piece;
          text.append(span);
          lastIndex = t.index;
        }
        if (frame.last) handle(frame.last);
        if (frame.reveal) handle(frame.reveal);
        if (frame.guess) showGuess(frame.guess);
        if (frame.guess && frame.mine !== undefined) markMine(frame.mine);  // rejoined: the answer given before still counts
        if (frame.end) handle(frame.end);
        break;
      }
      case "room.guessed":
        markMine(frame.text);
        break;
      case "room.result": {  // a student's own round, first in the reveal: their guess, right or not, their score so far
        const el = $("reveal-mine");
        const s = frame.score;
        const so = `You: ${s.right} right of ${s.answered} answered${s.rounds > s.answered ? ` (${s.rounds} rounds)` : ""}.`;
        el.textContent = frame.guess === null ? `You did not guess this round. ${so}`
          : `${frame.right ? "✓ Right" : "✗ Not this time"}: you guessed ${label(frame.guess)}. ${so}`;
        el.classList.toggle("right", frame.right);
        el.classList.toggle("wrong", frame.guess !== null && !frame.right);
        el.hidden = false;
        reveal.scrollIntoView({ block: "start" });  // the reveal and this line above the fold of a phone
        break;
      }
      case "room.score": {  // the presenter's screen only: the class's accuracy over the rounds, and nicknames if asked
        const box = $("score");
        box.hidden = !frame.on;
        if (!frame.on) break;
        $("score-line").textContent = `Class score: ${frame.right} right of ${frame.answered} guesses over ${frame.rounds} round${frame.rounds === 1 ? "" : "s"}`;
        const list = $("score-board");
        list.replaceChildren(...frame.board.map((r) => {
          const li = document.createElement("li");
          li.textContent = `${r.name}: ${r.right} of ${r.answered}`;  // a nickname is a person's text: never HTML
          return li;
        }));
        list.hidden = !frame.names;
        break;
      }
      case "room.answers":
        answers = frame;
        showAnswers();
        break;
      case "room.tally":
        if (frame.index !== guessIndex) break;
        reveal.hidden = false;
        $("reveal-title").textContent = `Guesses so far: ${frame.total}`;
        tallyBars(frame, $("reveal-class"));
        $("reveal-model").replaceChildren();
        $("reveal-drawn").textContent = "The model's probabilities stay hidden until you reveal.";
        $("reveal-score").hidden = true;
        break;
      case "room.reveal": {
        guessing(false);
        guessOpen = false;
        countdown(0);
        showAnswers();
        guess.hidden = true;
        reveal.hidden = false;
        $("reveal-title").textContent = `The class guessed, then the model drew`;
        $("reveal-class-caption").textContent = `The class (${frame.total} guess${frame.total === 1 ? "" : "es"})`;
        tallyBars(frame, $("reveal-class"));
        bars($("reveal-model"), frame.model.map((c) => ({ text: c.text, value: c.p })), {
          valueText: (r) => pct(r.value), highlight: (r) => r.text === frame.drawn.text,
        });
        const p = frame.drawn.p === null || frame.drawn.p === undefined ? "" : ` (probability ${pct(frame.drawn.p)})`;
        $("reveal-drawn").textContent = `The model drew ${label(frame.drawn.text)}${p}.`;
        $("reveal-score").hidden = false;
        $("reveal-score").textContent = `${frame.right} of ${frame.total} guessed it`;
        setStatus("revealed");
        fullReveal(true);
        break;
      }
      default:
        break;
    }
  }
  return { handle, setStatus, closeReveal: () => fullReveal(false) };
}
