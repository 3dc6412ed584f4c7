"""A tool call whose prompt fits but whose forced "tool_use NAME" line does not: a clear 400 before any
event, on the API and on the tools page, never a 500 from the model running past its window."""
from __future__ import annotations

import pytest

from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.web.runner import get_engine
from tests.urls import stage_url

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

TOOL = {"name": "get_dag_status", "description": "Returns the last run status of an Airflow DAG",
        "input_schema": {"type": "object", "properties": {"dag_id": {"type": "string"}}, "required": ["dag_id"]}}


def _body(pad: int) -> dict:
    return {"model": "claude-sonnet-4-6", "max_tokens": 40, "tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_dag_status"},
            "system": "You are a careful assistant for a data platform team. " * 8 + "x " * pad,
            "messages": [{"role": "user", "content": "Did my DAG run?"}, {"role": "assistant", "content": "Which one?"},
                         {"role": "user", "content": "The nightly one, please check it now."}]}


def test_near_the_window_a_tool_call_is_refused_up_front():
    engine = get_engine()
    refused = 0
    for pad in range(0, 400, 3):
        req = parse_request(_body(pad))
        try:
            events = list(engine.stream(req))
        except APIError as exc:
            assert exc.status == 400 and "prompt is too long" in exc.message
            refused += 1
            continue
        assert any(e["type"] == "message_stop" for e in events)
    assert refused, "no padding reached the window: the test proves nothing"


@pytest.mark.django_db
def test_the_tools_page_never_fails_near_the_window(client):
    for pad in range(0, 60, 2):
        s = Scenario.from_changes({"system": "You are a careful assistant for a data platform team. " * 8 + "x " * pad,
                                   "messages": _body(0)["messages"]})
        r = client.get(stage_url("tools", s))
        assert r.status_code == 200, (pad, r.status_code)
