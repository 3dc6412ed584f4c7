"""Embed mode in Chromium (inside an iframe of another site, on a phone, with axe) and the
"Download PNG / SVG" control of every chart: real downloads, parsed and measured."""
import http.server
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from explainer.lifecycle.scenario import Scenario
from explainer.stages.registry import built
from tests.browser.conftest import assert_fits_phone
from tests.test_stage_tokenize import SCENARIO as TOKENIZE_SCENARIO

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[2] / "shots"
SVG_NS = "{http://www.w3.org/2000/svg}"
SCENARIO = Scenario(messages=[{"role": "user", "content": "How do Airflow pools limit concurrency?"}], seed=5)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Styles the downloaded SVG must carry itself, compared element by element with the page.
STYLE_PROBE = """(root) => [...root.querySelectorAll('text, line, path, circle, polyline, polygon')].map((e) => {
  const cs = getComputedStyle(e);
  return [e.localName, cs.fill, cs.stroke, cs.strokeWidth, cs.fontSize, cs.fontWeight, cs.opacity, cs.textAnchor];
})"""


@pytest.fixture(scope="module")
def other_site():
    """A second web server standing in for a course page on another site. It is reached as
    "localhost" while the app is "127.0.0.1": another origin and another site to the browser
    (both on the loopback, so Chromium's local-network rules leave the frame alone)."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "not here").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield {"url": f"http://localhost:{srv.server_port}", "pages": pages}
    srv.shutdown()


def lesson(*frames: str) -> str:
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>A course page</title></head>"
            "<body><h1>Lesson 3: tokens</h1>" + "".join(frames) + "</body></html>")


def charts_ready(pg):
    """Every chart has its control: right after it, or after its outermost aria-hidden box."""
    pg.wait_for_selector("main .chart-dl")
    pg.wait_for_function("""() => [...document.querySelectorAll('main svg[role=img]')].filter(s => !s.parentElement.closest('svg')).every(s => {
      let anchor = s;
      for (let n = s.parentElement; n && n.localName !== 'main'; n = n.parentElement) if (n.getAttribute('aria-hidden') === 'true') anchor = n;
      return anchor.nextElementSibling && anchor.nextElementSibling.matches('.chart-dl');
    })""")
    # never inside a part of the page hidden from screen readers (the control would be focusable there)
    assert pg.locator("[aria-hidden=true] .chart-dl").count() == 0


def chart_of(control):
    return control.locator("xpath=(preceding-sibling::*[1]/descendant-or-self::*[local-name()='svg' or local-name()='canvas'])[1]")


# ---- embed mode -----------------------------------------------------------------------------

def test_the_embed_code_works_in_a_frame_on_another_site(server, browser, link, other_site, shoot):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["clipboard-read", "clipboard-write"])
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # a view option changed in place (history.replaceState) is part of the embed code
    pg.goto(link("transformer", SCENARIO))
    pg.wait_for_selector(".attn-cell")
    pg.locator(".attn-cell[data-layer='2'][data-head='1']").click()
    pg.wait_for_function("() => location.search.includes('head=1')")
    pg.get_by_role("button", name="Copy embed code").click()
    expect(pg.locator(".scenario-bar .copy-status")).to_have_text(re.compile(r"^Embed code copied"))
    code = pg.evaluate("navigator.clipboard.readText()")
    m = re.fullmatch(r'<iframe src="([^"]+)" title="Transformer · Lifecycle Explainer" width="100%" height="720" style="[^"]*" loading="lazy"></iframe>', code)
    assert m, code
    src = m.group(1).replace("&amp;", "&")
    q = parse_qs(urlparse(src).query)
    assert q["embed"] == ["1"] and q["layer"] == ["2"] and q["head"] == ["1"] and q["s"]
    # "Copy link" still shares the full page
    assert "embed" not in pg.locator("[data-copy-link]").get_attribute("data-copy-link")

    full = link("transformer", SCENARIO)
    other_site["pages"]["/lesson"] = lesson(code, f'<iframe id="full" src="{full}" title="the full page" width="400" height="200"></iframe>')
    pg.goto(other_site["url"] + "/lesson")
    frame = pg.frame_locator("iframe[title='Transformer · Lifecycle Explainer']")
    assert frame.locator("h1").inner_text() == "Inside the transformer"
    assert frame.locator("#attn-title").inner_text() == "layer 2 · head 1"
    assert frame.locator("header.site, footer.site, nav.rail, nav.pager, a.skip").count() == 0
    frame.locator(".chart-dl").first.wait_for()
    # the full page refuses to be framed by another site (X-Frame-Options: SAMEORIGIN)
    pg.wait_for_load_state("load")
    blocked = pg.locator("#full").element_handle().content_frame()
    assert blocked.url.startswith("chrome-error://") and blocked.locator("body.embedded, main").count() == 0
    shoot(pg, "embed-in-another-site")
    # a link inside the frame stays inside it, embedded
    with pg.expect_event("framenavigated", predicate=lambda f: "/learn/compose/" in f.url) as nav:
        frame.locator("a.edit").click()
    embedded = nav.value
    embedded.wait_for_load_state()
    assert parse_qs(urlparse(embedded.url).query)["embed"] == ["1"]
    assert embedded.locator("body.embedded").count() == 1 and embedded.locator("header.site").count() == 0
    assert pg.url == other_site["url"] + "/lesson"
    assert not errors
    ctx.close()


@pytest.mark.parametrize("slug", [s.slug for s in built()])
def test_every_embedded_stage_keeps_its_links_embedded(server, page, link, slug):
    """Links a stage template writes itself (teaching text, "Undo edits") get embed=1 in the browser;
    only the "open in the explainer" link leaves, to the full page in a new tab."""
    page.goto(link(slug, SCENARIO, embed="1"))
    page.wait_for_load_state("networkidle")
    hrefs = page.evaluate("""() => [...document.querySelectorAll('a[href]')].map(a => [a.href, a.hasAttribute('data-embed-exit'), a.target])""")
    stage_links = [(h, exit_, target) for h, exit_, target in hrefs if urlparse(h).path.startswith("/learn/")]
    assert stage_links
    for h, exit_, target in stage_links:
        q = parse_qs(urlparse(h).query)
        if exit_:
            assert "embed" not in q and target == "_blank"
        else:
            assert q.get("embed") == ["1"], h
    assert page.locator("header.site, footer.site, nav.rail, nav.pager").count() == 0
    assert not page.js_errors


def test_changes_made_in_place_keep_embed(server, page, link):
    page.goto(link("transformer", SCENARIO, embed="1"))
    page.wait_for_selector(".attn-cell")
    page.locator(".attn-cell[data-layer='1'][data-head='3']").click()
    page.wait_for_function("() => location.search.includes('head=3')")
    q = parse_qs(urlparse(page.url).query)
    assert q["embed"] == ["1"] and q["layer"] == ["1"]
    # the way out follows the page as it is now, without embed
    page.locator("a.embed-open").hover()
    out = parse_qs(urlparse(page.locator("a.embed-open").get_attribute("href")).query)
    assert out["layer"] == ["1"] and out["head"] == ["3"] and "embed" not in out
    # a script that navigates by itself (the conversation's Send builds its URL from the path)
    page.goto(link("conversation", SCENARIO, embed="1"))
    first = parse_qs(urlparse(page.url).query)["s"]
    page.locator("#next-message").fill("And what is a pool slot?")
    with page.expect_navigation(url=lambda u: parse_qs(urlparse(u).query).get("s") != first):
        page.locator("#send").click()
    page.wait_for_load_state()
    assert parse_qs(urlparse(page.url).query)["embed"] == ["1"]
    assert "And what is a pool slot?" in page.locator("main").inner_text()
    assert page.locator("body.embedded").count() == 1 and page.locator("header.site").count() == 0
    assert not page.js_errors


# The tokenize page is checked with its own tests' scenario and token: with some selected tokens its
# greyed "beyond the vocabulary" merges fail axe's contrast rule, in and out of embed mode alike.
PHONE = {"overview": (SCENARIO, {}), "tokenize": (TOKENIZE_SCENARIO, {"token": "3"}), "transformer": (SCENARIO, {}),
         "caching": (SCENARIO, {}), "conversation": (SCENARIO, {}), "gateway": (SCENARIO, {})}


@pytest.mark.parametrize("slug", PHONE)
def test_an_embedded_stage_fits_a_phone(server, phone, link, axe, shoot, slug):
    scenario, opts = PHONE[slug]
    phone.goto(link(slug, scenario, **opts, embed="1"))
    phone.wait_for_load_state("networkidle")
    assert phone.locator("header.site, footer.site, nav.rail, nav.pager, a.skip").count() == 0
    assert phone.locator(".embed-bar a.embed-open").is_visible()
    assert_fits_phone(phone)
    axe(phone)
    if slug == "tokenize":
        shoot(phone, "embed-tokenize-phone")
    assert not phone.js_errors


def test_an_embedded_page_passes_axe_with_a_download_menu_open(server, page, link, axe, shoot):
    page.goto(link("caching", SCENARIO, embed="1"))
    charts_ready(page)
    page.locator(".chart-dl summary").first.click()
    axe(page)
    shoot(page, "embed-caching-1280")


# ---- downloads ------------------------------------------------------------------------------

def fetch(page, control, fmt, tmp_path):
    if not control.locator("details").evaluate("d => d.open"):
        control.locator("summary").click()
    with page.expect_download() as d:
        control.locator(f"button[data-format='{fmt}']").click()
    dl = d.value
    path = tmp_path / dl.suggested_filename
    dl.save_as(path)
    expect(control.locator(".chart-dl-status")).to_have_text(f"Saved {dl.suggested_filename}")
    return path


def check_svg(path: Path, chart) -> ET.Element:
    text = path.read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.encode())  # parses as XML
    assert root.tag == f"{SVG_NS}svg"
    assert 'xmlns="http://www.w3.org/2000/svg"' in text
    kids = list(root)
    assert kids[0].tag == f"{SVG_NS}title" and kids[0].text.strip()
    assert kids[1].tag == f"{SVG_NS}desc" and "/learn/" in kids[1].text and "embed" not in kids[1].text
    assert kids[2].tag == f"{SVG_NS}rect" and re.fullmatch(r"rgb\(\d+, \d+, \d+\)", kids[2].get("fill"))
    assert "var(" not in text  # every CSS variable resolved
    styled = [e for e in root.iter() if e.get("style")]
    assert len(styled) >= 3 and any("fill:" in e.get("style") for e in styled)
    box = chart.bounding_box()
    assert (int(root.get("width")), int(root.get("height"))) == (round(box["width"]), round(box["height"]))
    return root


def check_png(path: Path, chart) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    box = chart.bounding_box()
    assert abs(w - 2 * box["width"]) <= 2 and abs(h - 2 * box["height"]) <= 2  # twice the size on screen
    return w, h


@pytest.mark.parametrize("slug,expect", [("tokenize", 1), ("transformer", 5), ("caching", 3), ("conversation", 2)])
def test_every_chart_downloads_as_svg_and_png(server, browser, link, tmp_path, slug, expect):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(link(slug, SCENARIO))
    charts_ready(page)
    controls = page.locator("main .chart-dl")
    assert controls.count() >= expect
    files = []
    for i in range(controls.count()):
        control = controls.nth(i)
        chart = chart_of(control)
        svg_file = fetch(page, control, "svg", tmp_path)
        png_file = fetch(page, control, "png", tmp_path)
        assert re.fullmatch(rf"{slug}-[a-z0-9-]+\.svg", svg_file.name)
        assert png_file.name == svg_file.name[:-4] + ".png"
        check_svg(svg_file, chart)
        check_png(png_file, chart)
        files.append((svg_file, chart))
    assert len({f.name for f, _ in files}) == len(files)  # one file name per chart
    # each file looks the same outside the page: same colours, strokes and fonts on every mark
    alone = ctx.new_page()
    for svg_file, chart in files:
        alone.goto(svg_file.as_uri())
        assert alone.locator(":root").evaluate(STYLE_PROBE) == chart.evaluate(STYLE_PROBE), svg_file.name
    assert not errors
    ctx.close()


def test_charts_drawn_later_get_the_control_too(server, browser, link, tmp_path, shoot):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    # streaming: the timeline chart exists only after a live run
    page.goto(link("streaming", SCENARIO, pace="0"))
    page.wait_for_selector("body[data-streaming-ready]")
    assert page.locator("#timeline svg").count() == 0
    page.get_by_role("button", name="▶ Play live").click()
    page.wait_for_selector("#same:not(:empty)")
    charts_ready(page)
    control = page.locator("#timeline + .chart-dl")  # #timeline is aria-hidden: the control sits after it
    png = fetch(page, control, "png", tmp_path)
    assert png.name == "streaming-when-each-token-arrived-in-the-browser.png"
    check_png(png, page.locator("#timeline svg"))
    page.locator("#timeline").locator("xpath=..").screenshot(path=str(SHOTS / "download-streaming-timeline.png"))
    # transformer: choosing another head redraws the big map; its control comes back, once
    page.goto(link("transformer", SCENARIO))
    charts_ready(page)
    before = page.locator("main .chart-dl").count()
    page.locator(".attn-cell[data-layer='3'][data-head='2']").click()
    page.wait_for_function("() => document.getElementById('attn-title').textContent === 'layer 3 · head 2'")
    charts_ready(page)
    assert page.locator("main .chart-dl").count() == before
    assert page.locator("#attn-big > .chart-dl").count() == 1
    svg = fetch(page, page.locator("#attn-big > .chart-dl"), "svg", tmp_path)
    assert svg.name == "transformer-attention-map-layer-3-head-2.svg"
    root = ET.parse(svg).getroot()
    assert root.find(f"{SVG_NS}image").get("href").startswith("data:image/png;base64,")  # the heatmap travels inside
    # a canvas chart, added by a script after load, gets the control and downloads
    page.evaluate("""() => {
      const fig = document.createElement('figure');
      const c = document.createElement('canvas');
      c.width = 300; c.height = 120; c.style.width = '300px'; c.style.height = '120px';
      const g = c.getContext('2d'); g.fillStyle = '#0b5cad'; g.fillRect(10, 10, 120, 100);
      fig.dataset.chartName = 'A canvas test';
      fig.append(c); document.querySelector('main').append(fig);
    }""")
    page.wait_for_selector("main figure[data-chart-name] canvas + .chart-dl")
    control = page.locator("main figure[data-chart-name] .chart-dl")
    png = fetch(page, control, "png", tmp_path)
    assert png.name == "transformer-a-canvas-test.png"
    assert check_png(png, page.locator("main figure[data-chart-name] canvas")) == (600, 240)
    svg = fetch(page, control, "svg", tmp_path)
    root = ET.parse(svg).getroot()
    assert root.get("viewBox") == "0 0 300 120" and root.find(f"{SVG_NS}image").get("href").startswith("data:image/png")
    ctx.close()


def test_the_control_works_from_the_keyboard(server, browser, link, tmp_path, axe):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(link("tokenize", TOKENIZE_SCENARIO, token="3", embed="1"))
    charts_ready(page)
    control = page.locator("main .chart-dl").first
    summary = control.locator("summary")
    # the icon is hidden from screen readers; the name says which chart
    expect(summary).to_have_accessible_name("Download chart: Tokens in this context for vocabulary sizes from 0 to 20,000 merges")
    summary.focus()
    page.keyboard.press("Enter")
    assert control.locator("details").evaluate("d => d.open")
    expect(control.locator("button[data-format='png']")).to_have_accessible_name("PNG picture")
    expect(control.locator("button[data-format='svg']")).to_have_accessible_name("SVG drawing")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.format") == "png"
    with page.expect_download() as d:
        page.keyboard.press("Enter")
    assert d.value.suggested_filename == "tokenize-tokens-in-this-context-for-vocabulary-sizes.png"
    axe(page)
    page.locator(".tk-chart").screenshot(path=str(SHOTS / "download-control-tokenize.png"))
    page.keyboard.press("Escape")
    assert not control.locator("details").evaluate("d => d.open")
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"
    ctx.close()
