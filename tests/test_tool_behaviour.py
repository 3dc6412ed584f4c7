"""tool_choice auto: the model's own first token decides between a tool call and text."""
from __future__ import annotations

import json

import jsonschema
import pytest

from explainer.lifecycle.engine import Engine, run_request
from explainer.lifecycle.tool_format import TOOL_USE_PREFIX
from explainer.llm.catalog import bundled

TOOLS = [{"name": "get_dag_status", "description": "Status of an Airflow DAG's latest run.",
          "input_schema": {"type": "object", "properties": {"dag_id": {"type": "string"}}, "required": ["dag_id"]}},
         {"name": "get_weather", "description": "Current weather for a city.",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}]


class Nudged:
    """The bundled model with one token's logit moved by ``bias`` at every position."""

    def __init__(self, model, token: int, bias: float):
        self._model, self._token, self._bias = model, token, bias

    def __getattr__(self, name):
        return getattr(self._model, name)

    def forward(self, ids, *args, **kwargs):
        out = self._model.forward(ids, *args, **kwargs)
        out.logits[..., self._token] += self._bias
        return out


def body(choice: str = "auto") -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 40, "tools": TOOLS, "tool_choice": {"type": choice},
            "messages": [{"role": "user", "content": "Did my etl_pipeline DAG run today?"}]}


@pytest.fixture(scope="module")
def opening() -> int:
    return bundled().tokenizer.encode(TOOL_USE_PREFIX)[0]


def test_auto_calls_a_tool_when_the_model_opens_a_call(opening):
    engine = Engine(model=Nudged(bundled().model, opening, 60.0))
    for seed in (0, 1):
        run = run_request(engine, body(), seed=seed)
        blocks = [e["content_block"] for e in run.events if e["type"] == "content_block_start"]
        assert [b["type"] for b in blocks] == ["tool_use"]
        assert run.done["stop_reason"] in ("tool_use", "max_tokens")
        if run.done["stop_reason"] == "tool_use":
            tool = next(t for t in TOOLS if t["name"] == blocks[0]["name"])
            partial = "".join(e["delta"]["partial_json"] for e in run.events if e["type"] == "content_block_delta")
            jsonschema.validate(json.loads(partial), tool["input_schema"])
        assert all(s.get("constrained") for s in run.steps)


def test_auto_answers_in_text_when_the_model_does_not(opening):
    engine = Engine(model=Nudged(bundled().model, opening, -60.0))
    run = run_request(engine, body(), seed=0)
    assert [e["content_block"]["type"] for e in run.events if e["type"] == "content_block_start"] == ["text"]
    assert not any(s.get("constrained") for s in run.steps)


def test_none_never_calls_even_when_the_model_would(opening):
    engine = Engine(model=Nudged(bundled().model, opening, 60.0))
    run = run_request(engine, body("none"), seed=0)
    assert [e["content_block"]["type"] for e in run.events if e["type"] == "content_block_start"] == ["text"]


@pytest.mark.parametrize("choice", ["any", "auto"])
def test_a_small_max_tokens_cuts_the_input_never_the_tool_name(opening, choice):
    engine = Engine(model=Nudged(bundled().model, opening, 60.0))
    run = run_request(engine, body(choice) | {"max_tokens": 2}, seed=0)
    assert run.error is None
    blocks = [e["content_block"] for e in run.events if e["type"] == "content_block_start"]
    assert [b["type"] for b in blocks] == ["tool_use"] and blocks[0]["name"] in {t["name"] for t in TOOLS}
    assert run.done["stop_reason"] == "max_tokens"
