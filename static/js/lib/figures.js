// The browser's copy of explainer/lifecycle/figures.py: the same definitions of characters (code
// points), bytes (UTF-8), words (runs between whitespace) and the two ratios, for the figures a page
// recomputes in place. A test checks both give the same numbers.
export const WORD = /[^ \t\n\r\f\v]+/g;

export function textFigures(text, tokens) {
  const characters = [...text].length;
  const bytes = new TextEncoder().encode(text).length;
  const words = (text.match(WORD) || []).length;
  return {
    characters, bytes, words, tokens,
    chars_per_token: tokens ? Math.round((characters / tokens) * 100) / 100 : null,
    tokens_per_word: words ? Math.round((tokens / words) * 100) / 100 : null,
  };
}

// A request body as the SDKs send it: compact JSON.
export function bodyFigures(body) {
  const text = JSON.stringify(body);
  return { characters: [...text].length, bytes: new TextEncoder().encode(text).length };
}
