"""The registry is the one place a stage on the request path is added (issue 24, item 3): the overview's
pipeline lights each step on the frames the registry names, which are the engine's own event types (or the
overview's two local frames), and the recap has a row and a card for each request step, from the stage's own
files; neither the recap's template nor the overview's script names a stage."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.template.loader import get_template

from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.stages.registry import BY_SLUG, REQUEST_STEPS, SLUGS, STAGES
from explainer.stages.runs import engine
from tests.urls import stage_url

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]
LOCAL_FRAMES = {"local.compose", "local.gateway"}  # the overview's own: the body it sends, the server's first answer


def test_request_steps_are_the_stages_lit_by_a_frame_in_walk_through_order():
    assert REQUEST_STEPS == tuple(s.slug for s in STAGES if s.lit_by)
    assert list(REQUEST_STEPS) == sorted(REQUEST_STEPS, key=SLUGS.index)
    assert all(BY_SLUG[s].group == "One request" for s in REQUEST_STEPS)
    lit = [t for s in REQUEST_STEPS for t in BY_SLUG[s].lit_by]
    assert len(lit) == len(set(lit)), "a frame lights one step"


def test_every_frame_the_registry_names_is_one_the_engine_sends():
    eng = engine()
    sent = {e["type"] for e in eng.stream(parse_request(Scenario().request_body()), seed=0)}
    for slug in REQUEST_STEPS:
        for t in BY_SLUG[slug].lit_by:
            assert t in sent or t in LOCAL_FRAMES, (slug, t, sorted(sent))
    assert LOCAL_FRAMES <= {t for s in REQUEST_STEPS for t in BY_SLUG[s].lit_by}


def test_the_overview_pipeline_carries_the_registry_s_steps_and_frames(client):
    html = client.get(stage_url("overview")).content.decode()
    steps = re.findall(r'<li data-step="([^"]+)" data-lit-by="([^"]*)">', html)
    assert steps == [(s, " ".join(BY_SLUG[s].lit_by)) for s in REQUEST_STEPS]


def test_the_recap_has_a_row_and_a_card_for_each_request_step(client):
    html = client.get(stage_url("recap")).content.decode()
    table = html[html.index('class="recap-table'):html.index("</table>")]
    rows = re.findall(r'<tr><th scope="row"><a href="/learn/([a-z]+)/[^"]*"><span class="n">(\d+)</span> ([^<]+)</a></th>', table)
    assert rows == [(s, str(BY_SLUG[s].number), BY_SLUG[s].title) for s in REQUEST_STEPS]
    cards = re.findall(r'<h2><span class="n">(\d+)</span> <a href="/learn/([a-z]+)/', html)
    assert cards == [(str(BY_SLUG[s].number), s) for s in REQUEST_STEPS]
    for slug in REQUEST_STEPS:
        get_template(f"stages/recap/{slug}.html")  # each stage's own part of the recap


def test_no_shared_file_names_a_request_step():
    """A new step touches its own files and the registry: the overview's script and the recap's rows read them."""
    script = (ROOT / "static/js/overview.js").read_text()
    recap = (ROOT / "templates/stages/recap.html").read_text()
    rows = recap[recap.index("{% block main_visual %}"):recap.index("{% endblock %}", recap.index("{% block main_visual %}"))]
    cards = recap[recap.index('<ol class="recap">'):]
    for slug in REQUEST_STEPS:
        assert f'"{slug}"' not in script and f"'{slug}'" not in script, slug
        assert slug not in rows and slug not in cards, slug
