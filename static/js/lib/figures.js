// The browser's copy of explainer/lifecycle/figures.py: the same definitions of characters (code
// points), bytes (UTF-8), words (runs between whitespace) and the two ratios, of a request body's size
// and of a stream's events, for the figures a page recomputes in place. A test checks both give the
// same numbers.
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

// The app's own field of a body sent over its WebSocket (the seed, the pace): the API never reads it.
export const APP_FIELD = "explainer";

// A request body as the SDKs send it: compact JSON, without the app's own field.
export function bodyFigures(body) {
  const api = body && typeof body === "object" && !Array.isArray(body) && APP_FIELD in body
    ? Object.fromEntries(Object.entries(body).filter(([k]) => k !== APP_FIELD)) : body;
  const text = JSON.stringify(api);
  return { characters: [...text].length, bytes: new TextEncoder().encode(text).length };
}

// The Messages API's stream events: what POST /v1/messages sends as Server-Sent Events. The WebSocket's
// explainer.* frames are the app's own, and an error is reported on its own: neither is an event here.
export const API_EVENTS = ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop",
  "message_delta", "message_stop"];
export const isApiEvent = (frame) => API_EVENTS.includes(frame?.type);

// One event's bytes on the wire: an event: line, a data: line of compact JSON, a blank line.
export const sseBytes = (frame) => new TextEncoder().encode(`event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`).length;

// A stream's figures from its frames, in any mix: its API events, its deltas, those that carry text, its bytes.
export function streamFigures(frames) {
  const events = frames.filter(isApiEvent);
  const deltas = events.filter((f) => f.type === "content_block_delta");
  return {
    events: events.length, deltas: deltas.length,
    text_deltas: deltas.filter((f) => f.delta?.type === "text_delta").length,
    wire_bytes: events.reduce((sum, f) => sum + sseBytes(f), 0),
  };
}

// The HTTP status of each error type (explainer/lifecycle/errors.py STATUS).
export const STATUS = {
  invalid_request_error: 400, authentication_error: 401, permission_error: 403, not_found_error: 404,
  request_too_large: 413, rate_limit_error: 429, api_error: 500, timeout_error: 504, overloaded_error: 529,
};
