"""Every stage page through Django's test client: permalinks, bad links, hostile text, and the
``/learn/<slug>/data`` endpoint that serves the data the page embeds."""
import json
from html.parser import HTMLParser

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.registry import BY_SLUG, STAGES, built
from explainer.stages.runs import codec
from tests.urls import data_of

HOSTILE = Scenario(
    system='</textarea><script>alert("sys")</script>',
    messages=[{"role": "user", "content": '<img src=x onerror=alert(1)>\u202eevil\u202c' + "😀" * 2000}],
    max_tokens=8,
)


def url(slug, scenario=None, **opts):
    from urllib.parse import urlencode
    q = {}
    if scenario is not None:
        q["s"] = codec().encode(scenario)
    q.update(opts)
    return f"/learn/{slug}/" + ("?" + urlencode(q) if q else "")


def built_slugs():
    return [s.slug for s in built()]


@pytest.mark.parametrize("slug", built_slugs())
@pytest.mark.slow
def test_it_renders_every_built_stage(client, slug):
    r = client.get(url(slug))
    assert r.status_code == 200
    html = r.content.decode()
    assert 'aria-label="The stages, in order"' in html
    assert "Copy link" in html
    # one main visual, the explanation folded under "How it works"
    assert html.count("data-main-visual=") == 1 and 'id="how-it-works"' in html


@pytest.mark.parametrize("slug", built_slugs())
@pytest.mark.slow
def test_hostile_text_is_escaped(client, slug):
    r = client.get(url(slug, HOSTILE))
    assert r.status_code == 200
    html = r.content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html


@pytest.mark.parametrize("slug", built_slugs())
@pytest.mark.slow
def test_prev_and_next_keep_the_scenario(client, slug):
    s = Scenario(seed=77)
    blob = codec().encode(s)
    html = client.get(url(slug, s)).content.decode()
    for rel in ('rel="prev"', 'rel="next"'):
        if rel in html:
            tag = html.split(rel)[1].split(">")[0]
            assert blob in tag


@pytest.mark.parametrize("bad", ["abc", "abc.def", "x" * 7000, codec().encode(Scenario(seed=5))[:-2] + "zz"])
def test_a_broken_link_is_a_400_page_with_a_way_back(client, bad):
    r = client.get("/learn/overview/", {"s": bad})
    assert r.status_code == 400
    html = r.content.decode()
    assert "This link" in html and 'href="/learn/overview/"' in html
    assert "Traceback" not in html


def test_an_oversized_query_is_a_400(client):
    r = client.get("/learn/overview/?junk=" + "a" * 9000)
    assert r.status_code == 400


def test_unknown_and_unbuilt_stages_are_404_pages(client):
    assert client.get("/learn/nowhere/").status_code == 404
    for s in STAGES:
        if not s.built:
            r = client.get(url(s.slug))
            assert r.status_code == 404 and "not part of this version" in r.content.decode()


def test_the_home_page_is_the_overview(client):
    r = client.get("/")
    assert r.status_code == 200 and "What happens when you press" in r.content.decode()


def test_the_same_link_gives_the_same_page(client):
    s = Scenario(messages=[{"role": "user", "content": "What is a cursor?"}], seed=11, temperature=1.0)
    a, b = client.get(url("overview", s)).content, client.get(url("overview", s)).content
    assert a == b


def test_encode_endpoint(client):
    r = client.post("/scenario/encode", data='{"seed": 3, "temperature": 0.1}', content_type="application/json")
    assert r.status_code == 200 and codec().decode(r.json()["s"]) == Scenario(seed=3, temperature=0.1)
    for body in ("{bad json", "[1]", '{"temperature": 9}', '{"nope": 1}'):
        r = client.post("/scenario/encode", data=body, content_type="application/json")
        assert r.status_code == 400 and r.json()["error"]
    assert client.get("/scenario/encode").status_code == 405


# ---- /learn/<slug>/data: the page's own data, as JSON ----------------------------------------------

class EmbeddedData(HTMLParser):
    """The page's ``<script type="application/json">`` blocks as ``{id: value}``: the one place a test
    reads them out of the HTML, to prove the endpoint serves what the page embeds."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.found: dict = {}
        self._id, self._text = None, []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("type") == "application/json":
            assert a.get("id"), "a data block without an id"
            self._id, self._text = a["id"], []

    def handle_data(self, data):
        if self._id is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._id is not None:
            assert self._id not in self.found, f"{self._id} is embedded twice"
            self.found[self._id] = json.loads("".join(self._text))
            self._id = None


def data_get(client, path: str, **params):
    r = client.get(path, params)
    assert r["Content-Type"] == "application/json", r["Content-Type"]
    return r, r.json()


@pytest.mark.parametrize("scenario", [None, HOSTILE], ids=["default", "hostile"])
@pytest.mark.parametrize("slug", built_slugs())
@pytest.mark.slow
def test_the_data_endpoint_serves_what_the_page_embeds(client, slug, scenario):
    page = client.get(url(slug, scenario))
    assert page.status_code == 200
    embedded = EmbeddedData(page.content.decode()).found
    assert data_of(page) == embedded  # the same path and query string's /data: what every other test reads
    declared = set(getattr(BY_SLUG[slug].page, "DATA", {}))
    assert set(embedded) <= declared  # each block comes from the page module's DATA, once
    if scenario is None:
        assert set(embedded) == declared  # the default request fills every block: the comparison is not empty


@pytest.mark.parametrize("bad", ["abc", "abc.def", "x" * 7000, codec().encode(Scenario(seed=5))[:-2] + "zz"])
def test_a_tampered_link_is_a_json_400_with_a_message(client, bad):
    r, body = data_get(client, "/learn/overview/data", s=bad)
    assert r.status_code == 400
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]


def test_a_bad_view_option_is_a_json_400(client):
    r, body = data_get(client, "/learn/sampling/data", step="x")
    assert r.status_code == 400 and body["error"]["type"] == "invalid_request_error" and body["error"]["message"]


def test_an_unknown_stage_is_a_json_404(client):
    r, body = data_get(client, "/learn/nowhere/data")
    assert r.status_code == 404
    assert body["error"]["type"] == "not_found_error" and "nowhere" in body["error"]["message"]
    for s in STAGES:
        if not s.built:
            r, body = data_get(client, f"/learn/{s.slug}/data")
            assert r.status_code == 404 and "not part of this version" in body["error"]["message"]


def test_an_oversized_query_is_a_json_400(client):
    r = client.get("/learn/overview/data?junk=" + "a" * 9000)
    assert r.status_code == 400 and r["Content-Type"] == "application/json"
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "characters" in error["message"]


def test_a_page_without_data_serves_an_empty_dict(client):
    assert not getattr(BY_SLUG["recap"].page, "DATA", {})
    r, body = data_get(client, "/learn/recap/data")
    assert r.status_code == 200 and body == {"stage": "recap", "data": {}}
    assert EmbeddedData(client.get("/learn/recap/").content.decode()).found == {}


def test_the_data_endpoint_is_get_only(client):
    assert client.post("/learn/overview/data").status_code == 405
