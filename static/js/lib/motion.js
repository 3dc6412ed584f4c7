// The reader's motion preference: with prefers-reduced-motion: reduce, a scroll jumps instead of gliding
// (the stylesheet stops transitions and animations the same way: static/css/app.css).

const query = typeof matchMedia === "function" ? matchMedia("(prefers-reduced-motion: reduce)") : null;

export const reducedMotion = () => Boolean(query && query.matches);

// scrollIntoView({behavior: scrollBehavior()}): "smooth", or "auto" (at once) for a reader who asked for less motion
export const scrollBehavior = (smooth = true) => (smooth && !reducedMotion() ? "smooth" : "auto");
