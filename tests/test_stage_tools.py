"""The tools stage through Django's test client: both requests of the loop are the engine's own,
the tool_use input validates against the tool's schema, bad options are 400 pages, hostile text is escaped."""
import html as htmllib
import json
import re
from urllib.parse import urlencode

import jsonschema
import pytest

from explainer.lifecycle.demo_tools import DEMO_TOOLS, run_tool
from explainer.lifecycle.engine import run_request
from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages import tools
from explainer.stages.runs import codec, engine
from tests.urls import data_of, stage_data

SCENARIO = Scenario(messages=[{"role": "user", "content": "Is the comet export DAG healthy?"}], seed=4)


@pytest.fixture(autouse=True)
def hosts(settings):
    settings.ALLOWED_HOSTS = ["testserver", "127.0.0.1"]


def get(client, scenario=None, **opts):
    q = {"s": codec().encode(scenario)} if scenario is not None else {}
    q.update(opts)
    return client.get("/learn/tools/" + ("?" + urlencode(q) if q else ""))


def pre(html: str, el_id: str):
    m = re.search(rf'<pre[^>]*id="{el_id}"[^>]*>(.*?)</pre>', html, re.S)
    return htmllib.unescape(m.group(1)) if m else None


def usage_attrs(html: str, el_id: str) -> dict:
    tag = re.search(rf'<pre[^>]*id="{el_id}"([^>]*)>', html).group(1)
    return {k: int(v) for k, v in re.findall(r'data-(input|output)="(\d+)"', tag)}


def test_default_renders_the_full_loop(client):
    r = get(client)
    assert r.status_code == 200
    html = r.content.decode()
    assert html.count('data-filled="true"') == 5 and html.count('data-done="true"') == 5  # the details, and the main visual
    assert "one tool per request" in html
    assert "get_dag_status" in html and "input_json_delta" in html


def test_the_default_view_asks_the_article_s_question_with_a_dag_in_it(client):
    """No options: the default question names no DAG, so get_dag_status is asked its own question, in the
    article's words, naming a DAG of the demo table; the call, the tool's result and the caption follow it."""
    r = get(client)
    html = r.content.decode()
    question = tools.DEMO_QUESTIONS["get_dag_status"]
    assert r.context["demo"] and r.context["question"] == question
    body1 = json.loads(pre(html, "body-1"))
    assert body1["messages"] == [{"role": "user", "content": question}]
    assert body1 == tools.first_body(Scenario(messages=[{"role": "user", "content": question}]), "get_dag_status", "tool")
    block = json.loads(pre(html, "tool-use"))
    dag = block["input"]["dag_id"]
    assert dag in question and dag in DEMO_TOOLS["get_dag_status"].input_schema["properties"]["dag_id"]["enum"]
    assert json.loads(pre(html, "tool-output"))["dag_id"] == dag  # the tool really ran, for that DAG
    # the main visual: one row per message of the loop, each with its stop_reason or is_error
    loop = re.search(r'<ol class="tl-loop".*?</ol>', html, re.S).group(0)
    assert loop.count("<li ") == 5 and "stop_reason <code>tool_use</code>" in loop and "is_error <code>false</code>" in loop
    assert f'stop_reason <code>{r.context["stop2"]}</code>' in loop
    assert r.context["headline"] == (f'The model asked for get_dag_status with {{"dag_id":"{dag}"}}, which the question names; '
                                     "your code ran it, and request 2 carried the result back.")
    assert 'href="/learn/tools/?ask=request"' in html  # the request's own question, one link away


@pytest.mark.slow
def test_ask_request_keeps_the_request_s_own_question(client):
    """The old default, through its option: the default scenario's question, which names no DAG."""
    r = get(client, ask="request")
    html = r.content.decode()
    assert not r.context["demo"] and r.context["can_demo"]
    assert json.loads(pre(html, "body-1"))["messages"] == Scenario().messages
    assert "which the question names" not in r.context["headline"]
    # a question of the learner's own is never replaced
    assert not get(client, SCENARIO).context["demo"]
    assert json.loads(pre(get(client, SCENARIO).content.decode(), "body-1"))["messages"] == SCENARIO.messages


@pytest.mark.parametrize("tool", tools.TOOL_NAMES)
@pytest.mark.parametrize("choice", tools.CHOICES)
@pytest.mark.slow
def test_each_tool_and_choice_renders(client, tool, choice):
    r = get(client, SCENARIO, tool=tool, choice=choice)
    assert r.status_code == 200
    html = r.content.decode()
    assert f'data-tool="{tool}" aria-current="true"' in html
    assert f'data-choice="{choice}" aria-current="true"' in html
    steps = data_of(r)["tools-data"]["steps"]
    if choice in ("tool", "any"):
        block = json.loads(pre(html, "tool-use"))
        assert block["type"] == "tool_use" and block["name"] == tool and block["id"].startswith("toolu_")
        if pre(html, "tool-output") is not None:  # the call was complete: the app ran it
            jsonschema.validate(block["input"], DEMO_TOOLS[tool].input_schema)
        assert all(s["constrained"] and 1 <= s["n_allowed"] <= 4096 for s in steps)
    else:
        assert pre(html, "tool-use") is None
        assert 'id="text-1"' in html and 'data-filled="true"' in html
        assert html.count('data-filled="true"') == 2
        assert not any(s["constrained"] for s in steps)


@pytest.mark.slow
def test_numbers_equal_run_request(client):
    for choice in ("tool", "any", "auto"):
        r = get(client, SCENARIO, tool="get_dag_status", choice=choice)
        html = r.content.decode()
        body1 = json.loads(pre(html, "body-1"))
        assert body1 == tools.first_body(SCENARIO, "get_dag_status", choice)
        run1 = run_request(engine(), body1, seed=SCENARIO.seed)
        assert usage_attrs(html, "usage-1") == {"input": run1.done["usage"]["input_tokens"],
                                                "output": run1.done["usage"]["output_tokens"]}
        assert json.loads("{" + pre(html, "usage-1") + "}")["usage"] == run1.done["usage"]
        steps = data_of(r)["tools-data"]["steps"]
        assert len(steps) == len(run1.steps)
        for a, b in zip(steps, run1.steps):
            assert a["text"] == b["text"] and a["n_allowed"] == b.get("n_allowed")
            assert a["mass_removed"] == b.get("mass_removed", 0.0)
        if choice == "auto":
            assert htmllib.unescape(re.search(r'id="text-1">(.*?)</blockquote>', html, re.S).group(1)) == run1.text
            continue
        block = json.loads(pre(html, "tool-use"))
        assert tools.tool_use_block(run1)["input"] == block["input"]
        content, is_error = run_tool(block["name"], block["input"])
        assert pre(html, "tool-output") == content
        assert ("true" if is_error else "false") in re.search(r'id="is-error">(\w+)<', html).group(1)
        body2 = json.loads(pre(html, "body-2"))
        assert "tools" not in body2
        assert body2["messages"][-2]["content"][0]["input"] == block["input"]
        assert body2["messages"][-1]["content"][0]["tool_use_id"] == block["id"]
        run2 = run_request(engine(), body2, seed=SCENARIO.seed)
        assert usage_attrs(html, "usage-2") == {"input": run2.done["usage"]["input_tokens"],
                                                "output": run2.done["usage"]["output_tokens"]}
        assert htmllib.unescape(re.search(r'id="text-2">(.*?)</blockquote>', html, re.S).group(1)) == run2.text


@pytest.mark.parametrize("opts", [{"tool": "rm_rf"}, {"choice": "maybe"}, {"ask": "twice"}, {"step": "-1"}, {"step": "x"},
                                  {"step": "9999"}, {"choice": "auto", "step": "500"}])
def test_bad_options_are_400_pages(client, opts):
    r = get(client, SCENARIO, **opts)
    assert r.status_code == 400
    assert "cannot be shown" in r.content.decode()


def test_step_in_range_renders(client):
    n = len(stage_data(client, "tools", SCENARIO)["tools-data"]["steps"])
    r = get(client, SCENARIO, step=str(n - 1))
    assert r.status_code == 200 and data_of(r)["tools-data"]["step"] == n - 1


@pytest.mark.slow
def test_hostile_text_is_escaped(client):
    hostile = Scenario(system='<script>alert(1)</script>',
                       messages=[{"role": "user", "content": '<img src=x onerror="alert(1)"> \u202eevil\u202c ' + "😀" * 30}],
                       max_tokens=4)
    html = get(client, hostile, choice="none").content.decode()
    assert "<img src=x" not in html and "<script>alert(1)" not in html
    assert "&lt;img src=x" in html


def test_a_prompt_too_long_shows_the_api_400(client):
    long = Scenario(messages=[{"role": "user", "content": "😀" * 2000}])
    r = get(client, long)
    assert r.status_code == 200
    html = r.content.decode()
    err = json.loads(pre(html, "error-1"))
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert "too long" in err["error"]["message"]
    assert 'data-filled="true"' not in html


# ---- the learner's own tool (tool=own: the scenario's tools[0], a stand-in result in step 3) ----

OWN_TOOL = {"name": "pick_colour", "description": "Pick a colour for the chart.",
            "input_schema": {"type": "object",
                             "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]},
                                            "bold": {"type": "boolean"}},
                             "required": ["colour", "bold"]}}


@pytest.mark.slow
def test_own_tool_runs_the_loop_with_a_stand_in_result(client):
    own = SCENARIO.replace(tools=[OWN_TOOL])
    r = get(client, own, tool="own")
    assert r.status_code == 200
    html = r.content.decode()
    assert 'data-tool="own" aria-current="true"' in html
    assert html.count('data-filled="true"') == 5
    body1 = json.loads(pre(html, "body-1"))
    assert body1["tools"] == [OWN_TOOL] and body1["tool_choice"] == {"type": "tool", "name": "pick_colour"}
    assert body1 == tools.first_body(own, "own", "tool")
    block = json.loads(pre(html, "tool-use"))
    assert block["name"] == "pick_colour"
    jsonschema.validate(block["input"], OWN_TOOL["input_schema"])
    run1 = run_request(engine(), body1, seed=own.seed)
    assert tools.tool_use_block(run1)["input"] == block["input"]
    # step 3: a labelled stand-in, not a real run; steps 4-5 carry it back as the tool_result
    assert "Stand-in result" in html
    assert json.loads(pre(html, "tool-output")) == {"note": "your code would run pick_colour here"}
    body2 = json.loads(pre(html, "body-2"))
    assert body2["messages"][-1]["content"][0]["content"] == tools.stand_in("pick_colour")
    run2 = run_request(engine(), body2, seed=own.seed)
    assert usage_attrs(html, "usage-2") == {"input": run2.done["usage"]["input_tokens"],
                                            "output": run2.done["usage"]["output_tokens"]}
    # the form starts from the learner's tool
    assert 'id="own-name"' in html and 'value="pick_colour"' in html


@pytest.mark.slow
def test_own_tool_with_choice_any(client):
    r = get(client, SCENARIO.replace(tools=[OWN_TOOL]), tool="own", choice="any")
    assert r.status_code == 200
    block = json.loads(pre(r.content.decode(), "tool-use"))
    assert block["name"] == "pick_colour"
    jsonschema.validate(block["input"], OWN_TOOL["input_schema"])


def test_own_without_tools_is_400(client):
    r = get(client, SCENARIO, tool="own")
    assert r.status_code == 400
    html = r.content.decode()
    assert "cannot be shown" in html and "tool of your own" in html


@pytest.mark.slow
def test_own_pill_only_when_the_scenario_has_a_tool(client):
    assert 'data-tool="own"' not in get(client, SCENARIO).content.decode()
    assert 'data-tool="own"' in get(client, SCENARIO.replace(tools=[OWN_TOOL])).content.decode()


@pytest.mark.slow
def test_unsupported_schema_is_a_clear_message(client):
    bad = dict(OWN_TOOL, input_schema={"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}},
                                       "required": ["code"]})
    r = get(client, SCENARIO.replace(tools=[bad]), tool="own")
    assert r.status_code == 200  # the page shows the refusal, with the reason
    html = r.content.decode()
    err = json.loads(pre(html, "error-1"))
    assert "cannot decode this schema" in err["error"]["message"] and "pattern" in err["error"]["message"]


@pytest.mark.slow
def test_unsupported_schema_raised_by_the_engine_is_caught(client, monkeypatch):
    from explainer.llm.constrained import UnsupportedSchema

    def boom(*a, **k):
        raise UnsupportedSchema("properties.x: keywords ['pattern'] are not supported")
    monkeypatch.setattr(tools, "run_request", boom)
    tools._CACHE.clear()
    r = get(client, SCENARIO.replace(tools=[OWN_TOOL], seed=77), tool="own")
    tools._CACHE.clear()
    assert r.status_code == 200
    assert "cannot decode this schema" in json.loads(pre(r.content.decode(), "error-1"))["error"]["message"]


@pytest.mark.parametrize("tool", [dict(OWN_TOOL, name="bad name!"), dict(OWN_TOOL, input_schema={"type": "string"}),
                                  "not an object", dict(OWN_TOOL, input_schema={"type": "object", "properties": 3})])
def test_invalid_own_tool_shows_the_api_400(client, tool):
    r = get(client, SCENARIO.replace(tools=[tool]), tool="own")
    assert r.status_code == 200
    err = json.loads(pre(r.content.decode(), "error-1"))
    assert err["type"] == "error" and err["error"]["message"].startswith("tools.0")
    assert 'data-filled="true"' not in r.content.decode()


@pytest.mark.slow
def test_hostile_own_tool_description_is_escaped(client):
    hostile = dict(OWN_TOOL, description='<script>alert(1)</script><img src=x onerror="alert(2)"> \u202eevil')
    r = get(client, SCENARIO.replace(tools=[hostile]), tool="own")
    assert r.status_code == 200
    html = r.content.decode()
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)" in html
