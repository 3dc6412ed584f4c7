"""The tools stage through Django's test client: both requests of the loop are the engine's own,
the tool_use input validates against the tool's schema, bad options are 400 pages, hostile text is escaped."""
import html as htmllib
import json
import re
from urllib.parse import urlencode

import jsonschema
import numpy as np
import pytest

from explainer.lifecycle.demo_tools import DEMO_TOOLS, run_tool
from explainer.lifecycle.engine import run_request
from explainer.lifecycle.scenario import Scenario
from explainer.lifecycle.tool_format import TOOL_USE_PREFIX
from explainer.llm.training import tool_eval
from explainer.stages.pages import tools, tools_attention
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


def test_the_default_view_is_the_article_s_example(client):
    """No options: the article's question, the article's get_dag_status (dag_id any string, the definition that
    ``evaluate --tools`` measures), the call decoded under its schema, the stand-in Airflow's answer to it, and
    request 2; the caption says whether the call names the question's DAG."""
    r = get(client)
    html = r.content.decode()
    question = "Did my etl_pipeline DAG run today?"
    assert r.context["tool"] == "article" and r.context["demo"] and r.context["question"] == question
    body1 = json.loads(pre(html, "body-1"))
    assert body1["messages"] == [{"role": "user", "content": question}]
    assert body1["tools"] == [tool_eval.ARTICLE_TOOL] and body1["tool_choice"] == {"type": "tool", "name": "get_dag_status"}
    assert body1 == tools.first_body(Scenario(messages=[{"role": "user", "content": question}]), "article", "tool")
    block = json.loads(pre(html, "tool-use"))
    assert block["name"] == "get_dag_status"
    jsonschema.validate(block["input"], tool_eval.ARTICLE_TOOL["input_schema"])
    output = pre(html, "tool-output")
    if block["input"]["dag_id"] == "etl_pipeline":  # a call that copies gets the article's result
        assert output == tool_eval.ARTICLE_RESULT and r.context["result"]["is_error"] is False
    else:
        assert output.startswith("unknown DAG") and r.context["result"]["is_error"] is True
        assert "not the question's etl_pipeline" in r.context["headline"]
    loop = re.search(r'<ol class="tl-loop".*?</ol>', html, re.S).group(0)
    assert loop.count("<li ") == 5 and "stop_reason <code>tool_use</code>" in loop
    assert html.count('data-filled="true"') == 5
    assert 'href="/learn/tools/?ask=request"' in html  # the request's own question, one link away


def test_the_enum_demo_asks_for_a_dag_of_its_table(client):
    """tool=get_dag_status: the demo table's tool, whose dag_id is an enum, asked the same question about one of
    its invented DAGs; the call, the tool's result and the caption follow it."""
    r = get(client, tool="get_dag_status")
    html = r.content.decode()
    question = tools.DEMO_QUESTIONS["get_dag_status"]
    assert r.context["demo"] and r.context["question"] == question
    body1 = json.loads(pre(html, "body-1"))
    assert body1 == tools.first_body(Scenario(messages=[{"role": "user", "content": question}]), "get_dag_status", "tool")
    block = json.loads(pre(html, "tool-use"))
    dag = block["input"]["dag_id"]
    assert dag in DEMO_TOOLS["get_dag_status"].input_schema["properties"]["dag_id"]["enum"]
    assert json.loads(pre(html, "tool-output"))["dag_id"] == dag  # the tool really ran, for that DAG
    named = "which the question names" if dag in question else "not the question's snail_mail_tracking"
    assert r.context["headline"] == (f'The model asked for get_dag_status with {{"dag_id":"{dag}"}}, {named}; '
                                     "your code ran it, and request 2 carried the result back.")


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
        definition = tools.definition_of(SCENARIO, tool)
        assert block["type"] == "tool_use" and block["name"] == definition["name"] and block["id"].startswith("toolu_")
        if pre(html, "tool-output") is not None:  # the call was complete: the app ran it
            jsonschema.validate(block["input"], definition["input_schema"])
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


# ---- the attention beside the call (tools_attention: where the model looked while it wrote the argument) ----

def _reference_weights(run, choice: str, name: str) -> tuple[list[int], int, dict]:
    """Every head's attention over the whole sequence the engine ran, in one pass without a cache (the page runs
    the part before the argument first, then the argument's rows)."""
    e = engine()
    forced = TOOL_USE_PREFIX + (name + "\n" if choice == "tool" else "")
    ids = list(run.prompt_ids) + e.tokenizer.encode(forced) + [s["token"] for s in run.steps]
    trace = e.model.forward(ids, want=("block_*_attn_head_*_weights",)).trace
    return ids, len(ids) - len(run.steps), trace


def test_the_attention_figures_are_the_model_s_own(client):
    """The article's example: the figures in /data are measured from the model's attention weights (recomputed
    here in one uncached pass), every row sums to 1 over the question, the part before it and the part after it,
    the head drawn is the one with the largest share on etl_pipeline, and the engine's output count agrees with
    the sequence the figures were computed on."""
    d = stage_data(client, "tools")
    a = d["tools-attention"]
    question = "Did my etl_pipeline DAG run today?"
    assert a["reason"] is None and a["identifier"] == "etl_pipeline" and a["picked_by"] == "identifier"
    assert "".join(c["text"] for c in a["columns"]) == question
    assert "".join(c["text"] for c in a["columns"] if c["ident"]) == "etl_pipeline" and a["n_ident"] == sum(c["ident"] for c in a["columns"])
    body1 = tools.first_body(Scenario(messages=[{"role": "user", "content": question}]), "article", "tool")
    run = run_request(engine(), body1, seed=Scenario().seed)
    assert a["call_json"] == tools.tool_use_block(run)["raw"]
    n_forced = len(engine().tokenizer.encode(TOOL_USE_PREFIX + "get_dag_status\n"))
    assert run.done["usage"]["output_tokens"] == n_forced + len(run.steps) + 1  # the call line, the JSON, the turn's end
    ids, start, trace = _reference_weights(run, "tool", "get_dag_status")
    # the sequence is the one the engine ran: position p - 1's scores put first the token the model wanted at step p
    logits = engine().model.forward(ids).logits
    assert [int(np.argmax(logits[start + k - 1])) for k in range(len(run.steps))] == [s["unconstrained"][0]["token"] for s in run.steps]
    tok = engine().tokenizer
    # the argument's tokens: those holding a character of the value, between '{"dag_id":"' and '"}'
    ends = [len("".join(s["piece"] for s in run.steps[:k + 1])) for k in range(len(run.steps))]
    value = json.loads(a["call_json"])["dag_id"]
    lo, hi = len('{"dag_id":"'), len(a["call_json"]) - len('"}')
    assert a["call_json"][lo:hi] == value
    arg = [start + k for k, end in enumerate(ends) if end > lo and end - len(run.steps[k]["piece"]) < hi]
    assert len(arg) == a["n_rows"] >= 1
    # the question's first token: where the bytes before it end at the question's start
    offsets = [len(tok.decode_bytes(run.prompt_ids[:i])) for i in range(len(run.prompt_ids))]
    q0 = offsets.index(tok.decode_bytes(run.prompt_ids).rfind(question.encode()))
    ident = [q0 + i for i, c in enumerate(a["columns"]) if c["ident"]]
    shares = [[float(100 * sum(trace[f"block_{l}_attn_head_{h}_weights"][p - 1, ident].sum() for p in arg) / len(arg))
               for h in range(a["n_head"])] for l in range(a["n_layer"])]
    assert sum(a["shares_pct"], []) == pytest.approx(sum(shares, []), abs=0.06)
    best = max(((l, h) for l in range(a["n_layer"]) for h in range(a["n_head"])), key=lambda lh: shares[lh[0]][lh[1]])
    assert (a["layer"], a["head"]) == best and a["share_pct"] == max(max(r) for r in a["shares_pct"])
    assert a["mean_pct"] == pytest.approx(sum(map(sum, shares)) / (a["n_layer"] * a["n_head"]), abs=0.06)
    assert a["even_pct"] == pytest.approx(100 * sum(len(ident) / p for p in arg) / len(arg), abs=0.06)
    assert a["times_even"] == pytest.approx(a["share_pct"] / a["even_pct"], abs=0.06)
    w = trace[f"block_{a['layer']}_attn_head_{a['head']}_weights"]
    for row, p in zip(a["rows"], arg):
        assert row["position"] == p
        assert [c["pct"] for c in row["cells"]] == pytest.approx(100 * w[p - 1, q0:q0 + len(a["columns"])], abs=0.006)
        assert sum(c["pct"] for c in row["cells"]) + row["before_pct"] + row["after_pct"] == pytest.approx(100, abs=0.3)
        assert sum(c["pct"] for c in row["cells"]) + row["rest_pct"] == pytest.approx(100, abs=0.6)
        assert row["share_pct"] == pytest.approx(sum(c["pct"] for c in row["cells"] if c["ident"]), abs=0.1)
    assert len(a["rows"]) == min(tools_attention.ROWS, a["n_rows"])
    assert a["copied"] == (value == "etl_pipeline")


def test_the_page_shows_the_attention_figures_of_its_data(client):
    """A figure shown twice agrees: the caption's share, the even spread, the head, each row's rest and the
    sentence under the picture are /data's numbers, and the headline names the same identifier."""
    for opts in ({}, {"tool": "get_dag_status"}, {"tool": "get_time", "choice": "any"}):
        r = get(client, **opts)
        html, a = r.content.decode(), data_of(r)["tools-attention"]
        fig = re.search(r'<figure class="tl-attn".*?</figure>', html, re.S).group(0)
        assert f'data-layer="{a["layer"]}" data-head="{a["head"]}"' in fig
        assert f'layer {a["layer"]}, head {a["head"]}' in fig
        assert re.search(r'id="attn-share" data-pct="([\d.]+)">([\d.]+)%<', fig).groups() == (str(a["share_pct"]),) * 2
        assert re.search(r'id="attn-even" data-pct="([\d.]+)">([\d.]+)%<', fig).groups() == (str(a["even_pct"]),) * 2
        assert f'{a["times_even"]}× an even spread' in fig
        rest = re.findall(r'<td class="tl-else">(\d+)%</td>', fig)
        assert rest == [str(r["rest_pct"]) for r in a["rows"]]
        cells = re.findall(r'style="--w: ([\d.]+)"', fig)
        assert cells == [str(c["pct"]) for row in a["rows"] for c in row["cells"]]
        assert f'style="--max: {a["max_pct"]}"' in fig and a["max_pct"] == max(float(c) for c in cells)
        named = a["identifier"] in r.context["headline"]
        assert named, r.context["headline"]


def test_no_call_no_attention(client):
    """tool_choice none: a text answer, so there is no argument to trace, and the page says so."""
    r = get(client, choice="none")
    a = data_of(r)["tools-attention"]
    assert a == {"reason": "With tool_choice none the model answered in text: there is no argument to trace."}
    assert a["reason"] in r.content.decode()


@pytest.mark.parametrize("question", ["Did my nightly job run today?", Scenario().messages[0]["content"] + " " + "Tell me more. " * 6])
def test_a_question_that_names_no_identifier_is_measured_on_the_question(client, question):
    """No identifier: the head drawn is the one that looks most at the question; a question wider than a phone is
    drawn in part, and the figures still add up to the head's whole attention."""
    r = get(client, Scenario(messages=[{"role": "user", "content": question}]), choice="tool")
    a = data_of(r)["tools-attention"]
    assert a["identifier"] is None and a["picked_by"] == "question" and a["even_pct"] is None
    assert "names no identifier" in r.content.decode()
    assert a["share_pct"] + a["before_pct"] + a["after_pct"] + a["other_pct"] == pytest.approx(100, abs=0.3)
    assert a["other_pct"] == 0 and a["before_pct"] >= 0 and a["after_pct"] >= 0
    assert sum(len(c["text"]) for c in a["columns"]) <= tools_attention.COLUMN_CHARS or len(a["columns"]) == 1
    assert (len(a["columns"]) < a["n_question"]) == (len(question) > tools_attention.COLUMN_CHARS)
    for row in a["rows"]:
        assert sum(c["pct"] for c in row["cells"]) + row["rest_pct"] == pytest.approx(100, abs=0.6)


def test_hostile_text_in_the_question_is_escaped_in_the_picture(client):
    """The question's tokens head the picture's columns and a quoted identifier is named in its caption: both are
    escaped, as is the headline that names it."""
    hostile = Scenario(messages=[{"role": "user", "content": 'Is "<svg/onload=alert(1)>" up? <img src=x onerror="alert(2)"> \u202e'}],
                       max_tokens=40)
    r = get(client, hostile, tool="article", ask="request")
    html, a = r.content.decode(), data_of(r)["tools-attention"]
    assert a["identifier"] == "<svg/onload=alert(1)>"
    fig = re.search(r'<figure class="tl-attn".*?</figure>', html, re.S).group(0)
    assert "<svg" not in html and "<img" not in html and "&lt;svg/onload=alert(1)&gt;" in fig
    for c in a["columns"]:  # each of the question's tokens heads its column, escaped
        assert f">{htmllib.escape(c['text'])}</th>" in fig
    assert any("<" in c["text"] for c in a["columns"])
    assert "\u202e" not in fig  # a bidi control is shown as its marker, not obeyed


def test_how_it_works_reads_the_same_attention_figures(client):
    """The fold's reading of the picture gives /data's figures, and they add up: the identifier's share, what
    comes before and after the drawn columns and the question's other tokens make the head's whole attention."""
    for opts in ({}, {"tool": "get_dag_status"}):
        r = get(client, **opts)
        a = data_of(r)["tools-attention"]
        text = re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", "", re.search(r'id="attention-reading">(.*?)</p>',
                                                                                   r.content.decode(), re.S).group(1))))
        assert f"layer {a['layer']}, head {a['head']}: over the argument's {a['n_rows']} tokens" in text
        assert f"{a['share_pct']}% of its attention, where an even spread over everything it could see would give {a['even_pct']}%" in text
        for key in ("mean_pct", "before_pct", "after_pct", "other_pct"):
            assert f"{a[key]}%" in text
        assert a["share_pct"] + a["before_pct"] + a["after_pct"] + a["other_pct"] == pytest.approx(100, abs=0.3)
        assert ("The argument is not" in text) != a["copied"]
        if opts:  # the enum's size, from the tool's schema
            n = len(DEMO_TOOLS["get_dag_status"].input_schema["properties"]["dag_id"]["enum"])
            assert a["copied"] is (json.loads(pre(r.content.decode(), "tool-use"))["input"]["dag_id"] == "snail_mail_tracking")
            assert not a["copied"] or f"the model chose among {n} names" in text
        grid = re.search(r'<table class="tl-heads-grid".*?</table>', r.content.decode(), re.S).group(0)
        assert re.findall(r">([\d.]+)%</td>", grid) == [str(x) for row in a["shares_pct"] for x in row]
        assert re.search(r'class="best" aria-current="true">([\d.]+)%<', grid).group(1) == str(a["share_pct"])


@pytest.mark.parametrize("choice", ["tool", "any"])
def test_the_traced_sequence_is_the_one_the_engine_ran(choice):
    """tools_attention.sequence rebuilds the ids the engine ran (the prompt, the opening line it forced, every
    token it generated): at each step, the model's scores one position earlier rank first the token the engine
    recorded as the model's own first choice, with tool_choice tool (the name forced) and any (the name chosen)."""
    question = tools.DEMO_QUESTIONS["article"]
    run = run_request(engine(), tools.first_body(Scenario(messages=[{"role": "user", "content": question}]), "article", choice))
    ids, offset = tools_attention.sequence(engine().tokenizer, run, choice, "get_dag_status")
    assert ids[:offset][:len(run.prompt_ids)] == run.prompt_ids and len(ids) == offset + len(run.steps)
    logits = engine().model.forward(ids).logits
    assert [int(np.argmax(logits[offset + k - 1])) for k in range(len(run.steps))] == [s["unconstrained"][0]["token"] for s in run.steps]
    first = tools_attention.input_start(run.steps, choice, "get_dag_status")
    assert "".join(s["piece"] for s in run.steps[first:]).startswith('{"dag_id":')


def test_a_line_break_in_the_question_is_marked_in_the_picture(client):
    a = stage_data(client, "tools", Scenario(messages=[{"role": "user", "content": "Did my\netl_pipeline\tDAG run?"}]))["tools-attention"]
    heads = "".join(c["text"] for c in a["columns"])
    assert heads == "Did my↵etl_pipeline⇥DAG run?" and a["identifier"] == "etl_pipeline"
