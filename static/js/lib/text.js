// User text with its invisible characters made visible: the client side of the show_controls
// template filter (explainer/stages/templatetags/usertext.py); keep the two alike. A bidi control
// reorders the text around it ("Pay \u202e1000" reads "Pay 0001") and a C0 or C1 control shows as
// nothing, so each becomes a marked span, ⟨U+202E⟩. Text is only ever set as text, never as HTML.

const BIDI_NAMES = {
  "\u061c": "arabic letter mark", "\u200e": "left-to-right mark", "\u200f": "right-to-left mark",
  "\u202a": "left-to-right embedding", "\u202b": "right-to-left embedding", "\u202c": "pop directional formatting",
  "\u202d": "left-to-right override", "\u202e": "right-to-left override", "\u2066": "left-to-right isolate",
  "\u2067": "right-to-left isolate", "\u2068": "first strong isolate", "\u2069": "pop directional isolate",
};
// C0 and C1 controls except \t and \n, and the bidi controls above.
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

export const hasControls = (s) => new RegExp(CONTROLS.source).test(s);

function marker(c) {
  const code = `U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}`;
  const span = document.createElement("span");
  span.className = "ctl";
  span.title = `${code}, ${BIDI_NAMES[c] || "control character"} (invisible in the text)`;
  span.textContent = `⟨${code}⟩`;
  return span;
}

// withControls("Pay \u202e1000") -> a fragment: "Pay ", <span class="ctl">⟨U+202E⟩</span>, "1000"
export function withControls(value) {
  const s = String(value);
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const m of s.matchAll(CONTROLS)) {
    if (m.index > last) frag.append(s.slice(last, m.index));
    frag.append(marker(m[0]));
    last = m.index + 1;
  }
  if (last < s.length) frag.append(s.slice(last));
  return frag;
}

// In place of el.textContent = s.
export function setText(el, s) {
  el.replaceChildren(withControls(s));
}

// A textarea cannot show markers, so a field marked data-show-controls gets a note below it, kept up
// to date as it is edited, with what it really holds. Wired once, when this module is first imported.
export function noteControls(field) {
  const next = field.nextElementSibling;
  let note = next && next.classList.contains("ctl-note") ? next : null;
  if (!hasControls(field.value)) {
    if (note) note.remove();
    return;
  }
  if (!note) {
    note = document.createElement("p");
    note.className = "hint ctl-note";
    field.after(note);
  }
  note.replaceChildren("Invisible characters in this field, shown: ", withControls(field.value));
}

for (const field of document.querySelectorAll("[data-show-controls]")) noteControls(field);
document.addEventListener("input", (e) => {
  if (e.target instanceof Element && e.target.matches("[data-show-controls]")) noteControls(e.target);
});

// A stop reason in words, for a learner (the API's name stays beside it).
const STOP_WORDS = {
  end_turn: "the model chose to stop (end_turn)",
  max_tokens: "reached max_tokens, the limit you set",
  stop_sequence: "hit one of your stop sequences (stop_sequence)",
  tool_use: "the model called a tool (tool_use)",
  model_context_window_exceeded: "the context window is full (model_context_window_exceeded)",
  refusal: "the model refused (refusal)",
  pause_turn: "the turn was paused (pause_turn)",
};
export function stopReasonInWords(reason) {
  return STOP_WORDS[reason] || String(reason);
}
