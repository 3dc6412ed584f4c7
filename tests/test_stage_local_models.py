"""Every stage page but the transformer's, for a local model (the tiny Llama-family fixture): each
page renders, its /data JSON is what it embeds, the tokenize page's ids and tables are the model's own
tokenizer's, and the sampling page's payload stays the same size whatever the vocabulary's."""
import json
import re

import numpy as np
import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.llm.hf.loader import load_folder
from explainer.llm.sampling import SamplingParams, distribution
from explainer.stages.pages import sampling as sampling_page
from explainer.stages.pages import tokenize as tokenize_page
from explainer.stages.registry import STAGES
from explainer.stages.runs import engine, run_of, stamp
from explainer.stages.words import token_label
from tests.conftest import FIXTURE_MODELS, LOCAL_MODEL
from tests.urls import stage_url

SCENARIO = Scenario(model=LOCAL_MODEL, system="You answer in one short paragraph.",
                    messages=[{"role": "user", "content": "What is a database index?"},
                              {"role": "assistant", "content": "A structure that makes lookups faster."},
                              {"role": "user", "content": "How does PostgreSQL choose between\nan index scan and 日本語 👍🏽?"}],
                    max_tokens=6)
SLUGS = [s.slug for s in STAGES if s.built and s.slug != "transformer"]
_SCRIPT = re.compile(r'<script id="([\w-]+)" type="application/json">(.*?)</script>', re.S)


def local(scenario: Scenario = SCENARIO) -> Scenario:
    """The scenario as a link carries it: with the local model's fingerprint."""
    return stamp(scenario)


def fetch(client, slug: str, scenario: Scenario = SCENARIO, **opts) -> tuple[str, dict]:
    """(the page's HTML, its /data JSON); both must answer 200."""
    url = stage_url(slug, local(scenario), **opts)
    r = client.get(url)
    assert r.status_code == 200, (slug, r.content[:300])
    path, _, query = url.partition("?")
    d = client.get(path + "data?" + query)
    assert d.status_code == 200, (slug, d.content[:300])
    return r.content.decode(), d.json()["data"]


@pytest.mark.parametrize("slug", SLUGS)
@pytest.mark.slow
def test_every_stage_renders_for_a_local_model_and_its_data_is_what_it_embeds(client, slug):
    html, data = fetch(client, slug)
    embedded = {k: json.loads(v) for k, v in _SCRIPT.findall(html)}
    assert data == {k: embedded[k] for k in data}
    # the model is named, with what this app does differently for it, and nothing of the bundled model's is claimed
    assert "data-model-note" in html and f">{LOCAL_MODEL}</a>" in html
    for line in engine(SCENARIO).loaded.limits:
        assert line.replace("'", "&#x27;") in html
    for bundled_only in ("&lt;|end|&gt;", "the bundled model does", "bundled model's 512", "price unknown", "</code>, answered by tiny-explainer"):
        assert bundled_only not in html, (slug, bundled_only)


def test_a_local_model_has_no_price_and_the_pages_say_so(client):
    for slug in ("conversation", "caching"):
        html, _ = fetch(client, slug)
        assert "no per-token price" in html, slug


# ---- tokenize ------------------------------------------------------------------------------------

def replay(data: dict, n: int) -> list[int]:
    """The page's data re-tokenised at n merges, the way tokenize.js does it."""
    out = []
    for _role, open_id, first, end, close in data["parts"]:
        out += [open_id] if open_id is not None else []
        for chunk in data["chunks"][first:end]:
            out += chunk_tokens(data, chunk, n)
        out += [close] if close is not None else []
    return out


def chunk_tokens(data: dict, chunk: list, n: int) -> list[int]:
    text, ranks, extra = (*chunk, {})[:3]
    if "ids" in extra:
        return extra["ids"]
    if "whole" in extra and n >= extra["whole"][0]:
        return [extra["whole"][1]]
    k = next((i for i, r in enumerate(ranks) if r >= n), len(ranks))
    if "states" in extra:
        return extra["states"][k]
    ids = extra.get("start") or [data["byte_ids"][b] for b in text.encode("utf-8")]
    for r in ranks[:k]:
        a, b = data["pairs"][str(r)]
        merged, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                merged.append(data["made"][str(r)])
                i += 2
            else:
                merged.append(ids[i])
                i += 1
        ids = merged
    return ids


def test_tokenize_shows_the_local_tokenizer_s_own_ids_and_tables(client):
    run = run_of(local())
    tok = engine(SCENARIO).tokenizer
    html, page = fetch(client, "tokenize")
    data = page["tokenize-data"]
    ids = re.search(r'<pre class="tk-ids" id="ids"[^>]*>\[(.*?)\]</pre>', html).group(1)
    assert [int(x) for x in ids.split(", ")] == run.prompt_ids == tok.encode_chat(
        SCENARIO.system, [(m["role"], m["content"]) for m in SCENARIO.messages])
    assert f"data-model-tokens>{len(run.prompt_ids)}<" in html
    # the tables are the tokenizer's, and only what the shown chunks need
    assert data["byte_ids"] == [tok.byte_id(b) for b in range(256)] and data["byte_ids"] != list(range(256))
    assert data["specials"] == {str(t): tok.token_str(t) for t in sorted(set(run.prompt_ids)) if tok.is_special(t)}
    for r, pair in data["pairs"].items():
        assert tuple(pair) == tok.merges[int(r)] and data["made"][r] == tok.merge_id(int(r))
    assert len(data["pairs"]) < tok.vocab_size / 2
    for t, b in data["bytes_of"].items():
        assert bytes(b) == tok.token_bytes(int(t))
    # the chat template's own text is marked as the template's, the conversation's is not
    template_text = "".join(c[0] for c in data["chunks"] if len(c) > 2 and ("template" in c[2] or "ids" in c[2]))
    assert "<|im_start|>" in template_text and "user\n" in template_text
    assert "PostgreSQL" not in template_text
    assert "tiny-llama’s template is <code>&lt;|im_start|&gt;system↵…&lt;|im_end|&gt;↵" in html


@pytest.mark.parametrize("n", [0, 1, 17, 100, None])
def test_the_tokenize_replay_reproduces_the_tokenizer_at_every_vocabulary_size(client, n):
    tok = engine(SCENARIO).tokenizer
    data = fetch(client, "tokenize")[1]["tokenize-data"]
    n = tok.model_merges if n is None else n
    if n == tok.model_merges:
        assert replay(data, n) == run_of(local()).prompt_ids
    for chunk in data["chunks"]:
        if len(chunk) == 2:  # the conversation's text: BPE with the first n merges
            assert chunk_tokens(data, chunk, n) == tok.encode(chunk[0], max_merges=n), (chunk[0], n)
    assert dict(data["curve"]).get(n, len(replay(data, n))) == len(replay(data, n))


@pytest.mark.parametrize("folder", ["tiny-llama", "tiny-gpt2", "tiny-qwen2"])
@pytest.mark.parametrize("system, messages", [
    ("Be brief.", [("user", "Hello there"), ("assistant", "Hi!"), ("user", "ok 日本語 👍🏽 'll 123456 _x_\r\n\r\n")]),
    (None, [("user", "Hi")]),  # SmolLM2's template writes its own system turn
    (None, [("user", "Hi"), ("assistant", "Hello, I")]),  # a prefill
])
def test_the_context_is_the_chat_template_s_ids_for_every_fixture(folder, system, messages):
    tok = load_folder(FIXTURE_MODELS / folder).tokenizer
    ctx = tokenize_page.build_context(tok, system, messages)
    assert ctx.tokens_at(tok.model_merges) == tok.encode_chat(system, messages)
    texts = [t for _, t in messages] + ([system] if system else [])
    assert sorted(ctx.text) == sorted("".join(texts))  # the conversation's text, none of the template's


def test_tokenize_view_options_follow_the_local_model(client):
    tok = engine(SCENARIO).tokenizer
    data = fetch(client, "tokenize", merges=10)[1]["tokenize-data"]
    assert data["sel"]["merges"] == 10 and data["model_merges"] == len(tok.merges)
    assert client.get(stage_url("tokenize", local(), merges=len(tok.merges) + 1)).status_code == 400


# ---- sampling ------------------------------------------------------------------------------------

def test_sampling_sends_the_whole_small_vocabulary(client):
    data = fetch(client, "sampling")[1]
    assert len(data["sampling-step"]["logits"]) == engine(SCENARIO).model.config.vocab_size
    assert not data["sampling-config"]["compact"]


def expand(c: dict) -> np.ndarray:
    """lib/sampling.js expandCompact's scores, in rank order."""
    out = list(c["logits"][:c["top"]])
    for count, score in c["tail"]:
        out += [score] * count
    if len(c["ids"]) > c["top"]:
        out.insert(c["token_rank"], c["logits"][c["top"]])
    return np.asarray(out)


def test_a_large_vocabulary_s_step_is_compact_and_keeps_the_engine_s_draw(client, monkeypatch):
    monkeypatch.setattr(sampling_page, "FULL_VOCAB_MAX", 256)
    monkeypatch.setattr(sampling_page, "TOP_EXACT", 64)
    monkeypatch.setattr(sampling_page, "TAIL_GROUPS", 50)
    eng, run = engine(SCENARIO), run_of(local())
    for step in range(2):
        page = fetch(client, "sampling", step=step)[1]
        assert page["sampling-config"]["compact"] and page["sampling-config"]["labels"] == []
        c = page["sampling-step"]["compact"]
        st = run.steps[step]
        assert "logits" not in page["sampling-step"]
        assert len(c["tail"]) <= 50 and c["top"] == 64 and len(c["ids"]) <= 65
        assert c["labels"] == [token_label(eng.tokenizer, t) for t in c["ids"]]  # a cut character's byte is ‹E4›, never U+FFFD
        # the exact part is the engine's order; the engine's own token is among the ids, at its rank
        banned = eng.tokenizer.banned_ids + tuple(st.get("word_ban", ()))
        dist = distribution(st["logits"], SamplingParams(SCENARIO.temperature), banned=banned)
        assert c["ids"][:64] == dist.order[:64].tolist()
        assert st["token"] in c["ids"] and dist.order[c["token_rank"]] == st["token"]
        # every drawable token is counted once, and each run carries its tokens' probability at the request's settings
        scores = expand(c)
        assert len(scores) == len(dist.order) - len(set(banned))
        p = np.exp((scores - scores.max()) / SCENARIO.temperature)
        p /= p.sum()
        assert abs(p[:64].sum() - dist.final[dist.order[:64]].sum()) < 1e-3


@pytest.mark.parametrize("vocab", [49_152, 151_936])
def test_the_compact_step_does_not_grow_with_the_vocabulary(vocab):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, vocab)
    c = sampling_page.compact_step(logits, (0, 1, 2), int(np.argmin(logits[3:])) + 3, 0.7, lambda t: f"tok{t}")
    assert sum(n for n, _ in c["tail"]) + len(c["ids"]) == vocab - 3
    assert len(json.dumps(c)) < 40_000  # ~28 KB at 512 exact tokens and 256 runs, whatever the vocabulary
    assert c["token_rank"] == vocab - 4 and len(c["ids"]) == sampling_page.TOP_EXACT + 1
