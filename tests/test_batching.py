"""Continuous batching (explainer/llm/batching.py): decode steps of many requests run together, and a reply does
not depend on who else is being served.

The core claim is tested the way a user meets it: the same seeded requests (temperature 0.7, not only greedy)
run one at a time, then all at once in batches of 2 to 32 of varied prompt and reply lengths, must give the
same tokens, on the bundled model and on a local Llama-family checkpoint. The test also checks the batches
really formed (the scheduler's record has steps with many rows); otherwise it could not fail.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from explainer.lifecycle import frames as fr
from explainer.lifecycle.engine import Engine
from explainer.lifecycle.payload import parse_request
from explainer.llm import budget
from explainer.llm.batching import Scheduler
from explainer.llm.hf.loader import load_folder
from explainer.llm.layers import ROW_BLOCK, Dense, per_row_for

QUESTIONS = ["What is a list?", "Explain Python decorators in detail, with an example.", "hi",
             "How do I read a CSV file with pandas and sum one column?", "What is recursion?", "Tell me about HTTP.",
             "def f(x): return x * 2  # what does this do?", "Why is the sky blue?", "日本語で説明してください。",
             "Write a haiku about caches.", "What does `git rebase` do?"]


def body(i: int, tools: bool = False) -> dict:
    b = {"model": "claude-sonnet-4-5", "max_tokens": 12 + 9 * (i % 5), "temperature": 0.7,
         "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + " " * (i // len(QUESTIONS))}]}
    if tools:
        b["tools"] = [{"name": "get_dag_status", "description": "Status of an Airflow DAG",
                       "input_schema": {"type": "object", "properties": {"dag_id": {"type": "string"}}, "required": ["dag_id"]}}]
        b["tool_choice"] = {"type": "any"}
    return b


def tokens(engine: Engine, i: int, tools: bool = False) -> list[int]:
    events = engine.stream(parse_request(body(i, tools)), seed=i)
    return [e["token"] for e in events if e["type"] == fr.TOKEN]


def together(engine: Engine, ids: list[int], tools_every: int = 0) -> dict[int, list[int]]:
    """Run the requests ``ids`` at once, each in its own thread (as the server's workers do)."""
    out: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(ids))

    def run(i: int) -> None:
        try:
            start.wait()
            out[i] = tokens(engine, i, tools=bool(tools_every) and i % tools_every == 0)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out


@pytest.fixture(scope="module")
def llama_engine() -> Engine:
    return Engine(load_folder(Path(__file__).parent / "fixtures" / "models" / "tiny-llama"))


@pytest.fixture(scope="module")
def grouped_llama_engine() -> Engine:
    """The tiny Llama with a large model's products: rows in groups against column blocks (``per_row_for``)."""
    import explainer.llm.layers as layers
    old, layers.PER_ROW_MAX_PARAMS = layers.PER_ROW_MAX_PARAMS, 0
    try:
        engine = Engine(load_folder(Path(__file__).parent / "fixtures" / "models" / "tiny-llama"))
    finally:
        layers.PER_ROW_MAX_PARAMS = old
    assert not engine.model.lm_head.per_row
    return engine


def test_a_small_model_multiplies_row_by_row_and_a_large_one_in_groups():
    assert per_row_for(4_329_984) and not per_row_for(134_515_008)
    assert Engine().model.lm_head.per_row


@pytest.mark.parametrize("which", ["bundled", "tiny-llama", "tiny-llama-grouped"])
def test_every_reply_is_the_same_alone_and_in_batches_of_2_to_32(which, request):
    engine = Engine() if which == "bundled" else request.getfixturevalue(
        "grouped_llama_engine" if "grouped" in which else "llama_engine")
    n = 32
    alone = {i: tokens(engine, i, tools=i % 8 == 0) for i in range(n)}
    assert len({tuple(t) for t in alone.values()}) > n // 2  # varied replies, not one repeated
    before = engine.scheduler.record()["n_steps"]
    for size in (2, 5, 16, 32):
        got = together(engine, list(range(size)), tools_every=8)
        same = sum(got[i] == alone[i] for i in range(size))
        assert same == size, f"{size - same} of {size} replies changed in a batch of {size}"
    steps = [s for s in engine.scheduler.record()["steps"] if s["index"] >= before]
    widest = max(len(s["rows"]) for s in steps)
    assert widest >= 8, f"the batches never formed (widest step: {widest} rows)"


@pytest.mark.parametrize("per_row", [False, True])
def test_a_weight_product_gives_each_row_the_same_bits_whatever_the_batch(per_row):
    rng = np.random.default_rng(0)
    for shape in [(256, 768), (1024, 256), (256, 4096), (64, 1001), (576, 960), (100, 130)]:
        w, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape[1]).astype(np.float32)
        d = Dense(w, b, per_row)
        x = rng.standard_normal((40, shape[0])).astype(np.float32)
        alone = np.concatenate([d.rows(x[i:i + 1]) for i in range(len(x))])
        assert np.allclose(alone, x @ w + b, rtol=1e-4, atol=1e-3) and np.allclose(d(x), x @ w + b, rtol=1e-4, atol=1e-3)
        for b in (2, 3, ROW_BLOCK, ROW_BLOCK + 1, 17, 40):
            perm = rng.permutation(len(x))[:b]
            assert np.array_equal(d.rows(x[perm]), alone[perm]), (shape, b)


def test_a_request_alone_runs_its_steps_in_its_own_thread_with_the_same_logits():
    m = Engine().model
    s = Scheduler(m)
    c = m.new_cache()
    m.forward([1, 2, 3], cache=c)
    alone = m.decode([9], [c.copy()])[0]
    with s.join(c):
        assert np.array_equal(m.forward([9], cache=c).logits[-1], alone)
    assert s.record()["steps"][0]["rows"] == [1] and s._thread is None  # no scheduler thread was needed
    s.close()


def test_a_step_shares_its_rows_and_each_request_gets_its_own():
    engine = Engine()
    m = engine.model
    s = Scheduler(m, grace=0.05)
    caches = [m.new_cache() for _ in range(3)]
    for i, c in enumerate(caches):
        m.forward([10 + i, 20 + i, 30 + i][: i + 1], cache=c)
    alone = [m.decode([7 + i], [c.copy()])[0] for i, c in enumerate(caches)]
    got: dict[int, np.ndarray] = {}
    members = [s.join(c, label=str(i)) for i, c in enumerate(caches)]

    def run(i: int) -> None:
        with members[i]:
            got[i] = m.forward([7 + i], cache=caches[i]).logits[-1]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(np.array_equal(got[i], alone[i]) for i in range(3))
    rec = s.record()
    assert sum(len(st["rows"]) for st in rec["steps"]) == 3 and rec["kv_used_bytes"] == 0
    assert [r["tokens"] for r in rec["requests"]] == [1, 1, 1] and {r["reason"] for r in rec["requests"]} == {"end"}
    s.close()


def test_the_kv_budget_queues_requests_and_is_never_exceeded():
    engine = Engine()
    m = engine.model
    per = m.new_cache()
    per.reserve(64)
    s = Scheduler(m, kv_budget_bytes=3 * per.nbytes)
    peak = []
    s.on_step = lambda rec: peak.append(s.kv_used)
    done = []

    def run(i: int) -> None:
        c = m.new_cache()
        c.reserve(64)
        with s.join(c, prompt_tokens=3, reserve_bytes=c.nbytes):
            out = m.forward([1, 2, 3 + i], cache=c)
            for _ in range(10):
                out = m.forward([int(out.logits[-1].argmax())], cache=c)
        done.append(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rec = s.record()
    assert sorted(done) == list(range(8))  # nothing lost
    assert rec["kv_peak_bytes"] <= 3 * per.nbytes and max(peak) <= 3 * per.nbytes
    assert max(len(st["rows"]) for st in rec["steps"]) <= 3
    assert sum(r["tokens"] for r in rec["requests"]) == 80  # nothing duplicated
    assert s.kv_used == 0
    s.close()


class Held:
    """The bundled model, whose decode steps wait until the test lets them run."""

    def __init__(self, model):
        self.model, self.go, self.running = model, threading.Event(), threading.Event()

    def check_step(self, token, cache):
        self.model.check_step(token, cache)

    def decode(self, ids, caches):
        self.running.set()
        assert self.go.wait(30)
        return self.model.decode(ids, caches)


def test_a_request_cancelled_while_it_waits_for_its_row_leaves_and_the_others_go_on():
    m = Engine().model
    held = Held(m)
    s = Scheduler(held, grace=0.0)
    cancel = threading.Event()
    c = m.new_cache()
    m.forward([1, 2], cache=c)
    member = s.join(c)
    idle = s.join(m.new_cache())  # a second request: the first one's rows go to the scheduler's thread
    raised = []

    def run() -> None:
        try:
            with member, budget.running(budget.Budget(None, cancel)):
                m.forward([5], cache=c)
        except budget.Interrupted as exc:
            raised.append(exc.reason)
    t = threading.Thread(target=run)
    t.start()
    assert held.running.wait(10)  # its row is in a step that has not finished
    cancel.set()
    t.join(10)
    assert raised == ["cancelled"] and s.record()["requests"][0]["reason"] == "cancelled" and s.kv_used == 0
    held.go.set()  # the step ends; its row is dropped, and the scheduler goes on with the next request
    idle.leave()
    other = m.new_cache()
    m.forward([3, 4], cache=other)
    alone = m.decode([6], [other.copy()])[0]
    with s.join(other):
        assert np.array_equal(m.forward([6], cache=other).logits[-1], alone)
    with pytest.raises(budget.Interrupted):  # cancelled before it sends its row: nothing is sent
        with s.join(m.new_cache()) as late, budget.running(budget.Budget(None, cancel)):
            late.step(1)
    s.close()


class Clock:
    """The scheduler's clocks (``time.monotonic`` and ``time.perf_counter``), which the test can move on."""

    def __init__(self):
        import time
        self.real, self.offset = time, 0.0

    def monotonic(self):
        return self.real.monotonic() + self.offset

    def perf_counter(self):
        return self.real.perf_counter() + self.offset


def test_rows_sent_back_after_a_step_are_waited_for_though_another_row_came_during_it(monkeypatch):
    """A row sent while a step runs must not start the next step alone once the step ends: the step's own rows,
    busy drawing their next tokens, get the grace from the step's end. (It used to count from the latest row sent,
    long past when a step is slow, which split sixteen requests on a 135M model into steps of 1 and 15, for good.)"""
    import explainer.llm.batching as batching
    clock = Clock()
    monkeypatch.setattr(batching, "time", clock)
    m = Engine().model
    sizes = []

    class Slow(Held):
        def decode(self, ids, caches):
            sizes.append(len(ids))
            if len(sizes) == 1:  # the first step: held while the late row arrives, and ten seconds long
                self.running.set()
                assert self.go.wait(30)
                clock.offset += 10.0
            return self.model.decode(ids, caches)
    held = Slow(m)
    s = Scheduler(held, grace=1.0)
    caches = [m.new_cache() for _ in range(3)]
    for i, c in enumerate(caches):
        m.forward([1, 2 + i], cache=c)
    members = [s.join(c) for c in caches]

    def run(member, steps):
        for t in range(steps):
            member.step(5 + t)
    early = [threading.Thread(target=run, args=(members[i], 2)) for i in (0, 1)]
    for t in early:
        t.start()
    assert held.running.wait(10)
    late = threading.Thread(target=run, args=(members[2], 1))
    late.start()
    while members[2] not in s._pending:  # the late row is queued behind the running step
        late.join(0.001)
    held.go.set()
    for t in early + [late]:
        t.join(30)
    assert sizes[0] + sizes[1] >= 3 and sizes[1] == 3, sizes  # the second step holds the late row and the first step's
    s.close()
