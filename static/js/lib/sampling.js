// From logits to the next token, in the browser: a line-by-line port of explainer/llm/sampling.py.
//
// Same steps in the same order, in float64, so the sliders show exactly the distribution the
// engine draws from (tests/browser/test_stage_sampling.py checks the two agree to 1e-6):
//   1. scale: logits / temperature (temperature 0 means greedy: the arg-max is certain);
//   2. softmax over the whole vocabulary;
//   3. top-k: keep the k most likely tokens (ties broken by lower token id);
//   4. top-p: keep the smallest set of the most likely tokens whose probabilities reach p;
//   5. renormalise what is kept; draw by inverse CDF with one uniform number u.
//
// Example:
//   const d = distribution(logits, { temperature: 0.7, top_k: 40, top_p: 0.9 }, [256, 257, 258]);
//   draw(d, 0.25)  // -> a token id

// Token ids, most likely first; ties go to the lower id (numpy: lexsort((ids, -logits))).
export function orderOf(logits) {
  const order = Array.from({ length: logits.length }, (_, i) => i);
  // NaN (both -Infinity) is falsy, so banned ids fall back to id order, as in numpy.
  order.sort((a, b) => (logits[b] - logits[a]) || (a - b));
  return order;
}

export function softmax(x) {
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;  // subtract the max for stability
  const e = new Float64Array(x.length);
  let sum = 0;
  for (let i = 0; i < x.length; i++) { e[i] = Math.exp(x[i] - max); sum += e[i]; }
  for (let i = 0; i < x.length; i++) e[i] /= sum;
  return e;
}

function check({ temperature, top_k, top_p }) {
  if (!(temperature >= 0)) throw new RangeError("temperature must be >= 0");
  if (top_k != null && !(top_k >= 0)) throw new RangeError("top_k must be >= 0");
  if (top_p != null && !(top_p > 0 && top_p <= 1)) throw new RangeError("top_p must be in (0, 1]");
}

// distribution(logits, {temperature, top_k, top_p}, banned)
//   -> {logits, scaled, probs, final, order, kept, available, cutByK, cutByP}
// `order` may be passed in when already known (it depends on the logits only, never on the knobs).
export function distribution(rawLogits, params = {}, banned = [], order = null) {
  const p = { temperature: 1, top_k: null, top_p: null, ...params };
  check(p);
  const V = rawLogits.length;
  const logits = Float64Array.from(rawLogits);
  for (const b of banned) logits[b] = -Infinity;  // the engine never samples these (role markers)
  order = order || orderOf(logits);
  if (p.temperature === 0) {
    const probs = new Float64Array(V);
    probs[order[0]] = 1;
    return { logits, scaled: Float64Array.from(logits), probs, final: Float64Array.from(probs), order, kept: 1,
      available: V - new Set(banned).size, cutByK: 0, cutByP: 0 };
  }
  const scaled = logits.map((v) => v / p.temperature);
  const probs = softmax(scaled);
  const keep = new Uint8Array(V).fill(1);
  if (p.top_k) {
    keep.fill(0);
    for (let i = 0; i < Math.min(p.top_k, V); i++) keep[order[i]] = 1;
  }
  let nKeep = V + 1;
  if (p.top_p != null && p.top_p < 1) {
    const sorted = new Float64Array(V);
    let total = 0;
    for (let i = 0; i < V; i++) { sorted[i] = keep[order[i]] ? probs[order[i]] : 0; total += sorted[i]; }
    let cum = 0;
    for (let i = 0; i < V; i++) {
      cum += sorted[i] / total;
      if (cum >= p.top_p - 1e-12) { nKeep = i + 1; break; }  // smallest prefix reaching p
    }
    for (let i = nKeep; i < V; i++) keep[order[i]] = 0;
  }
  const final = new Float64Array(V);
  let sum = 0, kept = 0;
  for (let i = 0; i < V; i++) if (keep[i]) { final[i] = probs[i]; sum += probs[i]; }
  for (let i = 0; i < V; i++) if (keep[i]) { final[i] /= sum; if (final[i] > 0) kept++; }
  // What each filter removed, counting only tokens that could be drawn at all (not the banned ones).
  const available = V - new Set(banned).size;
  const afterK = p.top_k ? Math.min(p.top_k, available) : available;
  const afterP = Math.min(afterK, nKeep);
  return { logits, scaled, probs, final, order, kept, available, cutByK: available - afterK, cutByP: afterK - afterP };
}

// The first n candidate rows, like Distribution.rows in Python.
export function rows(dist, n = 10) {
  const out = [];
  let cum = 0;
  for (const t of dist.order.slice(0, n)) {
    cum += dist.final[t];
    out.push({
      token: t, logit: dist.logits[t], scaled_logit: dist.scaled[t], probability: dist.probs[t],
      kept: dist.final[t] > 0, final_probability: dist.final[t], cumulative: Math.min(cum, 1),
    });
  }
  return out;
}

// Inverse-CDF draw with one uniform number u in [0, 1): the same arithmetic as sampling.draw.
export function draw(dist, u) {
  const { final, order } = dist;
  const V = order.length;
  const cum = new Float64Array(V);
  let c = 0, nonzero = 0;
  for (let i = 0; i < V; i++) {
    const p = final[order[i]];
    c += p;
    cum[i] = c;
    if (p !== 0) nonzero++;
  }
  const target = u * cum[V - 1];
  let lo = 0, hi = V;  // numpy searchsorted(side="right"): first i with cum[i] > target
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cum[mid] <= target) lo = mid + 1; else hi = mid;
  }
  return order[Math.min(lo, nonzero - 1)];
}

// Shannon entropy of the final distribution, in bits; 2 ** entropy is the "effective number of choices".
export function entropyBits(final) {
  let h = 0;
  for (const p of final) if (p > 0) h -= p * Math.log2(p);
  return Math.max(0, h);
}

// mulberry32: a small, fast 32-bit generator (Tommy Ettinger, public domain). Not NumPy's PCG64:
// the page's own draws are repeatable per link, but they are not the engine's random numbers.
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// A compact step (pages/sampling.py compact_step: a large vocabulary's step in a bounded size) laid out
// token by token in rank order, for distribution(): the `top` most likely tokens exactly, then the tail's
// runs, each run's tokens at its one score, with the engine's own token at its exact rank.
// Returns { logits, ids (the token's id, -1 for a tail token not sent), labels (index -> text), engine (its index) }.
export function expandCompact(c) {
  const n = c.ids.length + c.tail.reduce((sum, [count]) => sum + count, 0);
  const logits = new Float64Array(n);
  const ids = new Int32Array(n).fill(-1);
  const labels = new Map();
  const place = (at, k) => { logits[at] = c.logits[k]; ids[at] = c.ids[k]; labels.set(at, c.labels[k]); };
  for (let k = 0; k < c.top; k++) place(k, k);
  let at = c.top;
  const engineHere = () => { if (at === c.token_rank && c.ids.length > c.top) { place(at, c.top); at++; } };
  for (const [count, score] of c.tail) {
    for (let j = 0; j < count; j++) { engineHere(); logits[at++] = score; }
  }
  engineHere();
  return { logits, ids, labels, engine: c.token_rank };
}
