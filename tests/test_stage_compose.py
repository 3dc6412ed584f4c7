"""The compose stage: the body, the validator's verdict, the snippets, through Django's test client."""
import ast
import html
import json
import random
import re
import shutil
import string
import subprocess

import pytest

from explainer.lifecycle.engine import run_request
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.figures import body_figures
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.lifecycle.snippets import curl, json_text, python_sdk, typescript_sdk
from explainer.web.runner import get_engine
from tests.urls import data_of, stage_data, stage_url

HOSTILE = Scenario(
    system='</textarea><script>alert("sys")</script>',
    messages=[{"role": "user", "content": '</textarea><img src=x onerror=alert(1)>\u202eevil\u202c' + "😀" * 2000},
              {"role": "assistant", "content": "'; DROP TABLE x; -- </pre>"}],
    stop_sequences=["</pre><script>", "\n\n"],
    max_tokens=8,
)


def url(scenario=None, **opts):
    return stage_url("compose", scenario, **opts)


def pre(page: str, id_: str) -> str:
    m = re.search(rf'<pre[^>]*id="{id_}"[^>]*>(.*?)</pre>', page, re.S)
    assert m, id_
    return html.unescape(m.group(1))


def test_it_renders_the_default_scenario_with_its_exact_body(client):
    r = client.get(url())
    assert r.status_code == 200
    page = r.content.decode()
    s = Scenario()
    assert json.loads(pre(page, "body-json")) == s.request_body()
    assert "The API would accept this request" in page
    # the counts equal what the engine computes for this body, run afresh
    run = run_request(get_engine(), s.request_body(), seed=s.seed)
    assert f'<strong data-field="input_tokens">{len(run.prompt_ids)}</strong>' in page
    assert f'<strong data-field="output_tokens">{run.done["usage"]["output_tokens"]}</strong>' in page
    n_bytes = len(json.dumps(s.request_body(), separators=(",", ":"), ensure_ascii=False).encode())
    assert f'<span id="body-bytes">{n_bytes}</span>' in page
    for header in ("x-api-key", "anthropic-version", "2023-06-01", "content-type", "application/json", "Authorization: Bearer"):
        assert header in page


def test_the_page_opens_on_the_body_with_its_size_from_the_figures_module(client):
    s = Scenario(messages=[{"role": "user", "content": "Caf\u00e9 \U0001F600, what is an index?"}])
    page = client.get(url(s)).content.decode()
    visual = page.split('id="main-visual"', 1)[1].split("</section>", 1)[0]
    assert json.loads(pre(visual, "body-json")) == s.request_body()
    size = body_figures(s.request_body())
    assert size["bytes"] > size["characters"]  # é is two bytes, the emoji four
    assert f'<span id="body-chars">{size["characters"]}</span>' in visual
    assert f'<span id="body-bytes">{size["bytes"]}</span>' in visual
    # the verdict keeps its id (the tutorial panel keeps it clear); the headers wait in the "In the API" fold
    assert 'id="verdict"' in page
    fold = page.split('id="in-the-api"', 1)[1].split("</details>", 1)[0]
    assert "anthropic-version" in fold and "2023-06-01" in fold


def test_the_form_starts_from_the_scenario(client):
    s = Scenario(system="Be brief.", messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                               {"role": "user", "content": "What is a view?"}],
                 temperature=0.2, top_k=5, stop_sequences=["\n\n", "END"], seed=9, stream=False)
    r = client.get(url(s))
    page = r.content.decode()
    assert page.count('class="turn-text"') == 3 + 1  # three turns and the template
    assert data_of(r)["compose-data"]["fields"]["messages"] == s.messages
    assert "\\n\\n\nEND</textarea>" in page  # one stop sequence per line, line breaks written as \n
    assert 'id="f-seed" name="seed" type="number" min="0" step="1" value="9"' in page
    assert 'id="f-stream" name="stream" type="checkbox">' in page


def test_an_invalid_request_shows_the_api_error_body(client):
    s = Scenario(messages=[{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Hi"}])
    page = client.get(url(s)).content.decode()
    expected = None
    try:
        parse_request(s.request_body())
    except APIError as exc:
        expected = exc.body()
    assert expected and expected["error"]["type"] == "invalid_request_error"
    assert json.loads(pre(page, "verdict-error")) == expected
    assert 'The API would answer <span data-field="status">400</span>' in page


def test_a_prompt_longer_than_the_window_is_refused(client):
    s = Scenario(messages=[{"role": "user", "content": "index " * 900}])
    page = client.get(url(s)).content.decode()
    body = json.loads(pre(page, "verdict-error"))
    assert body["error"]["type"] == "invalid_request_error" and "prompt is too long" in body["error"]["message"]


def test_hostile_text_is_escaped(client):
    r = client.get(url(HOSTILE))
    assert r.status_code == 200
    page = r.content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page and "</textarea><script>" not in page
    assert "</pre><script>" not in page
    assert json.loads(pre(page, "body-json")) == HOSTILE.request_body()


def test_bad_view_options_are_400(client):
    assert client.get(url(snippet="ruby")).status_code == 400
    page = client.get(url(snippet="python")).content.decode()
    assert 'id="tab-python" aria-controls="panel-python" aria-selected="true"' in page
    assert 'id="panel-curl" aria-labelledby="tab-curl" class="cp-panel" hidden' in page


def test_the_mistakes_are_the_validators_answers(client):
    s = Scenario(system="Be brief.", seed=4)
    page = client.get(url(s)).content.decode()
    answers = [json.loads(html.unescape(m)) for m in re.findall(r'<h3>Answer</h3><pre class="json">(.*?)</pre>', page, re.S)]
    messages = [a["error"]["message"] for a in answers]
    assert "messages.0.role: the first message must use the 'user' role" in messages
    assert "messages.0.role: Input should be 'user' or 'assistant'" in messages
    assert "max_tokens: Field required" in messages
    assert "seed: Extra inputs are not permitted" in messages
    assert all(a["type"] == "error" for a in answers)


def test_field_errors_for_the_browser_come_from_the_validator(client):
    data = stage_data(client, "compose")["compose-data"]
    errs = data["field_errors"]
    assert errs["temperature"]["error"]["message"].startswith("temperature:")
    assert errs["max_tokens_min"]["error"]["message"] == "max_tokens: Input should be greater than or equal to 1"
    assert all(e["error"]["type"] == "invalid_request_error" for e in errs.values())
    assert data["fields"] == {**Scenario().__dict__}


def test_applying_round_trips_through_the_encoder(client):
    fields = {**Scenario().__dict__, "system": "Answer in one line.", "messages": [{"role": "user", "content": "What is WAL?"}],
              "max_tokens": 12, "top_p": 0.9, "stop_sequences": ["\n"], "seed": 3}
    r = client.post("/scenario/encode", data=json.dumps(fields), content_type="application/json")
    assert r.status_code == 200
    page = client.get("/learn/compose/?s=" + r.json()["s"]).content.decode()
    assert json.loads(pre(page, "body-json")) == Scenario(**fields).request_body()
    rng = random.Random(1)
    noise = "".join(rng.choice(string.ascii_letters) for _ in range(20_000))  # does not compress
    r = client.post("/scenario/encode", data=json.dumps({**fields, "messages": [{"role": "user", "content": noise}]}),
                    content_type="application/json")
    assert r.status_code == 400 and "too large for a link" in r.json()["error"]


# ---- the snippets send exactly the body ---------------------------------------------------------

BODIES = [
    Scenario().request_body(),
    HOSTILE.request_body(),
    Scenario(system="S", stream=False, top_p=0.5, top_k=3, temperature=1.0,
             messages=[{"role": "user", "content": [{"type": "text", "text": "blocks \U000e0041 \u2028"}]}]).request_body(),
]


def _curl_body(code: str):
    data = code.split(" -d '", 1)[1].rsplit("'", 1)[0].replace("'\\''", "'")
    return json.loads(data)


@pytest.mark.parametrize("body", BODIES)
def test_curl_sends_the_body(body):
    code = curl(body, "http://127.0.0.1:8000")
    assert code.startswith("curl http://127.0.0.1:8000/v1/messages")
    assert '-H "anthropic-version: 2023-06-01"' in code and '-H "x-api-key: $ANTHROPIC_API_KEY"' in code
    assert _curl_body(code) == body
    assert json.loads(json_text(body)) == body
    assert "\u202e" not in code and "\u2028" not in code  # invisible characters are written as escapes


@pytest.mark.parametrize("body", BODIES)
def test_the_python_snippet_compiles_and_sends_the_body(body):
    code = python_sdk(body)
    tree = ast.parse(code)
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") in ("create", "stream")
                and getattr(getattr(n.func, "value", None), "attr", "") == "messages")
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    extra = kwargs.pop("extra_body", {})
    assert "temperature" not in kwargs and "top_k" not in kwargs  # not parameters of anthropic 2.x
    sent = {**kwargs, **extra}
    if call.func.attr == "stream":
        sent["stream"] = True
    assert sent == body
    assert "Authorization: Bearer" in code


@pytest.mark.slow
def test_the_python_snippet_matches_the_sdk_signature():
    import inspect

    from anthropic.resources.messages.messages import Messages
    allowed = set(inspect.signature(Messages.stream).parameters) & set(inspect.signature(Messages.create).parameters)
    for body in BODIES:
        tree = ast.parse(python_sdk(body))
        call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") in ("create", "stream"))
        assert {k.arg for k in call.keywords} <= allowed


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
@pytest.mark.parametrize("body", BODIES)
def test_the_typescript_snippet_sends_the_body(body):
    code = typescript_sdk(body)
    obj = code.split("client.messages.", 1)[1].split("(", 1)[1].split("\n});", 1)[0] + "\n}"
    legacy = re.search(r"const legacy: Record<string, unknown> = (.*?);\n", code, re.S)
    js = (f"const legacy = {legacy.group(1)};\n" if legacy else "") + f"process.stdout.write(JSON.stringify({obj}))"
    assert ("temperature" in body) == bool(legacy) and "temperature:" not in obj  # not a typed parameter
    out = subprocess.run(["node", "-e", js], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    sent = json.loads(out.stdout)
    if "client.messages.stream(" in code:
        sent["stream"] = True
    assert sent == body
