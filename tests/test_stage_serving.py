"""The Serving stage through Django's test client: its record is the scheduler's own for a real run of the
explained request beside N extra requests, the figures the page shows are the data's and agree with the
record's steps, KV-cache bytes stay within the budget, other people's requests are anonymous, the lane's
bound is the one the server runs with, and bad options are clear 400s."""
from __future__ import annotations

import html as htmllib
import json
import re
import threading

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.runs import engine, run_of
from tests.urls import stage_data, stage_url

SCENARIO = Scenario(messages=[{"role": "user", "content": "How does a server share one model between many requests?"}],
                    max_tokens=24, seed=3)


def serving(client, scenario=SCENARIO, **opts) -> dict:
    return stage_data(client, "serving", scenario, **opts)["serving-data"]


def shown(page: str, element_id: str) -> str:
    return htmllib.unescape(re.search(rf'id="{element_id}">([^<]*)<', page).group(1))


def rate(steps: list[dict]) -> float:
    return round(len(steps) / (steps[-1]["end"] - steps[0]["start"]), 1)


def test_it_records_the_explained_request_beside_the_extras(client):
    d = serving(client, extra=4)
    tl, rows = d["timeline"], d["rows"]
    assert d["asked"] == d["ran"] == 4
    you = d["figures"]["you"]
    assert you["kind"] == "you" and tl["highlight"] == you["id"]
    assert you["id"] in {r["id"] for r in tl["requests"]}
    # every extra really ran on the model: a request in the record with rows in its steps
    extras = [r for r in rows if r["kind"] == "extra"]
    assert len(extras) == 4 and all(r["tokens"] > 0 and r["left"] for r in extras)
    in_steps = {rid for st in tl["steps"] for rid in st["rows"]}
    assert {r["id"] for r in extras} | {you["id"]} <= in_steps
    # it joined while the others were decoding: some step has its row and another's
    assert you["largest_batch"] >= 2
    assert max(len(st["rows"]) for st in tl["steps"]) <= d["figures"]["max_batch"]
    # its order of events: queued, admitted, prefilled, first step, left
    rec = next(r for r in tl["requests"] if r["id"] == you["id"])
    assert rec["queued"] <= rec["admitted"] <= rec["first_step"] <= rec["left"]
    # the page tells that story from the same record
    st = d["story"]
    assert st["steps"] == you["tokens"] and st["wait_ms"] == you["wait_ms"] and st["reason"] == "end"
    mine = [s for s in tl["steps"] if you["id"] in s["rows"]]
    assert st["first_batch"] == len(mine[0]["rows"]) and st["last_batch"] == len(mine[-1]["rows"])
    assert st["arrived_ms"] <= st["joined_ms"] <= st["left_ms"]
    # and its reply is token for token the one it produces alone
    assert d["same_tokens"] is True
    assert d["reply_tokens"] == len(run_of(SCENARIO).steps)


def test_the_figures_are_the_records_and_the_page_shows_the_same(client):
    d = serving(client, extra=4)
    steps, you = d["timeline"]["steps"], d["figures"]["you"]
    mine = [st for st in steps if you["id"] in st["rows"]]
    assert you["tokens"] == len(mine) and you["tokens_per_s"] == rate(mine)
    total = sum(len(st["rows"]) for st in steps)
    assert d["figures"]["tokens"] == total
    assert d["figures"]["aggregate_tokens_per_s"] == round(total / (steps[-1]["end"] - steps[0]["start"]), 1)
    for r in d["rows"]:
        theirs = [st for st in steps if r["id"] in st["rows"]]
        assert r["tokens"] == len(theirs) and r["largest_batch"] == max(len(st["rows"]) for st in theirs)
    # a figure shown twice agrees: the headline, the table and /data
    page = client.get(stage_url("serving", SCENARIO, extra=4)).content.decode()
    assert shown(page, "sv-you-tps") == str(you["tokens_per_s"])
    assert shown(page, "sv-aggregate-tps") == str(d["figures"]["aggregate_tokens_per_s"])
    assert shown(page, "sv-alone-tps") == str(d["alone_tokens_per_s"])
    assert f'data-aggregate>{d["figures"]["aggregate_tokens_per_s"]}<' in page
    row = re.search(rf'<tr class="sv-row-you" data-request="{you["id"]}">(.*?)</tr>', page, re.S).group(1)
    assert f'data-tps>{you["tokens_per_s"]}<' in row
    # the alone figure is the case with no extra request
    alone = serving(client, extra=0)
    assert alone["ran"] == 0 and d["alone_tokens_per_s"] == alone["figures"]["you"]["tokens_per_s"]
    assert [r["kind"] for r in alone["rows"]] == ["you"] and alone["figures"]["largest_batch"] == 1


def test_kv_cache_bytes_stay_within_the_budget(client):
    d = serving(client, extra=16)
    f = d["figures"]
    assert d["ran"] == 16 and len([r for r in d["rows"] if r["kind"] == "extra"]) == 16
    assert f["kv_budget_bytes"] and f["kv_peak_bytes"] <= f["kv_budget_bytes"]
    assert all(st["kv_bytes"] <= f["kv_budget_bytes"] for st in d["timeline"]["steps"])
    assert f["kv_peak_bytes"] == max(st["kv_bytes"] for st in d["timeline"]["steps"])
    assert f["kv_reserved_bytes"] == sum(r["kv_bytes"] for r in d["rows"])
    assert f["longest_wait_ms"] == max(r["wait_ms"] for r in d["rows"])
    # what a request sets aside: room for its prompt, max_tokens and a tool-call line, in every layer's keys and values
    you = f["you"]
    eng = engine(SCENARIO)
    cache = eng.model.new_cache()
    cache.reserve(min(eng.context_window, you["prompt_tokens"] + SCENARIO.max_tokens + 16))
    assert you["kv_bytes"] == cache.nbytes
    assert d["lane"]["like_this_fit"] == f["kv_budget_bytes"] // you["kv_bytes"]


def test_other_peoples_requests_are_anonymous_rows(client):
    """A request someone else is decoding while the page's case runs is in the record, without its label."""
    eng = engine()
    secret = "alice asks about her secret project"
    model, sched = eng.model, eng.scheduler
    ids = eng.tokenizer.encode(secret)
    going, stop = threading.Event(), threading.Event()

    def someone_else():
        # a request's decode steps, as the engine runs them (it never ends on its own: a test cannot wait for an answer's end)
        kv = model.new_cache()
        kv.reserve(eng.context_window)
        with sched.join(kv, label=secret, prompt_tokens=len(ids), reserve_bytes=kv.nbytes):
            model.forward(ids, cache=kv)
            while not stop.is_set() and kv.length < eng.context_window - 1:
                model.forward([ids[0]], cache=kv)
                going.set()
        going.set()

    t = threading.Thread(target=someone_else, daemon=True)
    t.start()
    try:
        assert going.wait(60)
        d = serving(client, SCENARIO.replace(seed=97), extra=0)
        assert t.is_alive()  # still decoding when the page's own request had ended
    finally:
        stop.set()
        t.join(60)
    others = [r for r in d["rows"] if r["kind"] == "other"]
    assert len(others) == 1 and others[0]["name"] == "someone else" and others[0]["tokens"] > 0
    assert "alice" not in json.dumps(d) and "secret" not in json.dumps(d)
    assert [r["label"] for r in d["timeline"]["requests"] if r["id"] == others[0]["id"]] == [""]
    # it shared steps with the page's request
    you = d["figures"]["you"]["id"]
    assert any({you, others[0]["id"]} <= set(st["rows"]) for st in d["timeline"]["steps"])
    page = client.get(stage_url("serving", SCENARIO.replace(seed=97), extra=0)).content.decode()
    assert "alice" not in page and "1 request from other people" in page


def test_a_full_lane_runs_fewer_extras_and_the_page_says_so(client, settings, own_services):
    settings.EXPLAINER_ENGINE_WORKERS, settings.EXPLAINER_ENGINE_QUEUE = 2, 1
    own_services()
    s = SCENARIO.replace(seed=41)
    d = serving(client, s, extra=4)
    assert d["asked"] == 4 and d["ran"] == 3  # the lane holds 2 running and 1 waiting: the 4th is turned away
    assert d["lane"]["workers"] == 2 and d["lane"]["queue"] == 1 and d["lane"]["capacity"] == 3
    page = client.get(stage_url("serving", s, extra=4)).content.decode()
    assert "3 of 4 ran" in page
    assert re.search(r"runs 2 requests of this model at once and lets\s+1 more wait for a place \(3 in all", page)
    assert "HTTP 529" in page


@pytest.mark.parametrize("raw, why", [
    ("17", "from 0 to 16"), ("-1", "from 0 to 16"), ("abc", "whole number"), ("1.5", "whole number"),
    ("²", "whole number"), ("9" * 30, "too long"),
])
def test_tampered_extra_is_a_clear_400(client, raw, why):
    r = client.get("/learn/serving/", {"extra": raw})
    assert r.status_code == 400 and why in r.content.decode()
    j = client.get("/learn/serving/data", {"extra": raw})
    assert j.status_code == 400 and why in j.json()["error"]["message"]


def test_a_repeated_extra_is_refused(client):
    r = client.get("/learn/serving/?extra=4&extra=16")
    assert r.status_code == 400 and "given 2 times" in r.content.decode()


def test_the_lesson_is_done_once_a_step_serves_it_beside_eight_others(client):
    from urllib.parse import urlencode

    from explainer.stages.runs import codec
    from explainer.tutorial.lessons import by_id

    s = by_id()["shared-step"].start_scenario()
    q = {"s": codec().encode(s)} if codec().encode(s) else {}
    alone = client.get("/tutorial/check/shared-step?" + urlencode(q | {"extra": "0"})).json()
    assert alone["done"] is False and "0 other requests" in alone["message"]
    busy = client.get("/tutorial/check/shared-step?" + urlencode(q | {"extra": "16"})).json()
    d = serving(client, s, extra=16)
    assert busy["done"] is (d["figures"]["you"]["largest_batch"] - 1 >= 8), busy
    assert busy["done"], busy["message"]


@pytest.mark.django_db(transaction=True)
async def test_a_first_visit_does_not_hold_up_the_other_pages(monkeypatch):
    """The case a first visit records takes seconds: it runs in the bundled model's pool, and another stage page,
    served on the thread every synchronous page shares, answers while the case is still running."""
    import asyncio

    from django.test import AsyncClient

    import explainer.stages.pages.serving as sv
    running, release = threading.Event(), threading.Event()
    real = sv.record_case

    def held(*args, **kwargs):
        running.set()
        assert release.wait(60)
        return real(*args, **kwargs)
    monkeypatch.setattr(sv, "record_case", held)
    client = AsyncClient()
    scenario = Scenario(messages=[{"role": "user", "content": "Who else is being served right now?"}], max_tokens=8, seed=41)
    first = asyncio.ensure_future(client.get(stage_url("serving", scenario, extra=0)))
    assert await asyncio.to_thread(running.wait, 60)
    try:
        other = await asyncio.wait_for(client.get(stage_url("tokenize", scenario)), 60)
        assert other.status_code == 200 and not first.done()
    finally:
        release.set()
    assert (await first).status_code == 200
