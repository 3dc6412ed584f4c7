"""The streaming stage through Django's test client: the recorded run as Server-Sent Events."""
import html as htmllib
import json
import re
from urllib.parse import urlencode

import pytest
from django.template.defaultfilters import floatformat

from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages.streaming import transcript
from explainer.stages.runs import codec, run_of
from tests.urls import data_of

SCENARIO = Scenario(messages=[{"role": "user", "content": "What is a primary key?"}], max_tokens=14, seed=9)


def get(client, scenario=None, **opts):
    q = {"s": codec().encode(scenario)} if scenario is not None else {}
    q.update(opts)
    return client.get("/learn/streaming/" + ("?" + urlencode(q) if q else ""))


def wire_events(html: str) -> list[tuple[str, dict]]:
    """(name, data) of the SSE lines the page shows, read back from its HTML."""
    items = re.findall(r'<span class="k">event:</span> <span class="ev-name">([^<]*)</span></span>\s*'
                       r'<span class="line"><span class="k">data:</span> <span class="data">([^<]*)</span>', html)
    return [(name, json.loads(htmllib.unescape(data))) for name, data in items]


def test_it_renders_the_default_scenario(client):
    r = get(client)
    assert r.status_code == 200
    html = r.content.decode()
    assert "The events that carried it" in html and "text_stream" in html and "get_final_message()" in html
    # the main visual: the reply's text beside (on a phone, above) the events that carried it, and Play
    mv = html[html.index('id="main-visual"'):html.index('class="scenario-bar"')]
    for id_ in ("play", "pace", "text", "wire", "stop-words"):
        assert f'id="{id_}"' in mv, id_
    assert "text_stream" not in mv  # the SDK's side is in the "In the API" fold
    assert html.index('id="in-the-api"') < html.index("text_stream")


def test_the_stop_reason_is_said_in_words(client):
    run = run_of(SCENARIO)
    html = get(client, SCENARIO).content.decode()
    words = {"max_tokens": "reached max_tokens, the limit you set", "end_turn": "the model chose to stop (end_turn)"}[run.done["stop_reason"]]
    assert re.search(rf'<p id="stop-words"[^>]*>stopped: {re.escape(htmllib.escape(words))}</p>', html)
    assert re.search(rf'data-metric="stop_reason">.*?<dd>{re.escape(htmllib.escape(words))}</dd>', html, re.S)


def test_the_transcript_is_the_run_s_events_as_sse(client):
    run = run_of(SCENARIO)
    html = get(client, SCENARIO).content.decode()
    shown = wire_events(html)
    assert [name for name, _ in shown] == [e["type"] for e in run.events]
    assert [data for _, data in shown] == run.events
    assert shown[0][1]["message"]["usage"]["input_tokens"] == len(run.prompt_ids)
    assert shown[-2][1]["usage"]["output_tokens"] == run.done["usage"]["output_tokens"]
    assert f"input_tokens: {len(run.prompt_ids)}, known before any output" in html
    assert f"output_tokens: {run.done['usage']['output_tokens']}, known only now, at the end" in html
    # the rendered text and the recorded engine timings
    shown_text = re.search(r'<div id="text"[^>]*>(.*?)</div>', html, re.S).group(1)
    assert htmllib.unescape(re.sub(r"<[^>]*>", "", shown_text)) == run.text  # one piece per text delta, joined
    assert shown_text.count('class="piece"') == sum(1 for e in run.events if e["type"] == "content_block_delta")
    assert f"{floatformat(run.done['timings']['time_to_first_token_ms'], 1)} ms" in html
    bytes_ = sum(len(f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()) for e in run.events)
    assert f"{bytes_:,} bytes as Server-Sent Events" in html


def test_explainer_token_frames_sit_before_the_delta_they_produced():
    run = run_of(SCENARIO)
    lines = transcript(run)
    tokens = [json.loads(x["data"]) for x in lines if x["name"] == "explainer.token"]
    assert [t["token"] for t in tokens] == [s["token"] for s in run.steps]
    pieces = ""
    for x in lines:
        if x["name"] == "explainer.token":
            pieces += json.loads(x["data"])["piece"]
        elif x["name"] == "content_block_delta":
            assert pieces.endswith(json.loads(x["data"])["delta"]["text"])  # the delta follows its token
    assert lines[-1]["name"] == "explainer.done"


def test_the_socket_gets_the_scenario_s_body_and_seed(client):
    r = get(client, SCENARIO, pace="40", frames="api")
    html, data = r.content.decode(), data_of(r)
    assert data["request-body"] == SCENARIO.request_body()
    cfg = data["stream-config"]
    assert cfg["seed"] == 9 and cfg["pace"] == 40 and cfg["frames"] == "api"
    assert cfg["recorded_text"] == run_of(SCENARIO).text
    assert 'class="st-wire api-only"' in html and 'value="40"' in html


@pytest.mark.parametrize("opts", [{"pace": "-1"}, {"pace": "501"}, {"pace": "fast"}, {"frames": "some"}])
def test_bad_view_options_are_a_400(client, opts):
    r = get(client, SCENARIO, **opts)
    assert r.status_code == 400 and "Traceback" not in r.content.decode()


def test_a_refused_request_has_no_stream(client):
    r = get(client, Scenario(messages=[{"role": "user", "content": "word " * 2000}]))
    assert r.status_code == 200
    html = r.content.decode()
    assert "No stream" in html and wire_events(html) == []


def test_hostile_text_is_escaped(client):
    hostile = Scenario(system="</script><script>alert(1)</script>", max_tokens=4,
                       messages=[{"role": "user", "content": '<img src=x onerror=alert(1)>\u202e' + "😀" * 50}])
    html = get(client, hostile).content.decode()
    assert "<img src=x" not in html and "<script>alert" not in html
