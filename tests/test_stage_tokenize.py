"""The tokenize page through Django's test client: the numbers it shows are the tokenizer's and
the engine's, bad view options are 400 pages, hostile text stays text."""
import re
from urllib.parse import urlencode

import pytest

from explainer.lifecycle.figures import prompt_text_figures, text_figures, tokenized_figures
from explainer.lifecycle.scenario import Scenario
from explainer.llm.tokenizer import load_tokenizer
from explainer.stages.pages import tokenize as page_mod
from explainer.stages.runs import codec, engine, run_of
from tests.urls import data_of, stage_data
from tests.work import count_forward_passes

tok = load_tokenizer()
SCENARIO = Scenario(
    system="You answer in one short paragraph.",
    messages=[
        {"role": "user", "content": "What is a database index?"},
        {"role": "assistant", "content": "A structure that makes lookups faster."},
        {"role": "user", "content": "How does PostgreSQL choose between\nan index scan and a sequential scan?"},
    ],
    max_tokens=8,
)


def url(scenario=None, **opts):
    q = {}
    if scenario is not None:
        q["s"] = codec().encode(scenario)
    q.update(opts)
    return "/learn/tokenize/" + ("?" + urlencode(q) if q else "")


def get(client, scenario=None, **opts):
    return client.get(url(scenario, **opts), HTTP_HOST="127.0.0.1")


def replay(data: dict, n: int) -> list[int]:
    """The page's data re-tokenised at n merges, the way tokenize.js does it."""
    out = []
    for _role, open_id, first, end, close in data["parts"]:
        out.append(open_id)
        for text, ranks in data["chunks"][first:end]:
            ids = list(text.encode("utf-8"))
            for r in ranks:
                if r >= n:
                    break
                a, b = data["pairs"][str(r)]
                merged, i = [], 0
                while i < len(ids):
                    if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                        merged.append(data["first"] + r)
                        i += 2
                    else:
                        merged.append(ids[i])
                        i += 1
                ids = merged
            out.extend(ids)
        if close is not None:
            out.append(close)
    return out


def test_it_renders_the_default_scenario(client):
    r = get(client)
    assert r.status_code == 200
    html = r.content.decode()
    assert "What the model receives" in html and "Byte-pair merges" in html
    assert len(r.content) < 150_000


def test_the_token_count_is_usage_input_tokens(client):
    run = run_of(SCENARIO)
    html = get(client, SCENARIO).content.decode()
    shown = int(re.search(r"data-model-tokens>([\d,]+)<", html).group(1).replace(",", ""))
    usage = int(re.search(r"data-usage-tokens>(\d+)<", html).group(1))
    assert shown == usage == run.done["usage"]["input_tokens"] == len(run.prompt_ids)


def test_the_page_data_replays_to_the_models_ids_and_to_every_vocabulary_size(client):
    run = run_of(SCENARIO)
    req = run.request
    data = stage_data(client, "tokenize", SCENARIO)["tokenize-data"]
    assert replay(data, tok.model_merges) == run.prompt_ids
    turns = [(m.role, m.text) for m in req.messages]
    for n in (0, 1, 17, 256, 1000, tok.model_merges + 1, len(tok.merges)):
        expected = [256, *tok.encode(req.system, n), 259]
        for role, text in turns:
            expected += [tok.special_id(f"<|{role}|>"), *tok.encode(text, n), 259]
        expected.append(tok.special_id("<|assistant|>"))
        assert replay(data, n) == expected, n
    # the curve is the same count, computed on the server
    for n, count in data["curve"]:
        assert count == len(replay(data, n))
    assert [n for n, _ in data["curve"]][0] == 0 and data["curve"][-1][0] == len(tok.merges)
    assert tok.model_merges in [n for n, _ in data["curve"]]
    assert 12 <= len(data["curve"]) <= 16


@pytest.mark.parametrize("messages,system", [
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, I"}], ""),  # prefill
    ([{"role": "user", "content": ""}], "sys"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], ""),  # merged turns
    ([{"role": "user", "content": [{"type": "text", "text": "blocks "}, {"type": "text", "text": "joined"}]}], ""),
    ([{"role": "user", "content": "  spaces\t\ttabs\r\n\r\nand 日本語 👍🏽 'll 123456 _x_"}], "   "),
])
def test_the_template_matches_encode_chat(client, messages, system):
    s = Scenario(system=system, messages=messages, max_tokens=2)
    run = run_of(s)
    data = stage_data(client, "tokenize", s)["tokenize-data"]
    assert run.error is None
    assert replay(data, tok.model_merges) == run.prompt_ids


def test_stats_are_computed_from_the_text(client):
    r = get(client, SCENARIO, merges=512)
    html, data = r.content.decode(), data_of(r)["tokenize-data"]
    text = "".join(c[0] for c in data["chunks"])
    n_tokens = sum(1 for t in replay(data, 512) if not tok.is_special(t))
    st = text_figures(text, n_tokens)
    block = html.split('data-sample="context"')[1].split("</dl>")[0]
    assert f'data-stat="tokens">{st.tokens}<' in block
    assert f'data-stat="chars_per_token">{st.chars_per_token}<' in block
    assert f'data-stat="characters">{st.characters}<' in block and f'data-stat="bytes">{st.bytes}<' in block
    assert st.words == len(text.split())
    code = html.split('data-sample="code"')[1].split("</dl>")[0]
    assert f'data-stat="tokens">{len(tok.encode(page_mod.CODE_SAMPLE, 512))}<' in code
    assert not hasattr(page_mod, "text_stats")  # one definition of the counts: the figures module


def test_chars_per_token_is_shown_with_the_model_s_and_the_whole_merge_list(client):
    """Issue 12, item 4: beside the model's characters per token, the same text cut with all the merges."""
    html = get(client, SCENARIO).content.decode()
    for name, text in (("prose", page_mod.PROSE_SAMPLE), ("code", page_mod.CODE_SAMPLE)):
        model = tokenized_figures(tok, text, max_merges=tok.model_merges)
        full = tokenized_figures(tok, text, max_merges=len(tok.merges))
        assert full.tokens < model.tokens and full.chars_per_token > model.chars_per_token
        box = html.split(f'data-compare="{name}"')[1].split("</p>")[0]
        assert f"data-cpt-model>{model.chars_per_token}<" in box and f"data-cpt-full>{full.chars_per_token}<" in box
        assert f"all {len(tok.merges):,}" in box
    # the context's own figures: its turns' text, cut with each vocabulary
    req = run_of(SCENARIO).request
    texts = [req.system] + [m.text for m in req.messages]
    for attr, n in (("data-cpt-model", tok.model_merges), ("data-cpt-full", len(tok.merges))):
        n_tokens = sum(len(tok.encode(t, n)) for t in texts)
        expected = text_figures("".join(texts), n_tokens).chars_per_token
        assert f"{attr}>{expected}<" in html.split('data-compare="context"')[1].split("</p>")[0]
    assert "Why production tokenizers get about 4 characters per token" in html


def test_the_page_opens_on_the_tokens_with_their_ids_and_the_list_of_ids(client):
    run = run_of(SCENARIO)
    html = get(client, SCENARIO).content.decode()
    visual = html.split('id="main-visual"', 1)[1].split("</section>", 1)[0]
    assert 'id="strip"' in visual
    ids = re.search(r'<pre class="tk-ids" id="ids"[^>]*>\[(.*?)\]</pre>', visual).group(1)
    assert [int(x) for x in ids.split(", ")] == run.prompt_ids
    text = prompt_text_figures(tok, run.prompt_ids)
    assert f"{text.tokens} for the text, {len(run.prompt_ids) - text.tokens} for the chat template" in visual


def test_view_options_select_word_step_and_token(client):
    data = stage_data(client, "tokenize", SCENARIO, word=3, merge=1, token=5, merges=100)["tokenize-data"]
    assert data["sel"] == {"merges": 100, "token": 5, "word": 3, "merge": 1, "img_w": 1920, "img_h": 1080}


def test_the_default_word_is_the_longest_of_the_last_user_message(client):
    data = stage_data(client, "tokenize", SCENARIO)["tokenize-data"]
    word = data["chunks"][data["sel"]["word"]][0]
    last = tok.chunks(SCENARIO.messages[-1]["content"])
    assert word in last and len(word.strip()) == max(len(c.strip()) for c in last)
    # the selected token is that word's first token
    ids = replay(data, tok.model_merges)
    assert ids[data["sel"]["token"]] == tok.encode(word)[0]


@pytest.mark.parametrize("opts", [
    {"merges": "99999"}, {"merges": "-1"}, {"merges": "abc"}, {"token": "9999"}, {"word": "9999"},
    {"merge": "500"}, {"word": "0", "merge": "99"}, {"img_w": "0"}, {"img_h": "9001"}, {"token": "1e3"},
])
def test_bad_view_options_are_400_pages(client, opts):
    r = get(client, SCENARIO, **opts)
    assert r.status_code == 400
    assert "Traceback" not in r.content.decode()


def test_hostile_text_is_escaped_and_long_text_is_cut_with_a_note(client):
    hostile = Scenario(
        system='</textarea><script>alert("sys")</script>',
        messages=[{"role": "user", "content": '<img src=x onerror=alert(1)>\u202eevil\u202c ' + "😀" * 3000}],
        max_tokens=4,
    )
    r = get(client, hostile)
    assert r.status_code == 200
    html = r.content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "first 4,000 bytes" in html
    assert len(r.content) < 150_000
    data = data_of(r)["tokenize-data"]  # the merge trace covers the first 4,000 bytes only
    assert data["truncated"] and sum(len(c[0].encode()) for c in data["chunks"]) <= page_mod.MAX_TEXT_BYTES


@pytest.mark.slow
def test_a_long_context_stays_small_and_runs_once(client, monkeypatch):
    text = "The planner estimates the cost of each plan and picks the cheapest one. " * 120
    s = Scenario(messages=[{"role": "user", "content": text}], max_tokens=2)
    get(client, s)  # the run itself is cached per scenario
    passes = count_forward_passes(monkeypatch, engine().model)
    r = get(client, s, merges=64)
    assert r.status_code == 200 and len(r.content) < 150_000
    assert passes == []  # another vocabulary size re-tokenizes the text, never runs the model again


def test_a_refused_request_still_renders(client):
    s = Scenario(messages=[{"role": "assistant", "content": "I start"}], max_tokens=2)
    r = get(client, s)
    assert r.status_code == 200
    assert "refused before it reached the tokenizer" in r.content.decode()
    assert get(client, s, word=0).status_code == 400


def test_sample_points_are_log_spaced_and_include_the_model():
    pts = page_mod.sample_points(20000, 3836)
    assert pts[0] == 0 and pts[-1] == 20000 and 3836 in pts
    assert pts == sorted(set(pts))
