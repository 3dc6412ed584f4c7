"""One set of numbers (issue 21, item 3): every figure a page shows about a request (its bytes, its input
tokens, its stream's events and deltas) comes from the one counting function, explainer/lifecycle/figures.py,
or from its browser twin static/js/lib/figures.js, and means the same thing on every page.

The overview's journey counts its live run in the browser; its /data carries what those notes say for the
page's scenario sent unchanged, and this file compares it with each stage's /data (Recap has none: what it
prints is compared) and with what each stage prints, then runs the browser twin in Node on the frames the socket sends for the same request."""
from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from explainer.lifecycle.engine import Engine, run_request
from explainer.lifecycle.errors import STATUS, APIError
from explainer.lifecycle.figures import API_EVENTS, body_figures, compact_json, stream_figures
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages import caching, caching_pair, tools
from explainer.stages.runs import engine, run_of
from tests.urls import stage_data, stage_url

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]
NODE = pytest.mark.skipif(not shutil.which("node"), reason="needs Node.js (scripts/test.sh installs it)")

SCENARIOS = {
    "default": Scenario(),
    # text of several scripts, a system prompt, a float that JavaScript writes as 1, top_k and a stop sequence
    "mixed": Scenario(system="Réponds brièvement.", temperature=1.0, top_k=40, stop_sequences=["\n\n"], seed=3,
                      messages=[{"role": "user", "content": "What is “naïve” Bayes? 中文 🙂"}], max_tokens=20),
    "history": Scenario(messages=[{"role": "user", "content": "What is a DAG?"},
                                  {"role": "assistant", "content": "A graph of tasks."},
                                  {"role": "user", "content": "And a sensor?"}], max_tokens=16, seed=7),
    "over the window": Scenario(messages=[{"role": "user", "content": "index " * 900}]),
}


def journey(client, s: Scenario) -> dict:
    return stage_data(client, "overview", s)["journey-figures"]


def number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.slow
def test_every_stage_s_data_agrees_with_the_overview_s_journey(client, name):
    s = SCENARIOS[name]
    want = journey(client, s)
    run = run_of(s)
    # the journey's figures are the run's, counted independently here
    compact = json.dumps(s.request_body(), ensure_ascii=False, separators=(",", ":"))
    assert want["body_bytes"] == len(compact.replace('"temperature":1.0', '"temperature":1').encode())  # as JSON.stringify
    assert want["events"] == sum(1 for e in run.events if e["type"] in API_EVENTS) == len(run.events)
    assert want["deltas"] == sum(1 for e in run.events if e["type"] == "content_block_delta")
    assert want["input_tokens"] == (len(run.prompt_ids) if run.prompt_ids else None)
    assert want["refused"] == (run.error is not None)
    shown = {
        "compose": stage_data(client, "compose", s)["compose-data"]["figures"],
        "gateway": stage_data(client, "gateway", s)["gateway-sim"]["figures"],
        "streaming": stage_data(client, "streaming", s)["stream-config"]["figures"],
    }
    for slug, figures in shown.items():
        common = set(figures) & set(want)
        assert {"refused", "input_tokens"} <= common, slug
        assert {k: figures[k] for k in common} == {k: want[k] for k in common}, slug
    assert {"body_bytes"} <= set(shown["compose"]) & set(shown["gateway"]) and {"events", "deltas"} <= set(shown["streaming"])


@pytest.mark.parametrize("name", ["default", "mixed"])
@pytest.mark.slow
def test_every_stage_prints_the_same_figures(client, name):
    s = SCENARIOS[name]
    want = journey(client, s)
    compose = client.get(stage_url("compose", s)).content.decode()
    assert number(re.search(r'id="body-bytes">([\d,]+)<', compose).group(1)) == want["body_bytes"]
    gateway = client.get(stage_url("gateway", s)).content.decode()
    assert number(re.search(r"([\d,]+) bytes of JSON", gateway).group(1)) == want["body_bytes"]
    streaming = client.get(stage_url("streaming", s)).content.decode()
    m = re.search(r"(\d+) events, ([\d,]+) bytes as Server-Sent Events, for [\d,]+ characters of text in (\d+) deltas", streaming)
    assert (int(m.group(1)), number(m.group(2)), int(m.group(3))) == (want["events"], want["wire_bytes"], want["deltas"])
    recap = client.get(stage_url("recap", s)).content.decode()
    assert number(re.search(r'data-figure="body-bytes">([\d,]+)<', recap).group(1)) == want["body_bytes"]
    assert int(re.search(r'data-figure="events">(\d+)<', recap).group(1)) == want["events"]
    assert f"({want['deltas']} deltas)" in recap
    assert int(re.search(r'data-recap="input-tokens">(\d+)<', recap).group(1)) == want["input_tokens"]


def test_the_app_s_own_field_is_not_counted_and_numbers_are_written_as_javascript_does():
    body = SCENARIOS["mixed"].request_body()
    assert body_figures({**body, "explainer": {"seed": 3, "pace_ms": 0}}) == body_figures(body)
    assert '"temperature":1,' in compact_json(body)  # JSON.stringify(1.0) is "1": the browser counts 3 bytes fewer than "1.0"


def _node(tmp_path, script: str) -> dict:
    path = tmp_path / "run.mjs"
    path.write_text(f"import * as F from {json.dumps((ROOT / 'static/js/lib/figures.js').as_uri())};\n{script}")
    out = subprocess.run(["node", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@NODE
@pytest.mark.slow
def test_the_browser_twin_counts_the_socket_s_frames_as_the_stages_do(client, tmp_path):
    """The overview's script counts the frames ws/stream/ sends (explainer frames, an error, the API's events)
    with lib/figures.js: the same numbers as the stages' /data for the same request."""
    cases = {}
    for name, s in SCENARIOS.items():
        sent = {**s.request_body(), "explainer": {"seed": s.seed}}  # what overview.js sends for the scenario unchanged
        try:
            frames = list(Engine().stream(parse_request(s.request_body()), seed=s.seed))
        except APIError as exc:  # the refusal, as the socket sends it
            frames = [{"type": "error", "error": exc.body()["error"]}]
        cases[name] = {"body": sent, "frames": frames}
    out = _node(tmp_path, f"const cases = {json.dumps(cases, ensure_ascii=False)};\n"
                          "console.log(JSON.stringify(Object.fromEntries(Object.entries(cases).map(([k, c]) =>"
                          " [k, {body: F.bodyFigures(c.body), stream: F.streamFigures(c.frames)}]))));\n")
    for name, s in SCENARIOS.items():
        want = journey(client, s)
        assert out[name]["body"]["bytes"] == want["body_bytes"], name
        assert {k: out[name]["stream"][k] for k in ("events", "deltas", "wire_bytes")} == \
            {k: want[k] for k in ("events", "deltas", "wire_bytes")}, name
        assert out[name]["stream"] == stream_figures(cases[name]["frames"]), name


@NODE
def test_numbers_strings_and_statuses_are_written_alike_in_python_and_in_the_browser(tmp_path):
    values = [1.0, 0.7, 0.1 + 0.2, 1e-05, 1e-07, 5e-324, 1.5e21, 123456789012345680000.0, 1e16, -2.5, 0, 12,
              "a\ud800b", "tab\tnl\nesc\x1b", "中文 🙂", True, None, {"k": [1.0, {"x": 0.25}]}]
    out = _node(tmp_path, f"const v = JSON.parse({json.dumps(json.dumps(values))});\n"
                          "console.log(JSON.stringify({text: JSON.stringify(v), body: F.bodyFigures({v}), status: F.STATUS}));\n")
    assert out["text"] == compact_json(values)
    assert out["body"] == body_figures({"v": values})
    assert out["status"] == STATUS


def test_streaming_counts_each_event_as_the_api_writes_it(client):
    s = SCENARIOS["default"]
    events = client.get(stage_url("streaming", s)).context["events"]
    api = [e for e in events if not e.get("explainer")]
    assert sum(e["bytes"] for e in api) == journey(client, s)["wire_bytes"]
    assert [e["name"] for e in api] == [e["type"] for e in run_of(s).events]


# ---- Tools: why request 2 is smaller, in the picture itself -------------------------------------------------

def _main_visual(html: str) -> str:
    start = html.index('id="main-visual"')
    return html[start:html.index('<div class="scenario-bar">', start)]  # what _stage.html puts after it


@pytest.mark.parametrize("tool", ["get_dag_status", "calculator", "get_time"])
@pytest.mark.slow
def test_tools_says_in_the_picture_why_request_2_is_smaller(client, tool):
    r = client.get(stage_url("tools", None, tool=tool))
    html = r.content.decode()
    main = htmllib.unescape(re.sub(r"<[^>]+>", "", _main_visual(html)))
    main = re.sub(r"\s+", " ", main)
    sizes = r.context["sizes"]
    # the engine's own counts: request 1 with the tools, the same request without them, and request 2
    eng = engine()
    scenario = tools.asked(Scenario(), tool, "demo")
    body1 = tools.first_body(scenario, tool, "tool")
    bare = eng.prompt_ids(parse_request({k: v for k, v in body1.items() if k not in ("tools", "tool_choice")}))
    run1 = run_request(eng, body1, seed=scenario.seed)
    n1 = run1.done["usage"]["input_tokens"]
    assert sizes["tools"] == n1 - len(bare) == r.context["def_tokens"]
    assert sizes["first"] == n1 and sizes["second"] < n1
    said = (f"the tools are not sent again (−{sizes['tools']}), the call and its result are added (+{sizes['added']}): "
            f"{sizes['second']} input tokens, {n1 - sizes['second']} fewer than request 1")
    assert said in main, main
    assert sizes["second"] == n1 - sizes["tools"] + sizes["added"]
    # the one figure for what the tools cost, wherever the page says it
    assert f"This one costs {sizes['tools']} of the" in re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


# ---- Caching: the token ratio is the headline, the time a footnote measured alike -----------------------------

@pytest.mark.slow
def test_caching_headlines_the_token_ratio_and_footnotes_the_time(client):
    r = client.get(stage_url("caching"))
    ctx = r.context
    r1, r2 = ctx["first"], ctx["second"]
    assert ctx["headline"].endswith(f"{r1['prefill_tokens'] / r2['prefill_tokens']:.1f}× fewer than request 1.")
    assert " ms" not in ctx["headline"]
    note = ctx["timing_note"]
    if r1["prefill_ms"] > r2["prefill_ms"] > 0:
        assert note.startswith(f"Measured: {r1['prefill_ms'] / r2['prefill_ms']:.1f}× faster")
    else:  # a shared machine can measure them the other way round: the note then gives both
        assert f"{r1['prefill_ms']:.1f} ms for request 1, {r2['prefill_ms']:.1f} ms for request 2" in note
    assert f"median of {caching.PREFILL_RUNS} warm runs" in note
    html_text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.content.decode()))
    assert f"{r1['prefill_ms']:.1f} ms" in html_text and f"{r2['prefill_ms']:.1f} ms" in html_text  # beside each request
    html = r.content.decode()
    assert html.index('id="headline"') < html.index('id="timing-note"') < html.index('class="hint">The token counts')
    # a second visit of the same link shows the same numbers
    assert client.get(stage_url("caching")).context["timing_note"] == note


def test_both_prefills_are_measured_the_same_way(monkeypatch):
    """Each request: one warm-up run, then PREFILL_RUNS timed runs taken in turns, each from its own copy of the
    cached prefix; the median is kept. A fake model and clock make it checkable without timing anything."""
    calls: list[tuple[int, int]] = []
    clock = {"t": 0.0}

    class KV:
        def __init__(self, length=0):
            self.length = length

        def copy(self, length=None):
            return KV(self.length if length is None else length)

    class Model:
        def new_cache(self):
            return KV()

        def forward(self, ids, cache=None):
            ids = list(ids)
            calls.append((cache.length, len(ids)))
            run = sum(1 for c in calls if c == calls[-1])
            clock["t"] += len(ids) * (1 + run % 3) / 1000  # 1, 2 or 3 ms a token: the median is 2 ms a token
            cache.length += len(ids)

    class Eng:
        model = Model()

    monkeypatch.setattr(caching_pair.time, "perf_counter", lambda: clock["t"])
    ms = caching_pair.measure_prefills(Eng(), list(range(100)), KV(100), [100, 10], runs=3)
    assert calls[:2] == [(0, 100), (90, 10)]  # the warm-up of each
    assert calls[2:] == [(0, 100), (90, 10)] * 3  # then in turns, each from the cached prefix the request reads
    # timed runs 2, 3 and 4 of each took 3, 1 and 2 ms a token: the median, 2 ms a token, for both alike
    assert ms == [pytest.approx(200.0), pytest.approx(20.0)]
