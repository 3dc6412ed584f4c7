"""Timings are measured where the work happens, for every tool_choice (issue: a forced tool call's
prefill ran lazily inside the JSON loop, so prefill_ms read 0.07 ms and the prefill landed in decode).

The clock is replaced by one that only the model moves: every forward pass advances it by one
unit per token it processes. Then the reported prefill must be exactly the prompt's tokens and
the decode exactly the tokens fed after it, whatever the machine's speed.
"""
import time

import pytest

from explainer.lifecycle.demo_tools import DEMO_TOOLS
from explainer.lifecycle.engine import Engine
from explainer.lifecycle.payload import parse_request
from explainer.llm.model import bundled_model, read_weights

UNIT = 0.001  # one token of model work is one millisecond on the fake clock


@pytest.fixture
def model_clock(monkeypatch):
    # a model of its own: the shared one may still serve an engine thread left by another test
    config, weights, _ = read_weights()
    eng = Engine(model=bundled_model(config, weights))
    clock = {"now": 1000.0, "fed": []}
    real_forward = eng.model.forward

    def forward(ids, cache=None, want=()):
        clock["now"] += UNIT * len(ids)
        clock["fed"].append(len(ids))
        return real_forward(ids, cache=cache, want=want)

    monkeypatch.setattr(eng.model, "forward", forward)
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    return eng, clock


def _tool_defs():  # two of the demo tools: all three do not fit the 512-token window
    return [DEMO_TOOLS[n].definition() for n in ("calculator", "get_time")]


@pytest.mark.parametrize("choice", [None, {"type": "auto"}, {"type": "none"}, {"type": "any"},
                                    {"type": "tool", "name": "calculator"}])
@pytest.mark.slow
def test_prefill_and_decode_are_the_model_work_of_each_phase(model_clock, choice):
    eng, clock = model_clock
    body = {"model": "claude-haiku-4-5", "max_tokens": 12, "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
    if choice is not None:
        body |= {"tools": _tool_defs(), "tool_choice": choice}
    events = list(eng.stream(parse_request(body), seed=1))
    done = events[-1]
    assert done["type"] == "explainer.done"
    t = done["timings"]
    prompt_len = done["timings"]["prefill_tokens"]
    assert clock["fed"][0] >= prompt_len - 1  # the first forward pass is the prefill
    assert t["prefill_ms"] == pytest.approx(clock["fed"][0] * UNIT * 1000, abs=1e-6)
    decode_units = sum(clock["fed"][1:])
    assert t["decode_ms"] == pytest.approx(decode_units * UNIT * 1000, abs=1e-6)
    assert t["time_to_first_token_ms"] >= t["prefill_ms"]
    assert t["prefill_ms"] + t["decode_ms"] <= t["total_ms"] + 1e-6
