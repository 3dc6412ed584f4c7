"""The conversation stage through Django's test client: every number on the page against the engine."""
import html as htmllib
import json
import re
from urllib.parse import urlencode

import pytest

from explainer.lifecycle.conversation import SUMMARY_PREFIX, alternates
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.pricing import cost
from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages.conversation import CANNED_TURNS, DEMO_REQUESTS, body_json, usd
from explainer.stages.runs import codec, engine, run_of
from tests.urls import data_of, stage_data

SYSTEM = "You are a helpful assistant for software engineers."
START = Scenario(system=SYSTEM, messages=[{"role": "user", "content": "How do I create an index in PostgreSQL?"}], max_tokens=40, seed=11)


def grow(scenario: Scenario, turns) -> Scenario:
    """What pressing Send with each of ``turns`` builds: the history, the model's reply, the new turn."""
    msgs = list(scenario.messages)
    for t in turns:
        run = run_of(scenario.replace(messages=msgs))
        assert run.error is None
        msgs = msgs + [{"role": "assistant", "content": run.text}, {"role": "user", "content": t}]
    return scenario.replace(messages=msgs)


def to_the_limit(scenario: Scenario) -> Scenario:
    for k in range(1, len(CANNED_TURNS) + 1):
        sc = grow(scenario, CANNED_TURNS[:k])
        if run_of(sc).error:
            return sc
    raise AssertionError("the canned turns never reach the limit")


def count_tokens(scenario: Scenario, n_messages: int) -> int:
    """What POST /v1/messages/count_tokens answers for the first ``n_messages`` of the scenario."""
    body = {"model": scenario.model, "messages": scenario.messages[:n_messages]}
    if scenario.system:
        body["system"] = scenario.system
    return len(engine().prompt_ids(parse_request(body, counting=True)))


def get(client, scenario=None, **opts):
    q = {"s": codec().encode(scenario)} if scenario is not None else {}
    q.update(opts)
    return client.get("/learn/conversation/" + ("?" + urlencode(q) if q else ""))


def table_rows(html: str) -> list[dict]:
    rows = re.findall(r'<tr data-turn="(\d+)"[^>]*>(.*?)</tr>', html, re.S)
    out = []
    for turn, row in rows:
        cells = dict(re.findall(r'<td data-col="([a-z-]+)">([^<]*)</td>', row))
        out.append({"turn": int(turn), **{k: htmllib.unescape(v) for k, v in cells.items()}})
    return out


@pytest.mark.slow
def test_the_default_view_opens_on_several_requests(client):
    """No options: the default question, fast-forwarded with the suggested follow-ups, as Send would build it."""
    r = get(client)
    assert r.status_code == 200
    html = r.content.decode()
    assert "What a chat really sends, turn after turn" in html and "The API remembers nothing" in html
    assert r.context["n_turns"] == DEMO_REQUESTS == r.context["played"] >= 3
    grown = grow(Scenario(), CANNED_TURNS[:DEMO_REQUESTS - 1])
    assert data_of(r)["conversation-data"]["history"] == grown.messages  # the model's own replies, the canned follow-ups
    rows = table_rows(html)
    for row, n in zip(rows, (1, 3, 5, 7)):
        assert row["input"] == str(count_tokens(grown, n))
    inputs = [int(x["input"]) for x in rows]
    assert inputs == sorted(inputs) and not r.context["refused"]  # it grows, and the last request still fits
    # the caption under the chart is the numbers' own
    steps = [b - a for a, b in zip(inputs, inputs[1:])]
    headline = r.context["headline"]
    assert headline.startswith(f"From {inputs[0]} input tokens in request 1 to {inputs[-1]} in request {len(inputs)}:")
    assert f"growing by {min(steps)} to {max(steps)} tokens a request" in headline
    assert f"{engine().max_prompt_tokens - inputs[-1]} tokens are left below the {engine().max_prompt_tokens}-token limit" in headline
    assert "a straight line" not in html and "(a curve)" not in html
    assert 'id="send-form"' in html and "Fast-forward to the limit" in html
    # starting from one turn is one link away
    assert r.context["start_over_url"] == "/learn/conversation/?ff=1" and 'href="/learn/conversation/?ff=1"' in html


def test_ff_1_starts_from_the_question_alone(client):
    r = get(client, ff="1")
    assert r.status_code == 200
    html = r.content.decode()
    assert r.context["n_turns"] == 1 and r.context["played"] == 0
    assert table_rows(html)[0]["input"] == str(len(run_of(Scenario()).prompt_ids))
    assert r.context["headline"].startswith(f"One request so far: {len(run_of(Scenario()).prompt_ids)} input tokens.")
    assert r.context["ff_url"] == "/learn/conversation/"  # and back to the fast-forwarded opening


@pytest.mark.slow
def test_fast_forward_stops_before_a_request_the_api_would_refuse(client):
    r = get(client, ff=str(len(CANNED_TURNS) + 1))
    n = r.context["n_turns"]
    assert not r.context["refused"] and n < len(CANNED_TURNS) + 1
    assert run_of(grow(Scenario(), CANNED_TURNS[:n])).error is not None  # one more would not fit
    # a conversation that already has a history is shown as it is
    sc = grow(START, CANNED_TURNS[:1])
    assert get(client, sc).context["n_turns"] == 2 and get(client, sc).context["played"] == 0


def test_every_request_s_numbers_are_the_engine_s(client):
    sc = grow(START, CANNED_TURNS[:2])
    r = get(client, sc)
    assert r.status_code == 200
    html = r.content.decode()
    rows = table_rows(html)
    assert [x["turn"] for x in rows] == [1, 2, 3]
    total_in, total_cost = 0, 0.0
    for row, n in zip(rows, (1, 3, 5)):
        prefix = sc.replace(messages=sc.messages[:n])
        run = run_of(prefix)
        n_in = count_tokens(sc, n)
        assert n_in == len(run.prompt_ids) == run.done["usage"]["input_tokens"]  # count_tokens = usage
        assert row["input"] == str(n_in)
        assert row["output"] == str(run.done["usage"]["output_tokens"])
        c = cost(sc.model, run.done["usage"])["total"]
        total_in += n_in
        total_cost += c
        assert row["cost"] == usd(c)
        assert row["cum-input"] == str(total_in) and row["cum-cost"] == usd(total_cost)
    # the earlier replies in the history are the model's own: nothing is flagged as edited
    assert not any(t["edited"] for t in r.context["turns"])
    # payload bytes: the compact JSON body of each request
    for t, n in zip(r.context["turns"], (1, 3, 5)):
        body = sc.replace(messages=sc.messages[:n]).request_body()
        assert t["bytes"] == len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
        assert sum(seg["tokens"] for seg in t["segments"]) == t["input_tokens"]  # the bar adds up
        assert [s["new"] for s in t["segments"] if s["kind"] in ("user", "assistant")] == [i >= n - 2 if n > 1 else True for i in range(n)]


def test_input_per_request_grows_and_the_total_grows_faster(client):
    sc = grow(START, CANNED_TURNS[:2])
    d = stage_data(client, "conversation", sc)["conversation-data"]
    inputs = [t["input"] for t in d["turns"]]
    cumulative = [t["cum_input"] for t in d["turns"]]
    assert inputs == sorted(inputs) and cumulative == [sum(inputs[:k + 1]) for k in range(len(inputs))]
    assert d["growth"] == pytest.approx((inputs[-1] - inputs[0]) / 2)
    for p in d["projections"]:
        sizes = [inputs[0] + k * d["growth"] for k in range(p["turns"])]
        assert sizes[-1] <= p["window"] < sizes[-1] + d["growth"]
        assert p["total_input"] == round(sum(sizes))
        assert p["cost"] == pytest.approx(p["total_input"] * 3 / 1e6, rel=1e-5)  # claude-sonnet-4-6: $3 per million input


def test_send_builds_on_the_history_and_this_reply(client):
    sc = grow(START, CANNED_TURNS[:1])
    d = stage_data(client, "conversation", sc)["conversation-data"]
    assert d["next_history"] == [*sc.messages, {"role": "assistant", "content": run_of(sc).text}]
    assert d["fields"]["system"] == SYSTEM and d["fields"]["seed"] == 11 and "messages" not in d["fields"]
    assert d["ends"] == [1, 3]
    assert d["canned"] == list(CANNED_TURNS)


def test_at_the_limit_the_page_shows_the_engine_s_error_and_strategies_that_fit(client):
    sc = to_the_limit(START)
    run = run_of(sc)
    r = get(client, sc)
    assert r.status_code == 200
    html = r.content.decode()
    n = len(sc.messages)
    n_in = count_tokens(sc, n)
    eng = engine()
    assert run.error == {"type": "error", "error": {"type": "invalid_request_error",
                                                    "message": f"prompt is too long: {n_in} tokens > {eng.max_prompt_tokens} maximum"}}
    assert "At the limit: the API refuses the request" in html and "HTTP/1.1 400 Bad Request" in html
    assert f"prompt is too long: {n_in} tokens &gt; {eng.max_prompt_tokens} maximum" in html
    assert table_rows(html)[-1]["cost"] == "not billed"
    budget = r.context["budget"]
    assert budget == eng.context_window - sc.max_tokens
    by_key = {s["key"]: s for s in r.context["strategies"]}
    for st in by_key.values():
        body = json.loads(st["body_json"])
        assert body["system"] == SYSTEM  # the system prompt is always kept
        assert alternates(body["messages"])
        assert body["messages"][-1]["content"].endswith(sc.messages[-1]["content"])  # the new question is sent
        assert st["tokens"] == count_tokens(sc.replace(messages=body["messages"]), len(body["messages"]))
        assert st["fits"] and st["tokens"] <= budget
        assert st["continue_url"] and st["body_json"] == body_json(sc.replace(messages=body["messages"]).request_body())
    summary = json.loads(by_key["summarise"]["body_json"])["messages"][0]["content"]
    assert summary.startswith(SUMMARY_PREFIX)
    assert by_key["summarise"]["summary_run"]["text"] in summary
    assert "A 4-million-parameter model writes poor summaries" in html


@pytest.mark.slow
def test_a_strategy_s_history_continues_the_conversation(client):
    sc = to_the_limit(START)
    r = get(client, sc)
    st = {s["key"]: s for s in r.context["strategies"]}["drop_oldest"]
    r2 = client.get(htmllib.unescape(st["continue_url"]))
    assert r2.status_code == 200 and not r2.context["refused"]
    assert r2.context["turns"][-1]["reply"] is not None


def test_keep_last_n_follows_n(client):
    sc = grow(START, CANNED_TURNS[:2])
    for n in (1, 2, 3):
        r = get(client, sc, n=str(n))
        st = {s["key"]: s for s in r.context["strategies"]}["keep_last_n"]
        users = [m for m in st["messages"] if m["role"] == "user"]
        assert len(users) == min(n, 3)


def test_a_model_without_a_price_shows_price_unknown(client):
    sc = grow(START.replace(model="claude-opus-5-5"), CANNED_TURNS[:1])
    html = get(client, sc).content.decode()
    assert "price unknown" in html and "is not in this app's dated price table" in html
    assert all(row["cost"] == "price unknown" for row in table_rows(html))


@pytest.mark.parametrize("opts", [{"n": "0"}, {"n": "21"}, {"n": "two"}, {"strategy": "forget"},
                                  {"turn": "-1"}, {"turn": "3"}, {"scale": "5m"}, {"ff": "0"}, {"ff": "7"}, {"ff": "x"}])
def test_bad_view_options_are_a_400(client, opts):
    r = get(client, grow(START, CANNED_TURNS[:1]), **opts)
    assert r.status_code == 400 and "Traceback" not in r.content.decode()


def test_view_options_select_what_is_shown(client):
    sc = grow(START, CANNED_TURNS[:1])
    r = get(client, sc, turn="1", strategy="summarise", scale="1m", n="4")
    d = data_of(r)["conversation-data"]
    assert (d["selected"], d["strategy"], d["scale"]) == (1, "summarise", "1m")
    assert json.loads(r.context["selected_json"])["messages"] == sc.messages[:1]
    html = r.content.decode()
    assert re.search(r'<div class="cv-payload" id="payload-summarise">', html)
    assert re.search(r'<div class="cv-payload" id="payload-drop_oldest" hidden>', html)


def test_a_request_refused_for_another_reason_says_so(client):
    r = get(client, Scenario(messages=[{"role": "assistant", "content": "I speak first."}]))
    assert r.status_code == 200
    assert "No conversation to show" in r.content.decode()


def test_long_runs_of_line_breaks_are_shown_as_one_mark():
    from explainer.stages.pages.conversation import pieces
    assert pieces("a\n\nb\n\n\n\n\nc") == [{"text": "a\n\nb"}, {"newlines": 5}, {"text": "c"}]
    assert pieces("\n\n\n") == [{"newlines": 3}] and pieces(None) == []


def test_hostile_text_is_escaped(client):
    hostile = Scenario(system="</script><script>alert(1)</script>", max_tokens=4,
                       messages=[{"role": "user", "content": '<img src=x onerror=alert(1)>\u202e' + "😀" * 50},
                                 {"role": "assistant", "content": "<b>hi</b>"}, {"role": "user", "content": "ok"}])
    r = get(client, hostile)
    assert r.status_code == 200
    html = r.content.decode()
    assert "<img src=x" not in html and "<script>alert" not in html and "<b>hi</b>" not in html


def test_text_the_tokenizer_cannot_encode_is_not_a_500(client):
    broken = Scenario(messages=[{"role": "user", "content": "a lone surrogate \ud800 here"}])
    r = get(client, broken)
    assert r.status_code == 400 and "Traceback" not in r.content.decode()  # the link cannot be shown: said so
