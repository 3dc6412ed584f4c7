"""Preview pictures for shared links: one 1200 x 630 PNG per stage in static/og/<slug>.png.

A link to a stage pasted into a chat or a course page previews with the stage's title
(og:title) and this picture (og:image). Each picture is a real screenshot: the stage in embed
mode with the default scenario, in Debian's Chromium driven by Playwright (never a downloaded
browser). Run it again when a stage's look changes:

    .venv/bin/python scripts/og_images.py                # starts its own Daphne on a free port
    .venv/bin/python scripts/og_images.py --url http://127.0.0.1:8000 --only tokenize sampling

Needs the test extra (Playwright) and Chromium (``apt-get install chromium``, or CHROMIUM_PATH).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "static" / "og"
WIDTH, HEIGHT = 1200, 630
MAX_BYTES = 150 * 1024  # a preview is fetched by every chat app that unfurls the link: keep it light
# The picture shows the stage at work: its title and its visual, without the embed bar, the teaching
# text (a preview is too small to read it) or the download buttons.
PHOTO_CSS = (".embed-bar, .chart-dl, .stage-body > .explain { display: none !important; } body.embedded main { padding-top: 14px; }"
             ".stage-body, .stage-body.wide { grid-template-columns: minmax(0, 1fr) !important; }")
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explainer.settings")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars"]


@contextmanager
def daphne():
    """The app under Daphne with a throw-away data directory (the test suite's server helper)."""
    import django

    django.setup()
    from tests.live_server import daphne as live_daphne

    with tempfile.TemporaryDirectory(prefix="og-images-") as data, live_daphne(Path(data)) as srv:
        yield srv["url"]


def built_slugs() -> list[str]:
    from explainer.stages.registry import built

    return [s.slug for s in built()]


def photograph(base_url: str, slugs: list[str], chromium: str) -> list[tuple[str, int]]:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    made = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        # bypass_csp: the photo style sheet is added inline, which the pages' CSP (style-src 'self') refuses
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1, bypass_csp=True)
        for slug in slugs:
            page.goto(f"{base_url}/learn/{slug}/?embed=1", wait_until="networkidle")
            page.add_style_tag(content=PHOTO_CSS)
            page.evaluate("document.fonts.ready")
            page.wait_for_timeout(400)  # charts drawn on the next animation frame
            path = OUT / f"{slug}.png"
            page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT}, animations="disabled")
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise SystemExit(f"{path.relative_to(ROOT)} is {size / 1024:.0f} KB, over {MAX_BYTES // 1024} KB: simplify what the stage shows first.")
            made.append((slug, size))
        browser.close()
    return made


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running app to photograph (default: start one)")
    ap.add_argument("--only", nargs="+", metavar="SLUG", help="these stages only")
    args = ap.parse_args(argv)
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not chromium:
        raise SystemExit("Needs Chromium: install Debian's 'chromium' package or set CHROMIUM_PATH.")
    slugs = built_slugs()
    if args.only:
        unknown = sorted(set(args.only) - set(slugs))
        if unknown:
            raise SystemExit(f"Not a built stage: {', '.join(unknown)}")
        slugs = [s for s in slugs if s in args.only]
    if args.url:
        made = photograph(args.url.rstrip("/"), slugs, chromium)
    else:
        with daphne() as url:
            made = photograph(url, slugs, chromium)
    for slug, size in made:
        print(f"static/og/{slug}.png  {size / 1024:5.1f} KB")


if __name__ == "__main__":
    main()
