"""Bytes of a character are shown, never U+FFFD. A byte-level tokenizer cuts a character into tokens (the
bundled one gives each byte of 请 its own token): every stage shows such a token's bytes as ‹E4› and the
character once after the run of tokens that makes it, on the server (words.token_text, token_runs) and in
the browser (static/js/lib/tokens.js tokenText, tokenRuns), which must agree."""
from __future__ import annotations

import html as htmllib
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.registry import STAGES
from explainer.stages.runs import engine, run_of, stamp
from explainer.stages.words import token_label, token_row, token_runs, token_text, visible_token
from tests.conftest import LOCAL_MODEL
from tests.urls import stage_data, stage_url

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = {"chinese": "请用中文解释一下数据库索引", "arabic": "اشرح لي فهارس قواعد البيانات", "emoji": "🙂👍🏽 ok"}
SLUGS = [s.slug for s in STAGES if s.built]


def scenario(prompt: str, **kw) -> Scenario:
    return Scenario(messages=[{"role": "user", "content": prompt}], max_tokens=kw.pop("max_tokens", 16), **kw)


def assert_no_replacement(client, slug: str, sc: Scenario) -> tuple[str, dict]:
    r = client.get(stage_url(slug, sc))
    assert r.status_code == 200, (slug, r.content[:300])
    html = r.content.decode()
    at = html.find("\ufffd")
    assert at < 0, (slug, html[max(0, at - 200):at + 50])
    data = stage_data(client, slug, sc)
    assert "\ufffd" not in json.dumps(data, ensure_ascii=False), slug
    return html, data


# ---- every stage, three scripts ---------------------------------------------------------------------

@pytest.mark.parametrize("slug", SLUGS)
@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
@pytest.mark.slow
def test_no_stage_shows_u_fffd_for_a_prompt_whose_characters_the_tokenizer_cuts(client, slug, prompt):
    assert_no_replacement(client, slug, scenario(prompt))


@pytest.mark.parametrize("slug", ["overview", "compose", "gateway", "tokenize", "transformer", "sampling"])
def test_nor_for_a_local_model_s_tokenizer(client, slug):
    """The tiny Llama-family fixture falls back to byte tokens (<0xE4>) for characters it does not know. Its
    random weights also draw stray bytes: the reply's own text then holds U+FFFD, as the API sends it
    (streaming, conversation, caching, tools and recap show that text), while every token row shows bytes."""
    sc = local_scenario()
    assert "\ufffd" in run_of(sc).text  # the premise: the reply draws a stray byte
    _, data = assert_no_replacement(client, slug, sc)
    if slug == "sampling":
        assert any(s["part"] for s in data["sampling-config"]["steps"])  # shown as its bytes


def test_the_recap_s_token_row_shows_a_local_model_s_byte_tokens(client):
    html = client.get(stage_url("recap", local_scenario())).content.decode()
    row = re.search(r'aria-label="The first prompt tokens">(.*?)</div>', html, re.S).group(1)
    assert "\ufffd" not in row and ">=请</span>" in row and "‹E8›" in row


def local_scenario() -> Scenario:
    return stamp(scenario(PROMPTS["chinese"] + " " + PROMPTS["emoji"], model=LOCAL_MODEL, max_tokens=6))


# ---- what the pages show instead ----------------------------------------------------------------------

def test_the_transformer_shows_each_byte_and_each_character_once_after_its_bytes(client):
    sc = scenario(PROMPTS["chinese"])
    html, data = assert_no_replacement(client, "transformer", sc)
    texts = [t for _, t in data["tf-tokens"]]
    assert texts[1:4] == ["‹E8›", "‹AF›", "‹B7›"]  # 请, one token a byte (the bundled tokenizer knows no Chinese)
    parts = data["tf-parts"]
    assert set(parts) == {str(i) for i, t in enumerate(texts) if t.startswith("‹")}
    assert "".join(parts[k] for k in sorted(parts, key=int)) == PROMPTS["chinese"]  # each character once, in order
    assert parts["3"] == "请" and parts["1"] == parts["2"] == ""  # after the last byte of its run
    assert "‹E8›" in html and "\ufffd" not in json.dumps(data["tf-data"]["labels"], ensure_ascii=False)


def test_sampling_and_recap_show_the_prompt_s_characters_after_their_bytes(client):
    sc = scenario(PROMPTS["emoji"])
    _, data = assert_no_replacement(client, "sampling", sc)
    tail = data["sampling-config"]["prompt_tail"]
    assert [t["joins"] for t in tail if t["joins"]] == ["🙂", "👍", "🏽"]
    assert [t["text"] for t in tail[1:5]] == ["‹F0›", "‹9F›", "‹99›", "‹82›"] and all(t["part"] for t in tail[1:5])
    labels = data["sampling-config"]["labels"]
    assert labels[engine().tokenizer.byte_id(0xE4)] == "‹E4›"  # the vocabulary, once per page
    html, _ = assert_no_replacement(client, "recap", sc)
    assert html.count('class="tok-joined"') == 3 and ">=🙂</span>" in html and "‹F0›" in html


def test_a_reply_that_cuts_a_character_shows_its_bytes_in_every_token_row(client):
    """Seed 6 of this prompt makes the bundled model write ʕ (CA 95) in two tokens and a stray byte: the
    token rows show bytes and ʕ once; only the reply's own text, which the API sends, has U+FFFD there."""
    sc = scenario(PROMPTS["chinese"], max_tokens=24, temperature=1.0, seed=6)
    run, tok = run_of(sc), engine(sc).tokenizer
    row = token_row(tok, [s["token"] for s in run.steps])
    assert "ʕ" in [t["joins"] for t in row] and "\ufffd" in run.text  # the premise: a cut character, and a stray byte
    cfg = stage_data(client, "sampling", sc)["sampling-config"]
    assert [s["label"] for s in cfg["steps"]] == [t["text"] for t in row] and "ʕ" in [s["joins"] for s in cfg["steps"]]
    assert not any("\ufffd" in s["label"] for s in cfg["steps"])
    recap = client.get(stage_url("recap", sc)).content.decode()
    assert ">=ʕ</span>" in recap
    # the stream's explainer.token frames name each token the same way (the text deltas carry the API's text)
    streaming = client.get(stage_url("streaming", sc)).content.decode()
    frames = [json.loads(htmllib.unescape(d)) for d in re.findall(r'<li class="ev explainer">.*?<span class="data">(.*?)</span>', streaming, re.S)]
    tokens = [f for f in frames if "token" in f]
    assert [f["text"] for f in tokens] == [t["text"] for t in row]
    assert not any("\ufffd" in f["candidates"] for f in tokens)
    assert "\ufffd" in "".join(f["piece"] for f in tokens)  # the piece is the text delta the API sends


# ---- the functions both sides share ---------------------------------------------------------------------

def test_token_text_writes_each_byte_that_is_not_a_whole_character():
    assert token_text("中".encode()) == "中" and token_text(b"") == ""
    assert token_text(b"\xe4") == "‹E4›" and token_text(b"\xe4\xb8") == "‹E4›‹B8›"
    assert token_text(b"a\xe4b") == "a‹E4›b"
    assert token_text(b"\xc0\x80") == "‹C0›‹80›"  # an overlong form is not a character
    assert token_text(b"\xed\xa0\x80") == "‹ED›‹A0›‹80›"  # nor is a surrogate
    assert token_text(b"\xf4\x90\x80\x80") == "‹F4›‹90›‹80›‹80›"  # nor anything past U+10FFFF
    assert token_text("🙂".encode()[:3] + b"!") == "‹F0›‹9F›‹99›!"
    assert visible_token(token_text(b" \xe4\n")) == "·‹E4›↵"
    assert token_label(engine().tokenizer, engine().tokenizer.byte_id(0xF0)) == "‹F0›"


def test_token_runs_put_a_cut_character_after_the_last_token_that_holds_it():
    assert token_runs([b"\xe4", b"\xb8", b"\xad"]) == [(True, None), (True, None), (True, "中")]
    assert token_runs([b"a\xe4", b"\xb8\xadb"]) == [(True, None), (True, "中")]
    assert token_runs([b"ab", "中".encode()]) == [(False, None), (False, None)]  # whole in one token: nothing to join
    # a token that ends one cut character and starts another joins both runs into one
    assert token_runs([b"\xe4", b"\xb8\xad\xe6", b"\x96\x87", b"!"]) == [(True, None), (True, None), (True, "中文"), (False, None)]
    # a stray byte never completes: it is shown, and no character is made up for it
    assert token_runs([b"\xe4", b"!", b"\xb8"]) == [(True, None), (False, None), (True, None)]
    # an invisible character made of cut bytes is named, like any token's (U+00A0 is C2 A0)
    assert token_runs([b"\xc2", b"\xa0"]) == [(True, None), (True, "⟨U+00A0⟩")]


def _random_pieces(rng: random.Random) -> list[bytes]:
    """A text of mixed scripts cut at random byte offsets, sometimes with a stray byte."""
    alphabet = "aé中文🙂👍🏽ش ب\n\u200b"
    data = bytearray("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))).encode())
    if data and rng.random() < 0.3:
        data[rng.randrange(len(data))] = rng.randrange(256)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6)))) if len(data) > 1 else []
    return [bytes(data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)])]


@pytest.mark.skipif(not shutil.which("node"), reason="needs Node.js (scripts/test.sh installs it)")
def test_the_browser_shows_bytes_and_runs_exactly_as_the_server_does(tmp_path):
    rng = random.Random(21)
    cases = [_random_pieces(rng) for _ in range(300)]
    tok = engine().tokenizer
    for prompt in PROMPTS.values():  # the bundled tokenizer's own cuts
        cases.append([tok.token_bytes(t) for t in run_of(scenario(prompt, max_tokens=1)).prompt_ids])
    payload = [[list(p) for p in pieces] for pieces in cases]
    script = tmp_path / "runs.mjs"
    script.write_text(
        f"import {{ tokenRuns, tokenText, visibleToken }} from {json.dumps((ROOT / 'static/js/lib/tokens.js').as_uri())};\n"
        f"const cases = {json.dumps(payload)};\n"
        "console.log(JSON.stringify(cases.map((c) => ({texts: c.map((p) => visibleToken(tokenText(p))),"
        " runs: tokenRuns(c).map((r) => [r.part, r.joins])}))));\n")
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    for pieces, got in zip(cases, out):
        assert got["texts"] == [visible_token(token_text(p)) for p in pieces], pieces
        assert got["runs"] == [list(r) for r in token_runs(pieces)], pieces
