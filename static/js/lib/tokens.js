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

// ---- a token's bytes ----------------------------------------------------------------------------
// A byte-level tokenizer cuts text anywhere, also inside a character: 中 is the three bytes E4 B8 AD, and a
// token may hold E4 alone. Decoded by itself such a token is U+FFFD (�), which hides what it is; every page
// shows the byte instead, as ‹E4›, and where a run of neighbouring tokens together makes whole characters,
// shows those characters once after the run (joinedMark). explainer/stages/words.py (token_text,
// token_runs) is the same on the server; a test checks both agree.
const strictUTF8 = new TextDecoder("utf-8", { fatal: true });
const hex2 = (b) => b.toString(16).toUpperCase().padStart(2, "0");

// How many bytes a UTF-8 sequence starting with `lead` claims (0: a byte no character starts with).
const utf8Length = (lead) => (lead < 0x80 ? 1 : lead >> 5 === 6 ? 2 : lead >> 4 === 14 ? 3 : lead >> 3 === 30 ? 4 : 0);

// [start, end, text or null] for each whole character of `bytes`, and for each byte that is not part of one
// (null: a character cut off, or not valid UTF-8; the next byte is then read afresh).
export function utf8Characters(bytes) {
  const out = [];
  let i = 0;
  while (i < bytes.length) {
    const n = utf8Length(bytes[i]);
    let ch = null;
    if (n && i + n <= bytes.length) {
      try { ch = strictUTF8.decode(Uint8Array.from(bytes.slice(i, i + n))); } catch { ch = null; }
    }
    if (ch === null) { out.push([i, i + 1, null]); i += 1; } else { out.push([i, i + n, ch]); i += n; }
  }
  return out;
}

// A token's text from its bytes (an array of numbers or a Uint8Array), each byte that is not part of a
// whole character written ‹E4›, never U+FFFD. visibleToken then shows it like any token's text.
export function tokenText(bytes) {
  return utf8Characters(bytes).map(([a, , ch]) => (ch === null ? `‹${hex2(bytes[a])}›` : ch)).join("");
}

// For each token of a sequence (given as its bytes): {part: whether it holds part of a character,
// joins: on the last token of a run of neighbours that together make whole characters, those characters
// as visibleToken shows them, else null}. A run takes in every token from the first byte of its first cut
// character to the last byte of its last one.
export function tokenRuns(pieces) {
  const data = pieces.flatMap((p) => Array.from(p));
  const owner = pieces.flatMap((p, k) => Array.from(p, () => k));
  const out = pieces.map((p) => ({ part: utf8Characters(Array.from(p)).some(([, , ch]) => ch === null), joins: null }));
  const close = (run) => { if (run) out[run[1]].joins = visibleToken(tokenText(data.slice(run[2], run[3]))); };
  let run = null;  // [first token, last token, first byte, last byte + 1]
  for (const [a, b, ch] of utf8Characters(data)) {
    if (ch === null || owner[a] === owner[b - 1]) continue;
    if (run && owner[a] <= run[1]) { run[1] = owner[b - 1]; run[3] = b; }
    else { close(run); run = [owner[a], owner[b - 1], a, b]; }
  }
  close(run);
  return out;
}

// What follows the last token of such a run: the characters it makes, once, in a small mark that is not a
// token ("=中"), its title saying so. A token of a run gets the class "part" (a dashed border) from the caller.
export function joinedMark(joins) {
  const m = document.createElement("span");
  m.className = "tok-joined";
  m.textContent = `=${joins}`;
  m.title = `the bytes of the tokens before make “${joins}”`;
  return m;
}

// `chip` as it goes into a row of tokens: alone, or, when it ends a run (`joins`), held together with the
// run's character so that a line never breaks between them. `hidden`: the mark is left to the chip's own
// label (inside a listbox, where only options speak).
export function withJoined(chip, joins, { hidden = false } = {}) {
  if (!joins) return chip;
  const glue = document.createElement("span");
  glue.className = "tok-glue";
  const m = joinedMark(joins);
  if (hidden) m.setAttribute("aria-hidden", "true");
  glue.append(chip, m);
  return glue;
}
