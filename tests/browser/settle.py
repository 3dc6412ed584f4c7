"""Waiting until a page has settled, instead of a fixed wait_for_timeout.

A stage page draws its charts after its data arrives (a fetch), and a fold's charts when it opens;
the tutorial's panel docks and scrolls its target into view. "Settled" is: no request in flight
(Playwright's network idle), then the page's layout (scroll position, page size, the boxes of
``watch``, how many charts are drawn) the same for ``frames`` animation frames in a row.

The predicates are functions, not expressions: an expression would need eval, which the pages'
CSP refuses.
"""
from __future__ import annotations

LAYOUT = """([frames, watch]) => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; };
  const d = document.documentElement;
  const now = JSON.stringify([scrollX, scrollY, d.scrollWidth, d.scrollHeight,
                              document.querySelectorAll('svg, canvas').length,
                              [...document.querySelectorAll(watch)].map(box)]);
  const s = window.__settling || (window.__settling = {last: null, same: 0});
  if (now === s.last) s.same += 1; else { s.last = now; s.same = 0; }
  return s.same >= frames;
}"""

WATCH = "main, [data-main-visual], #tut-panel, .fold-body"


def settled(pg, watch: str = WATCH, frames: int = 5, timeout: float = 15_000) -> None:
    """Wait until ``pg`` (a Page or a Frame) has no request in flight and its layout holds still."""
    pg.wait_for_load_state("networkidle", timeout=timeout)
    pg.evaluate("() => { window.__settling = null; }")
    pg.wait_for_function(LAYOUT, arg=[frames, watch], polling="raf", timeout=timeout)
