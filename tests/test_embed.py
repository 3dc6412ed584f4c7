"""Embed mode (?embed=1), its framing headers, and the OpenGraph preview of every stage page,
through Django's test client."""
import struct
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.registry import built
from explainer.stages.runs import codec

ROOT = Path(__file__).resolve().parent.parent
OG_DIR = ROOT / "static" / "og"
SLUGS = [s.slug for s in built()]
SCENARIO = Scenario(messages=[{"role": "user", "content": "What is a DAG?"}], seed=3)
# One view option per stage that has one, so links that carry view options are covered too.
SOME_OPTION = {"transformer": {"layer": "1", "head": "2"}, "tools": {"tool": "calculator"}, "sampling": {"step": "2"}}


class Page(HTMLParser):
    """The parts of a page these tests read: meta tags, links, and elements by class or tag."""

    def __init__(self, html: str):
        super().__init__()
        self.meta: dict[str, str] = {}
        self.links: list[dict] = []
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "meta" and a.get("content") is not None:
            self.meta[a.get("property") or a.get("name")] = a["content"]
        if tag == "a" and a.get("href"):
            self.links.append(a)

    def has(self, tag: str, cls: str | None = None, **attrs) -> bool:
        for t, a in self.tags:
            if t == tag and (cls is None or cls in (a.get("class") or "").split()) and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                return True
        return False

    def stage_links(self) -> list[dict]:
        return [a for a in self.links if urlparse(a["href"]).path.startswith("/learn/")]


def url(slug, scenario=SCENARIO, **opts):
    q = {"s": codec().encode(scenario)} if scenario is not None else {}
    q.update(opts)
    return f"/learn/{slug}/" + ("?" + urlencode(q) if q else "")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


# ---- embed mode -----------------------------------------------------------------------------

@pytest.mark.parametrize("slug", SLUGS)
@pytest.mark.slow
def test_it_drops_the_site_chrome_when_embedded(client, slug):
    r = client.get(url(slug, **SOME_OPTION.get(slug, {}), embed="1"))
    assert r.status_code == 200
    page = Page(r.content.decode())
    assert page.has("body", "embedded")
    assert not page.has("header", "site") and not page.has("footer", "site") and not page.has("a", "skip")
    assert not page.has("nav", "rail") and not page.has("nav", "pager")
    assert not any("data-copy-link" in a for _, a in page.tags) and not any("data-copy-embed" in a for _, a in page.tags)
    assert page.has("h1")
    assert "not by Claude" in r.content.decode()  # what really ran is said inside the frame too
    opener = [a for a in page.links if "embed-open" in (a.get("class") or "")]
    assert len(opener) == 1
    full = urlparse(opener[0]["href"])
    assert full.scheme == "http" and full.netloc == "testserver" and full.path == f"/learn/{slug}/"
    q = parse_qs(full.query)
    assert "embed" not in q and q["s"] == [codec().encode(SCENARIO)]
    for k, v in SOME_OPTION.get(slug, {}).items():
        assert q[k] == [v]
    assert opener[0]["target"] == "_blank" and "noopener" in opener[0]["rel"]


@pytest.mark.parametrize("slug", SLUGS)
@pytest.mark.slow
def test_links_to_stages_stay_embedded(client, slug):
    page = Page(client.get(url(slug, **SOME_OPTION.get(slug, {}), embed="1")).content.decode())
    for a in page.stage_links():
        q = parse_qs(urlparse(a["href"]).query)
        if "data-embed-exit" in a:
            assert "embed" not in q, a
        else:
            assert q.get("embed") == ["1"], a


@pytest.mark.slow
def test_view_option_links_stay_embedded(client):
    """Links written from page.url() (the tools and choices of the tools stage) keep embed=1."""
    page = Page(client.get(url("tools", embed="1")).content.decode())
    own = [a for a in page.stage_links() if "tool=" in a["href"]]
    assert len(own) >= 3
    assert all(parse_qs(urlparse(a["href"]).query)["embed"] == ["1"] for a in own)


@pytest.mark.parametrize("slug", SLUGS)
@pytest.mark.slow
def test_the_full_page_keeps_its_chrome_and_offers_the_embed_code(client, slug):
    for q in ({}, {"embed": "0"}, {"embed": ""}):
        r = client.get(url(slug, **q))
        assert r.status_code == 200
        page = Page(r.content.decode())
        assert page.has("header", "site") and page.has("footer", "site") and page.has("nav", "rail")
        assert not page.has("body", "embedded")
        assert any("data-copy-embed" in a for _, a in page.tags)
        copy = next(a for _, a in page.tags if "data-copy-link" in a)
        assert "embed" not in parse_qs(urlparse(copy["data-copy-link"]).query)
        assert not any("embed" in parse_qs(urlparse(a["href"]).query) for a in page.stage_links())


def test_only_embed_responses_may_be_framed_by_other_sites(client):
    embedded = client.get(url("tokenize", embed="1"))
    assert "X-Frame-Options" not in embedded.headers
    csp = embedded.headers["Content-Security-Policy"]
    assert "frame-ancestors *" in csp and "script-src 'self'" in csp  # frameable anywhere, still the full policy
    for r in (client.get(url("tokenize")), client.get(url("tokenize", embed="0")), client.get("/")):
        assert r.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert "frame-ancestors *" not in r.headers.get("Content-Security-Policy", "")


@pytest.mark.parametrize("bad", ["2", "true", "yes", "on", "01", " 1", "1.0", "-1", '"><script>alert(1)</script>'])
def test_any_other_embed_value_is_a_clear_400(client, bad):
    r = client.get(url("tokenize", embed=bad))
    assert r.status_code == 400
    html = r.content.decode()
    assert "“embed” must be 1" in html and "This link cannot be shown" in html
    assert "<script>alert" not in html and "Traceback" not in html
    assert r.headers["X-Frame-Options"] == "SAMEORIGIN"  # not a valid embed: not frameable


def test_a_bad_link_inside_a_frame_shows_its_400_in_the_frame(client):
    """A broken scenario on an embedded page: the frame shows the message (no X-Frame-Options
    blank), without the site chrome, and the way back stays embedded."""
    r = client.get("/learn/tokenize/", {"s": "abc.def", "embed": "1"})
    assert r.status_code == 400
    assert "X-Frame-Options" not in r.headers
    assert "frame-ancestors *" in r.headers["Content-Security-Policy"] and "script-src 'self'" in r.headers["Content-Security-Policy"]
    page = Page(r.content.decode())
    assert page.has("body", "embedded") and not page.has("header", "site")
    assert any(a["href"] == "/learn/tokenize/?embed=1" for a in page.links)
    r = client.get(url("transformer", layer="99", embed="1"))
    assert r.status_code == 400 and "X-Frame-Options" not in r.headers


def test_an_unknown_stage_is_still_a_404_when_embedded(client):
    r = client.get("/learn/nowhere/?embed=1")
    assert r.status_code == 404 and "Traceback" not in r.content.decode()


# ---- OpenGraph ------------------------------------------------------------------------------

@pytest.mark.parametrize("slug", SLUGS)
@pytest.mark.parametrize("embed", ["", "1"])
@pytest.mark.slow
def test_every_stage_page_has_a_link_preview(client, slug, embed):
    opts = SOME_OPTION.get(slug, {})
    r = client.get(url(slug, **opts, **({"embed": embed} if embed else {})))
    meta = Page(r.content.decode()).meta
    title = meta["og:title"]
    assert title.endswith("· Lifecycle Explainer") and len(title) > len("· Lifecycle Explainer") + 2
    assert meta["og:description"] and meta["og:type"] == "website"
    assert meta["twitter:card"] == "summary_large_image"
    # og:url: the absolute permalink of the full page, with the scenario and the view options
    u = urlparse(meta["og:url"])
    assert (u.scheme, u.netloc, u.path) == ("http", "testserver", f"/learn/{slug}/")
    q = parse_qs(u.query)
    assert q["s"] == [codec().encode(SCENARIO)] and "embed" not in q
    for k, v in opts.items():
        assert q[k] == [v]
    # og:image: an absolute URL of a real 1200 x 630 PNG made by scripts/og_images.py
    img = urlparse(meta["og:image"])
    assert (img.scheme, img.netloc, img.path) == ("http", "testserver", f"/static/og/{slug}.png")
    assert meta["twitter:image"] == meta["og:image"]
    assert (meta["og:image:width"], meta["og:image:height"]) == ("1200", "630")
    path = OG_DIR / f"{slug}.png"
    assert path.is_file(), f"run scripts/og_images.py: {path} is missing"
    assert png_size(path) == (1200, 630)
    assert path.stat().st_size < 150 * 1024


def test_og_images_are_served(client):
    from django.contrib.staticfiles import finders

    for slug in SLUGS:
        assert finders.find(f"og/{slug}.png") == str(OG_DIR / f"{slug}.png")


def test_there_is_no_preview_picture_for_a_stage_that_does_not_exist():
    """A renamed stage must not leave its old picture behind."""
    assert sorted(p.stem for p in OG_DIR.glob("*.png")) == sorted(SLUGS)
