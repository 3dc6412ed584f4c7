"""Opening and running a model is bounded and off the event loop (issue 25, item 2).

A local model is an untrusted folder that can be slow for real (tests/slow_model.py: a 26M-parameter
checkpoint and a prompt that fills its 2,048-token window, whose prefill is seconds of numpy). Its work
has its own lane of workers: with that lane full, Claude names and the bundled model's pages still
answer, and more local work is refused at once (529; a page 503). Every run has a budget: past
EXPLAINER_REQUEST_TIMEOUT_S it ends with the API's ``timeout_error`` (504), and a cancelled run stops
within a step, in the middle of its prefill (the prefill runs in chunks, each layer checking).

In process first (runner, pages), then against a real Daphne.
"""
from __future__ import annotations

import json
import math
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from django.test import AsyncClient

from explainer.lifecycle.engine import Cancelled
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.llm.budget import Interrupted
from explainer.stages.runs import stamp
from explainer.web import runner, services
from tests.api.raw import request
from tests.live_server import daphne
from tests.slow_model import LONG_PROMPT, NAME, Stream, long_request, make_slow_model
from tests.urls import data_url, stage_url
from tests.waiting import until_true, wait_until

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

HI = {"model": "claude-haiku-4-5", "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]}
HANG = 30  # seconds: a hang guard, never a measure


@pytest.fixture(scope="module")
def slow_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow-models")
    make_slow_model(root)
    return root


@pytest.fixture
def slow(settings, slow_dir, own_services):
    """The slow model is the one local model installed (for this test, in this process: the test's own services)."""
    settings.EXPLAINER_MODELS_DIR = slow_dir
    own_services()
    return runner.engine_for(NAME)


class Passes:
    """Counts the slow model's passes (a prefill is one per chunk); with ``hold``, each waits for ``release``."""

    def __init__(self, engine, monkeypatch, hold: bool = False):
        self.calls = 0
        self.began, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        model = engine.model
        original = model._forward

        def spy(ids, cache, want):
            self.calls += 1
            self.began.set()
            self.release.wait(HANG)
            return original(ids, cache, want)
        monkeypatch.setattr(model, "_forward", spy)
        ids = engine.prompt_ids(parse_request(long_request()))
        self.prefill = math.ceil(len(ids) / model.prefill_chunk)  # passes a whole prefill takes
        assert self.prefill >= 4, "the prompt no longer spans several chunks"


async def _all(batches) -> list[dict]:
    return [e for b in [b async for b in batches] for e in b]


@pytest.fixture(autouse=True)
def _nothing_admitted_between_tests():
    assert runner.admitted() == 0
    yield
    assert runner.admitted() == 0


def test_a_cancelled_run_is_the_budget_s_interruption():
    assert isinstance(Cancelled(), Interrupted) and Cancelled().reason == "cancelled"


async def test_a_cancelled_run_frees_its_worker_in_the_middle_of_a_prefill(slow, monkeypatch):
    passes = Passes(slow, monkeypatch, hold=True)
    cancel, stopped = threading.Event(), threading.Event()
    events = runner.run_batches(parse_request(long_request()), 0, cancel, finished=stopped.set)
    first = await anext(events)
    assert first[0]["type"] == "explainer.prompt"  # tokenized: the prefill begins
    assert passes.began.wait(HANG)
    assert services.current().local.admitted == 1 and services.current().bundled.admitted == 0  # a local model's run is in its own lane
    cancel.set()
    passes.release.set()
    assert stopped.wait(HANG), "the engine did not stop"
    assert runner.admitted() == 0
    assert passes.calls < passes.prefill, "the prefill ran to its end before the run stopped"
    assert not any(e["type"] == "error" for e in await _all(events))  # the caller left: nothing to tell it


async def test_a_run_past_its_deadline_ends_with_timeout_error(slow, monkeypatch, settings):
    settings.EXPLAINER_REQUEST_TIMEOUT_S = 0.5
    passes = Passes(slow, monkeypatch)
    got = [e async for e in runner.run_events(parse_request(long_request()), 0, threading.Event())]
    assert got[-1]["type"] == "error" and got[-1]["error"]["type"] == "timeout_error", got[-1]
    assert "time limit of 0.5 seconds" in got[-1]["error"]["message"]
    assert runner.timed_out(0.5).status == 504
    assert passes.calls < passes.prefill


async def test_shutting_down_cuts_a_run_with_an_error_event_and_admits_nothing_new(slow, monkeypatch):
    passes = Passes(slow, monkeypatch, hold=True)
    stopped = threading.Event()
    events = runner.run_batches(parse_request(long_request()), 0, threading.Event(), finished=stopped.set)
    await anext(events)
    assert passes.began.wait(HANG)
    runner.shut_down()
    passes.release.set()
    rest = await _all(events)
    assert stopped.is_set() and rest[-1]["type"] == "error" and rest[-1]["error"]["type"] == "overloaded_error", rest[-1:]
    assert passes.calls < passes.prefill
    # nothing new starts, on any lane, and a budget made now is already spent
    again = await _all(runner.run_batches(parse_request(HI), 0, threading.Event()))
    assert [e["error"]["type"] for e in again] == ["overloaded_error"]
    with pytest.raises(Interrupted):
        runner.request_budget().check()


async def test_a_full_local_lane_refuses_local_work_but_never_the_bundled_model_s(slow, monkeypatch, settings, own_services):
    settings.EXPLAINER_LOCAL_WORKERS, settings.EXPLAINER_LOCAL_QUEUE = 1, 0
    own_services(catalog=services.current().catalog)  # lanes of those sizes, on the slow model's catalog
    passes = Passes(slow, monkeypatch, hold=True)
    cancel, stopped = threading.Event(), threading.Event()
    busy = runner.run_batches(parse_request(long_request()), 0, cancel, finished=stopped.set)
    await anext(busy)
    assert passes.began.wait(HANG)
    try:
        # more local work: refused at once, in the API's words and a page's
        refused = await _all(runner.run_batches(parse_request(long_request()), 0, threading.Event()))
        assert refused[0]["error"]["type"] == "overloaded_error" and "local models" in refused[0]["error"]["message"]
        client = AsyncClient()
        scenario = stamp(Scenario(model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=4))
        for url in (stage_url("tokenize", scenario), "/models/", f"/models/{NAME}/"):
            r = await client.get(url)
            assert r.status_code == 503 and r["Retry-After"], (url, r.status_code)
        r = await client.get(data_url("tokenize", scenario))
        assert r.status_code == 503 and r.json()["error"]["type"] == "overloaded_error"
        r = await client.post("/scenario/encode", data={"model": NAME}, content_type="application/json")
        assert r.status_code == 503 and "busy" in r.json()["error"]
        # the bundled model's work goes on meanwhile: an engine run, its pages, its card
        ran = await _all(runner.run_batches(parse_request(HI), 0, threading.Event()))
        assert ran[-1]["type"] == "explainer.done"
        for url in ("/", stage_url("tokenize"), stage_url("sampling"), "/models/tiny-explainer-4l/"):
            assert (await client.get(url)).status_code == 200, url
        assert not stopped.is_set() and services.current().local.admitted == 1  # all of that while the local run still held its worker
    finally:
        cancel.set()
        passes.release.set()
        await _all(busy)


def test_a_local_page_past_its_deadline_is_a_504(slow, client, settings):
    settings.EXPLAINER_REQUEST_TIMEOUT_S = 0.3
    scenario = stamp(Scenario(model=NAME, messages=[{"role": "user", "content": LONG_PROMPT}], max_tokens=4))
    r = client.get(stage_url("overview", scenario))
    assert r.status_code == 504 and b"time limit" in r.content
    r = client.get(data_url("sampling", scenario))
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"


def test_a_prefill_in_chunks_computes_what_one_pass_does(slow):
    model = slow.model
    ids = [int(i) for i in np.random.default_rng(1).integers(3, 1000, size=3 * model.prefill_chunk + 5)]
    chunked = model.forward(ids)
    whole = model._forward(np.asarray(ids), model.new_cache(), ())  # the pass a prefill was before chunks
    assert chunked.cache.length == whole.cache.length == len(ids)
    np.testing.assert_allclose(chunked.logits, whole.logits, rtol=0, atol=2e-4)
    np.testing.assert_allclose(chunked.cache.k[-1][:, :len(ids)], whole.cache.k[-1][:, :len(ids)], rtol=0, atol=2e-4)


# ---- against a real server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory, slow_dir):
    """One worker and no queue for local models: one slow call fills their lane."""
    with daphne(tmp_path_factory.mktemp("bounds"), EXPLAINER_MODELS_DIR=str(slow_dir),
                EXPLAINER_LOCAL_WORKERS="1", EXPLAINER_LOCAL_QUEUE="0") as srv:
        yield srv


def _key(srv) -> dict:
    return {"x-api-key": srv["api_key"]}


def test_a_busy_local_model_delays_neither_claude_names_nor_the_bundled_pages(busy_server):
    srv = busy_server
    url = srv["url"]
    stream = Stream(url, long_request(stream=True, max_tokens=400), _key(srv))
    cut = stream.response.getheader("x-explainer-trace").rstrip("/").rsplit("/", 1)[1]
    try:
        assert stream.until("message_start") is not None  # tokenized: its prefill holds the one local worker now
        r = request("POST", url + "/v1/messages", json_body=long_request(max_tokens=1), headers=_key(srv))
        assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error", r.text[:300]
        r = request("POST", url + "/v1/messages", json_body=HI, headers=_key(srv))
        assert r.status_code == 200 and r.json()["type"] == "message", r.text[:300]
        for path in ("/", "/learn/tokenize/", "/learn/sampling/"):
            assert request("GET", url + path).status_code == 200, path
        scenario = stamp(Scenario(model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=4))
        r = request("GET", url + stage_url("tokenize", scenario))
        assert r.status_code == 503 and r.headers["retry-after"]  # still busy: all of the above ran beside it
    finally:
        stream.close()  # the client hangs up in the middle of the prefill
    # ... and its worker is free again within a step: a local call is admitted (polled, with a hang guard)
    def admitted():
        r = request("POST", url + "/v1/messages", json_body={**HI, "model": NAME, "max_tokens": 1}, headers=_key(srv))
        return r if r.status_code != 529 else None

    r = wait_until(admitted, HANG, "the local lane stayed busy after the caller hung up", every=0.1)
    assert r.status_code == 200, r.text[:300]

    # because the hang-up stopped it: its trace (written once the engine stopped) has no end
    def trace_row():
        with sqlite3.connect(Path(srv["env"]["EXPLAINER_DATA_DIR"]) / "db.sqlite3") as db:
            return db.execute("SELECT events FROM shares_trace WHERE id = ?", (cut,)).fetchone()

    events = [e["type"] for e in json.loads(wait_until(trace_row, HANG, "the cut call's trace was never written")[0])]
    assert "message_stop" not in events, events


@pytest.fixture(scope="module")
def hurried_server(tmp_path_factory, slow_dir):
    with daphne(tmp_path_factory.mktemp("deadline"), EXPLAINER_MODELS_DIR=str(slow_dir), EXPLAINER_REQUEST_TIMEOUT_S="1") as srv:
        yield srv


def test_a_call_past_the_deadline_is_the_api_s_504_and_a_stream_ends_with_an_error_event(hurried_server):
    srv = hurried_server
    r = request("POST", srv["url"] + "/v1/messages", json_body=long_request(), headers=_key(srv))
    assert r.status_code == 504, r.text[:300]
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "timeout_error" and body["request_id"] == r.headers["request-id"]
    stream = Stream(srv["url"], long_request(stream=True), _key(srv))
    try:
        assert stream.response.status == 200
        events = stream.rest()
    finally:
        stream.close()
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "error", [e["type"] for e in events]
    assert events[-1]["error"]["type"] == "timeout_error"
    # a short call still fits the deadline
    assert request("POST", srv["url"] + "/v1/messages", json_body=HI, headers=_key(srv)).status_code == 200


async def test_a_caller_gone_while_its_work_waits_for_a_worker_gives_its_place_back(settings, own_services):
    """Django cancels a view whose client hung up; work still queued for the local lane then never runs, and
    its place must come back all the same, or five hang-ups would close the lane for good."""
    import asyncio

    settings.EXPLAINER_LOCAL_WORKERS, settings.EXPLAINER_LOCAL_QUEUE = 1, 4  # one worker, so the others queue
    own_services()
    lane = services.current().local
    before = lane.admitted
    started, release = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait(20)

    first = asyncio.create_task(runner.call(runner.LOCAL_MODELS, hold))
    assert await asyncio.to_thread(started.wait, 20)
    ran = []
    waiting = [asyncio.create_task(runner.call(runner.LOCAL_MODELS, ran.append, i)) for i in range(3)]
    # until each has taken its place and waits for the one worker
    await until_true(lambda: lane.admitted == before + 4, HANG, f"admitted {lane.admitted - before}, not 4")
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert lane.admitted == before + 1  # the three that never ran gave their places back
    release.set()
    await first
    assert lane.admitted == before and ran == []


async def test_no_room_for_a_local_model_now_is_the_lanes_overloaded_error_not_a_400():
    from explainer.lifecycle.errors import APIError
    from explainer.llm.interface import ModelBusy

    def full():
        raise ModelBusy("tiny-qwen2 cannot be opened now: the models in use hold the memory it needs.")

    with pytest.raises(APIError) as exc:
        await runner.call(runner.LOCAL_MODELS, full)
    assert exc.value.status == 529 and exc.value.body()["error"]["type"] == "overloaded_error"
    assert exc.value.headers.get("retry-after")
