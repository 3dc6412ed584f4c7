"""Every stage page through Django's test client: permalinks, bad links, hostile text."""
import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.registry import STAGES, built
from explainer.stages.runs import codec

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
def test_it_renders_every_built_stage(client, slug):
    r = client.get(url(slug))
    assert r.status_code == 200
    html = r.content.decode()
    assert 'aria-label="The stages, in order"' in html
    assert "Copy link" in html
    # one main visual, the explanation folded under "How it works"
    assert html.count("data-main-visual=") == 1 and 'id="how-it-works"' in html


@pytest.mark.parametrize("slug", built_slugs())
def test_hostile_text_is_escaped(client, slug):
    r = client.get(url(slug, HOSTILE))
    assert r.status_code == 200
    html = r.content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html


@pytest.mark.parametrize("slug", built_slugs())
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
