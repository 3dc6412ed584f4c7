"""Browser tests: a real Daphne process serving the app, driven by Debian's Chromium through Playwright."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.frame_schema import assert_frames
from tests.live_server import daphne

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def pytest_collection_modifyitems(config, items):
    """Every test in this folder drives Chromium: it is marked browser even if its module forgets to say so
    (-m "not browser" must never start a browser)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")
def server(tmp_path_factory):
    """The app under Daphne, as the README's run command starts it, on a free port."""
    with daphne(tmp_path_factory.mktemp("appdata")) as srv:
        yield srv


# Package scope, not session: Playwright's sync API keeps an event loop running while it is
# open, which would break the async (pytest-asyncio) tests that run after this package.
@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not path:
        pytest.fail("Browser tests need Chromium: install Debian's 'chromium' package or set CHROMIUM_PATH.")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def watch_sockets(pg) -> list[tuple[str, str]]:
    """Record every text frame the page's WebSockets receive and send, with the root of the frames' JSON Schema
    (static/schema/frames.json) it must fit: what ws/stream/ and ws/rooms/<code>/ send the JavaScript, and what
    the JavaScript sends them."""
    frames: list[tuple[str, str]] = []

    def on_socket(ws) -> None:
        path = urlsplit(ws.url).path
        roots = (("StreamFrame", "StreamCommand") if path == "/ws/stream/" else
                 ("RoomFrame", "RoomCommand") if path.startswith("/ws/rooms/") else None)
        if roots:
            ws.on("framereceived", lambda payload: frames.append((roots[0], payload)) if isinstance(payload, str) else None)
            ws.on("framesent", lambda payload: frames.append((roots[1], payload)) if isinstance(payload, str) else None)
    pg.on("websocket", on_socket)
    return frames


def check_sockets(frames: list[tuple[str, str]]) -> None:
    """The frames :func:`watch_sockets` recorded fit the schema (a page that opened no socket has none)."""
    for root, text in frames:
        assert_frames([text], root)


@pytest.fixture(scope="module")
def class_server(tmp_path_factory):
    """A server whose join address phones can reach, as far as the app can tell: the suite's server listens on
    127.0.0.1 only, so its lobby rightly says that phones cannot join (test_rooms_lobby.py). Here
    EXPLAINER_PUBLIC_URL names the address students use, as whoever runs the server behind a proxy sets it;
    the tests only decode that address from the QR code, they never open it."""
    with daphne(tmp_path_factory.mktemp("classroom"), EXPLAINER_PUBLIC_URL="http://classroom.test:8000") as srv:
        yield srv


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors
    pg.socket_frames = watch_sockets(pg)
    yield pg
    context.close()
    check_sockets(pg.socket_frames)


@pytest.fixture
def shoot(request):
    """Save a screenshot under shots/ (a test artifact, ignored by git) for people reviewing the pages."""
    def _shoot(pg, name: str) -> None:
        out = ROOT / "shots"
        out.mkdir(exist_ok=True)
        pg.screenshot(path=str(out / f"{name}.png"), full_page=True)
    return _shoot


AXE = ROOT / "tests" / "vendor" / "axe-core-4.14.1.min.js"  # from the npm registry, MPL-2.0 (licence beside it)


@pytest.fixture
def axe():
    """Run axe-core in the page; fail on any serious or critical accessibility violation."""
    def _check(pg) -> list[dict]:
        pg.evaluate(AXE.read_text())  # not a <script> tag: the pages' CSP refuses inline scripts
        result = pg.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert not bad, "\n".join(f"{v['id']} ({v['impact']}): {v['help']} -> {[n['target'] for n in v['nodes'][:3]]}" for v in bad)
        return result["violations"]
    return _check


@pytest.fixture
def link(server):
    """link("tokenize", Scenario(...), layer=2) -> absolute URL of that stage for that scenario."""
    from tests.urls import stage_url

    return lambda slug, scenario=None, **opts: server["url"] + stage_url(slug, scenario, **opts)


@pytest.fixture
def phone(browser):
    """A page in a 390 x 844 touch viewport (a phone), with page errors collected in ``.js_errors``."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.js_errors = []
    pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
    pg.socket_frames = watch_sockets(pg)
    yield pg
    ctx.close()
    check_sockets(pg.socket_frames)


SCREENS = {"laptop": (1366, 768), "phone": (390, 844)}  # the sizes the stage pages promise their first screen at


@pytest.fixture
def screen_page(browser):
    """screen_page("phone") or screen_page((320, 640)) -> a page at that screen's size (a touch device below
    700 px, as the phone), its page errors collected in ``.js_errors``; closed after the test."""
    contexts = []

    def _open(screen):
        w, h = SCREENS[screen] if isinstance(screen, str) else screen
        phone = w < 700
        ctx = browser.new_context(viewport={"width": w, "height": h}, is_mobile=phone, has_touch=phone)
        contexts.append(ctx)
        pg = ctx.new_page()
        pg.js_errors = []
        pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
        return pg

    yield _open
    for ctx in contexts:
        ctx.close()


def assert_fits_phone(pg) -> None:
    """No sideways scrolling at 390 px. A mobile viewport widens itself to fit overflowing content,
    so the viewport's own width is checked too, and the culprits are named when it fails."""
    assert pg.evaluate("window.innerWidth") == 390
    wide = pg.evaluate("""() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 392)
        .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)""")
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390, wide
