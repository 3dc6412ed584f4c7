// Viridis, the perceptually uniform colour map (by Stéfan van der Walt and Nathaniel Smith,
// released to the public domain, CC0): 9 anchors, linearly interpolated. Readable in greyscale
// and for the common colour-vision deficiencies.

const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];

// viridis(t) for t in [0, 1] -> "rgb(r g b)"
export function viridis(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
  return `rgb(${c[0]} ${c[1]} ${c[2]})`;
}

// A diverging scale for signed values (blue - white - orange), for embeddings and activations.
export function diverging(t) {
  const x = Math.min(1, Math.max(-1, Number.isFinite(t) ? t : 0));
  const lo = [11, 92, 173], mid = [247, 247, 244], hi = [194, 94, 0];
  const end = x < 0 ? lo : hi;
  const f = Math.abs(x);
  const c = mid.map((v, k) => Math.round(v + f * (end[k] - v)));
  return `rgb(${c[0]} ${c[1]} ${c[2]})`;
}

// legend(container, scale, {min, max, label}) draws a horizontal colour bar with its end values.
export function legend(container, scale, { min = 0, max = 1, label = "" , signed = false } = {}) {
  const wrap = document.createElement("div");
  wrap.className = "legend";
  const bar = document.createElement("span");
  bar.className = "legend-bar";
  const stops = Array.from({ length: 11 }, (_, i) => {
    const t = i / 10;
    return `${scale(signed ? t * 2 - 1 : t)} ${i * 10}%`;
  });
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  const lo = document.createElement("span");
  lo.textContent = String(min);
  const hi = document.createElement("span");
  hi.textContent = String(max);
  const cap = document.createElement("span");
  cap.className = "legend-label";
  cap.textContent = label;
  wrap.append(cap, lo, bar, hi);
  container.append(wrap);
  return wrap;
}

// The page's value of a colour custom property (--masked, --line, ...) as [r, g, b], or fallback when the
// page does not set it: canvas-drawn charts (pixels, not CSS) read the scheme's colours through this.
export function cssColor(name, fallback = [0, 0, 0]) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  if (!value) return fallback;
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.fillStyle = `rgb(${fallback.join(" ")})`;
  ctx.fillStyle = value;  // a value the canvas cannot parse leaves the fallback
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(ctx.fillStyle);
  if (m) return [1, 2, 3].map((i) => parseInt(m[i], 16));
  const n = ctx.fillStyle.match(/[\d.]+/g);  // rgba(...) when the colour is not opaque
  return n && n.length >= 3 ? n.slice(0, 3).map(Number) : fallback;
}
