"""The README's two pictures, taken from a running app with Debian's Chromium (the test extra's
Playwright and Pillow):

    .venv/bin/python scripts/readme_pictures.py [--url http://127.0.0.1:8000]

docs/screenshot.png: the overview after a request's journey, on a laptop (1280x800).
docs/classroom.png: the lobby the projector shows while students join, beside projector mode on the
tokenize stage with a guess revealed, both at 1280x720, side by side at half size.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def overview(browser, url: str, out: Path) -> None:
    pg = browser.new_page(viewport={"width": 1280, "height": 800})
    pg.goto(f"{url}/learn/overview/")
    pg.locator("#prompt").fill("What is a PostgreSQL index?")
    pg.locator("#send").click()
    pg.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=60_000)
    pg.evaluate("scrollTo(0, 0)")
    pg.screenshot(path=str(out))
    pg.close()


def classroom(browser, url: str, out: Path) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = ctx.new_page()
    pg.goto(f"{url}/rooms/")
    pg.get_by_role("button", name="Start a room").click()
    pg.wait_for_url(re.compile(r"/rooms/\w{6}/present#k="))
    code = pg.locator(".join-code").inner_text().strip()
    phones = []
    for name in ("Ada", "Grace", ""):
        ph = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
        ph.goto(f"{url}/join?code={code}" + (f"&nickname={name}" if name else ""))
        if "/join" in ph.url:
            ph.get_by_role("button", name="Join").click()
        ph.wait_for_url(f"**/r/{code}/")
        phones.append(ph)
    pg.wait_for_timeout(1500)
    with tempfile.TemporaryDirectory() as tmp:
        lobby = Path(tmp) / "lobby.png"
        pg.screenshot(path=str(lobby))
        pg.keyboard.press("Enter")
        pg.locator("#stage-select").select_option("tokenize", force=True)
        pg.wait_for_timeout(800)
        pg.locator("#projector").click()
        pg.keyboard.press(" ")  # a run, paused
        pg.wait_for_timeout(800)
        for _ in range(3):
            pg.keyboard.press(" ")
            pg.wait_for_timeout(400)
        pg.keyboard.press("g")
        for i, ph in enumerate(phones):
            choices = ph.locator("#guess-choices button")
            choices.first.wait_for(timeout=10_000)
            choices.nth(min(i, choices.count() - 1)).click()
        pg.wait_for_timeout(800)
        projector = Path(tmp) / "projector.png"
        pg.screenshot(path=str(projector))
        a, b = Image.open(lobby), Image.open(projector)
        w, h = a.width // 2, a.height // 2
        sheet = Image.new("RGB", (2 * w + 24, h), "white")
        sheet.paste(a.resize((w, h), Image.LANCZOS), (0, 0))
        sheet.paste(b.resize((w, h), Image.LANCZOS), (w + 24, 0))
        sheet.save(out, optimize=True)
    ctx.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    args = ap.parse_args()
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        overview(browser, args.url, ROOT / "docs" / "screenshot.png")
        classroom(browser, args.url, ROOT / "docs" / "classroom.png")
        browser.close()
    print("wrote docs/screenshot.png and docs/classroom.png")


if __name__ == "__main__":
    main()
