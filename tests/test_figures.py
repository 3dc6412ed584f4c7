"""One counting function for every page: the figures module, its browser twin, and the pages that show them."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from explainer.lifecycle.figures import body_figures, prompt_text_figures, text_figures, tokenized_figures
from explainer.lifecycle.scenario import Scenario
from explainer.stages.runs import engine, run_of
from tests.urls import stage_url

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ["Hello, world!", "", "  two   spaces\tand a tab\n", "naïve café — déjà vu", "日本語のテキスト", "emoji 🙂👍🏽 here",
           "a\u00a0b", "x\r\ny"]


def test_the_definitions():
    f = text_figures("naïve café 🙂", 7)
    assert (f.characters, f.bytes, f.words, f.tokens) == (12, 17, 3, 7)
    assert f.chars_per_token == round(12 / 7, 2) and f.tokens_per_word == round(7 / 3, 2)
    assert text_figures("", 0).chars_per_token is None and text_figures("", 0).tokens_per_word is None
    body = {"model": "m", "messages": [{"role": "user", "content": "é"}]}
    compact = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    assert body_figures(body) == {"characters": len(compact), "bytes": len(compact.encode())}


def test_prompt_figures_leave_the_chat_template_out():
    tok = engine().tokenizer
    run = run_of(Scenario())
    f = prompt_text_figures(tok, run.prompt_ids)
    specials = sum(1 for t in run.prompt_ids if tok.is_special(t))
    assert specials >= 2 and f.tokens == len(run.prompt_ids) - specials
    assert f.characters == len(Scenario().messages[-1]["content"])


def test_a_larger_vocabulary_cuts_fewer_tokens():
    tok = engine().tokenizer
    text = "A tokenizer cuts text into pieces it has seen often, so a common word is usually one token."
    small, large = tokenized_figures(tok, text), tokenized_figures(tok, text, max_merges=len(tok.merges))
    assert large.tokens < small.tokens and large.chars_per_token > small.chars_per_token


@pytest.mark.skipif(not shutil.which("node"), reason="needs Node.js (scripts/test.sh installs it)")
def test_the_browser_twin_counts_the_same(tmp_path):
    script = tmp_path / "run.mjs"
    script.write_text(
        f"import {{ textFigures, bodyFigures }} from {json.dumps((ROOT / 'static/js/lib/figures.js').as_uri())};\n"
        f"const samples = {json.dumps(SAMPLES)};\n"
        "console.log(JSON.stringify({text: samples.map((s, i) => textFigures(s, i + 1)),"
        " body: bodyFigures({model: 'm', messages: [{role: 'user', content: samples[3]}]})}));\n")
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    assert out["text"] == [text_figures(s, i + 1).as_dict() for i, s in enumerate(SAMPLES)]
    assert out["body"] == body_figures({"model": "m", "messages": [{"role": "user", "content": SAMPLES[3]}]})


def _number(html: str, attr: str) -> str:
    m = re.search(rf'data-figure="{attr}"[^>]*>([^<]*)<', html)
    assert m, f"no data-figure={attr} on the page"
    return m.group(1).replace(",", "").strip()


@pytest.mark.django_db
def test_recap_shows_the_figures_of_the_shared_function(client):
    s = Scenario.from_changes({"system": "Be brief.", "messages": [{"role": "user", "content": "Tell me about naïve Bayes, in “quotes” 🙂."}]})
    html = client.get(stage_url("recap", s)).content.decode()
    tok = engine().tokenizer
    run = run_of(s)
    assert _number(html, "body-bytes") == str(body_figures(s.request_body())["bytes"])
    assert _number(html, "chars-per-token") == str(prompt_text_figures(tok, run.prompt_ids).chars_per_token)


@pytest.mark.django_db
def test_compose_and_tokenize_show_the_figures_of_the_shared_function(client):
    s = Scenario.from_changes({"messages": [{"role": "user", "content": "Héllo “there” 🙂, how are   you?"}]})
    tok = engine().tokenizer
    run = run_of(s)
    html = client.get(stage_url("compose", s)).content.decode()
    body = body_figures(s.request_body())
    assert re.search(r'id="body-chars">([\d,]+)<', html).group(1).replace(",", "") == str(body["characters"])
    assert re.search(r'id="body-bytes">([\d,]+)<', html).group(1).replace(",", "") == str(body["bytes"])
    html = client.get(stage_url("tokenize", s)).content.decode()
    block = html[html.index('data-sample="context"'):] if 'data-sample="context"' in html else html
    shown = {k: v.replace(",", "") for k, v in re.findall(r'data-stat="(\w+)">([^<]*)<', block)[:6]}
    want = prompt_text_figures(tok, run.prompt_ids).as_dict()
    for key in ("characters", "bytes", "words", "tokens", "chars_per_token", "tokens_per_word"):
        assert shown[key] == str(want[key]), (key, shown, want)


def test_one_list_of_models_and_prices():
    """prices.json is the one list: the API lists every known model, a page offers only those with a price."""
    from explainer.api.views import KNOWN_MODELS
    from explainer.lifecycle.pricing import known_models, price_of, priced_models
    from explainer.stages.views import MODEL_NAMES

    assert KNOWN_MODELS == known_models() and set(MODEL_NAMES) == set(priced_models()) <= set(known_models())
    assert all(price_of(m) is not None for m in MODEL_NAMES)
    assert Scenario().model in MODEL_NAMES


def test_stop_reasons_are_said_the_same_in_python_and_in_the_browser():
    from explainer.stages.words import STOP_WORDS

    js = (ROOT / "static/js/lib/text.js").read_text()
    block = js[js.index("const STOP_WORDS = {"):js.index("};", js.index("const STOP_WORDS = {"))]
    in_js = dict(re.findall(r'(\w+): "([^"]+)"', block))
    assert in_js == STOP_WORDS


@pytest.mark.skipif(not shutil.which("node"), reason="needs Node.js (scripts/test.sh installs it)")
def test_a_token_is_shown_the_same_in_python_and_in_the_browser(tmp_path):
    from explainer.stages.words import visible_token

    samples = ["", " the", "a\nb\tc\rd", "\u202eevil", "nbsp\u00a0here", "zw\u200bj", "\x00", "é🙂", "  "]
    script = tmp_path / "tok.mjs"
    script.write_text(f"import {{ visibleToken }} from {json.dumps((ROOT / 'static/js/lib/tokens.js').as_uri())};\n"
                      f"console.log(JSON.stringify({json.dumps(samples)}.map(visibleToken)));\n")
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    assert out == [visible_token(s) for s in samples]
    assert visible_token("\u202eevil") == "⟨U+202E⟩evil" and visible_token("  ") == "··"
