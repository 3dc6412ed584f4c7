// How a token's text is shown, everywhere in the app (chips, tables, heatmap labels, the classroom):
// a space is ·, a line break ↵, a tab ⇥, a carriage return ␍, the empty string ∅, and any other
// invisible character (controls, bidi marks, zero-width and odd spaces) ⟨U+XXXX⟩, so a token is never
// blank and never reorders what is around it. explainer/stages/words.py (visible_token) is the same on
// the server; a test checks both agree. Set the result with textContent, never as markup.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Zs}\p{Co}\p{Cn}]/gu;

export function visibleToken(text) {
  if (text === null || text === undefined) return "";
  if (text === "") return "∅";
  return text.replace(/ /g, "·").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍")
    .replace(INVISIBLE, (c) => `⟨U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`);
}
