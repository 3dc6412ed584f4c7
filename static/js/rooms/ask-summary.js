// The sentence under "Everyone asks"'s timeline (static/js/rooms/ask.js): how many of the class's requests shared
// how many decode steps, and what that gave. A module of its own, with no page in it, so Node can run it in a test.

function seconds(s) {
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`;
}

// ``answered``: the round's questions whose reply ended well (room.questions), wherever they ran.
export function timelineSummary(t, answered = 0) {
  const ours = new Set(t.highlight);
  const steps = t.steps.filter((s) => s.rows.some((id) => ours.has(id)));
  if (!steps.length) return "The class's requests have not reached the model's decode steps yet.";
  const most = Math.max(...steps.map((s) => s.rows.filter((id) => ours.has(id)).length));
  const tokens = t.requests.filter((r) => ours.has(r.id)).reduce((n, r) => n + r.tokens, 0);
  const span = steps[steps.length - 1].end - steps[0].start;
  const rate = span > 0 ? `: ${Math.round(tokens / span)} tokens a second for the class together` : "";
  const one = ours.size === 1 ? "1 request" : `${ours.size} requests`;
  const said = `${one} in ${steps.length} decode steps, up to ${most} of them in one step. ${tokens} tokens in ${seconds(span)}${rate}${t.done ? "." : " (so far)."}`;
  // With several server processes (Redis), each batches the students connected to it: this timeline is the presenter's.
  const endedHere = t.requests.filter((r) => ours.has(r.id) && r.reason === "end").length;
  const elsewhere = t.done ? answered - endedHere : 0;
  return elsewhere > 0 ? `${said} ${elsewhere} more answered question${elsewhere === 1 ? " was" : "s were"} served by another server process, which batches its own, so ${elsewhere === 1 ? "it is" : "they are"} not drawn here.` : said;
}

