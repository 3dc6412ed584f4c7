// Which keys belong to the focused element: shared by every stage page (stage.js) and the presenter's room page,
// which listens for its shortcuts on the stage frame too.

export function typingIn(el) {
  return el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));
}

// Widgets whose own keys include the arrows (WAI-ARIA roles): inside one, ← and → belong to it.
const ARROW_WIDGETS = ["grid", "treegrid", "listbox", "tablist", "toolbar", "radiogroup", "menu", "menubar", "tree",
  "slider", "spinbutton", "combobox", "textbox", "scrollbar"].map((r) => `[role~="${r}"]`).join(", ");

// Whether the arrow keys pressed now belong to the focused element: a text field, a slider or any other
// input, a widget (the transformer's grid of heads, tokenize's listbox, Compose's tabs), a player, or a
// box that scrolls sideways (a long line of JSON). Only outside these do ← and → change the stage.
export function arrowsBelongTo(el) {
  const doc = el?.ownerDocument;  // the page's own, or a stage frame's (the presenter asks about its frame)
  if (!el || !doc || el === doc.body || el === doc.documentElement) return false;
  if (typingIn(el) || ["AUDIO", "VIDEO"].includes(el.tagName) || el.closest(ARROW_WIDGETS)) return true;
  return el.scrollWidth > el.clientWidth + 1 && ["auto", "scroll"].includes(doc.defaultView.getComputedStyle(el).overflowX);
}
