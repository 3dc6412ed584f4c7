"""explainer.web.runner: the engine's events reach async code complete, in order, in few batches."""
import asyncio
import threading

import pytest

from explainer.lifecycle.payload import parse_request
from explainer.web import runner

BODY = {"model": "claude-haiku-4-5", "max_tokens": 24, "temperature": 0,
        "messages": [{"role": "user", "content": "Explain what a write-ahead log is for."}]}


def reference() -> list[dict]:
    return list(runner.get_engine().stream(parse_request(BODY), seed=0))


def same(a: dict, b: dict) -> bool:
    """Equal but for the random message id and measured times."""
    def norm(e):
        if e["type"] == "message_start":
            return {**e, "message": {**e["message"], "id": ""}}
        return {k: v for k, v in e.items() if k not in ("ms", "timings")}
    return norm(a) == norm(b)


async def collect(**options) -> tuple[list[list[dict]], list[dict], list[str]]:
    seen, calls = [], []
    batches = []

    def observe(event):
        seen.append(event)

    def finished():
        calls.append(f"finished after {len(seen)} observed")

    async for batch in runner.run_batches(parse_request(BODY), 0, threading.Event(), observe=observe, finished=finished, **options):
        batches.append(batch)
    return batches, seen, calls


async def test_run_events_yields_the_engine_s_events_in_order():
    ref = reference()
    got = [e async for e in runner.run_events(parse_request(BODY), 0, threading.Event())]
    assert len(got) == len(ref) and all(same(a, b) for a, b in zip(got, ref))
    assert got[0]["type"] == "explainer.prompt" and got[-1]["type"] == "explainer.done"


async def test_keep_leaves_the_explainer_frames_in_the_engine_thread_and_observe_sees_all():
    ref = reference()
    batches, seen, calls = await collect(keep=lambda e: not e["type"].startswith("explainer."))
    flat = [e for b in batches for e in b]
    api = [e for e in ref if not e["type"].startswith("explainer.")]
    assert len(flat) == len(api) and all(same(a, b) for a, b in zip(flat, api))
    assert len(seen) == len(ref) and all(same(a, b) for a, b in zip(seen, ref))
    assert calls == [f"finished after {len(ref)} observed"]
    assert all(batches)  # no empty batch


async def test_a_hold_sends_few_batches_but_never_holds_the_first_output_or_the_end():
    ref = reference()
    hold = 3600.0  # an hour, far longer than the whole run: only the exceptions can wake the loop before it
    try:  # the run ends within seconds; waiting for the hold anywhere would take the hour
        batches, _, _ = await asyncio.wait_for(collect(keep=lambda e: not e["type"].startswith("explainer."), hold=hold), 60)
    except TimeoutError:
        pytest.fail("an event after the start, the first text or the end waited for the hold")
    flat = [e for b in batches for e in b]
    api = [e for e in ref if not e["type"].startswith("explainer.")]
    assert len(flat) == len(api) and all(same(a, b) for a, b in zip(flat, api))
    assert len(batches) <= 4, [[e["type"] for e in b] for b in batches]
    first_delta = next(i for i, b in enumerate(batches) if any(e["type"] == "content_block_delta" for e in b))
    assert batches[first_delta][-1]["type"] == "content_block_delta", "the first text was held back with later tokens"
    assert batches[-1][-1]["type"] == "message_stop"


async def test_a_full_engine_answers_overloaded_and_still_calls_finished(settings, own_services):
    settings.EXPLAINER_ENGINE_WORKERS, settings.EXPLAINER_ENGINE_QUEUE = 0, 0
    own_services()
    batches, seen, calls = await collect()
    assert len(batches) == 1 and len(batches[0]) == 1
    assert batches[0][0]["type"] == "error" and batches[0][0]["error"]["type"] == "overloaded_error"
    assert seen == [] and calls == ["finished after 0 observed"]
    assert runner.admitted() == 0


async def test_a_bad_request_is_an_error_envelope_at_the_end():
    body = {**BODY, "max_tokens": 4, "messages": [{"role": "user", "content": "x " * 5000}]}
    got = [e async for e in runner.run_events(parse_request(body), 0, threading.Event())]
    assert [e["type"] for e in got] == ["error"]
    assert got[0]["error"]["type"] == "invalid_request_error" and "too long" in got[0]["error"]["message"]


async def test_leaving_early_stops_the_engine_and_frees_its_place():
    cancel = threading.Event()
    stopped = threading.Event()
    body = parse_request({**BODY, "max_tokens": 200})
    events = runner.run_batches(body, 0, cancel, finished=stopped.set, hold=0.01)
    first = await anext(events)
    assert first[0]["type"] == "explainer.prompt"
    assert runner.admitted() == 1
    await events.aclose()
    assert cancel.is_set()
    assert stopped.wait(10), "the engine's thread did not stop after the caller left"
    assert runner.admitted() == 0  # freed by the engine's thread as it stopped


async def test_the_slot_is_free_when_the_engine_finishes_not_when_a_slow_reader_does():
    """A paced reader (the stream socket replays at up to 2 s a token) must not hold the engine's place."""
    stopped = threading.Event()
    events = runner.run_batches(parse_request({**BODY, "max_tokens": 8}), 0, threading.Event(), finished=stopped.set)
    first = await anext(events)
    assert first[0]["type"] == "explainer.prompt" and runner.admitted() == 1
    # the reader takes nothing more; the engine finishes on its own
    assert stopped.wait(30), "the engine did not finish"
    assert runner.admitted() == 0, "a finished run still holds an engine slot while its events wait to be read"
    rest = [e for batch in [b async for b in events] for e in batch]
    assert rest[-1]["type"] == "explainer.done"  # nothing was lost by freeing the slot early


@pytest.fixture(autouse=True)
def _nothing_admitted_between_tests():
    assert runner.admitted() == 0
    yield
    assert runner.admitted() == 0
