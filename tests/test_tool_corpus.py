"""The tool-use corpus: deterministic, held out for real, and in the very tokens the engine reads."""
from __future__ import annotations

import json

import pytest

from explainer.lifecycle.engine import Engine
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.tool_format import TOOL_USE_PREFIX
from explainer.llm.blocklist import find_blocked
from explainer.llm.constrained import JsonConstraint
from explainer.llm.tokenizer import load_tokenizer
from explainer.llm.training import tool_corpus as tc
from explainer.llm.training.tool_eval import _body, request_messages

DOCS = [{"kind": "api", "system": None, "messages": [{"role": "user", "content": f"What does json.{n}() do?"},
                                                     {"role": "assistant", "content": f"Parses JSON with {n}. It returns a value."}]}
        for n in ("loads", "dumps", "load")]
VAL_DOCS = [{"kind": "api", "system": None, "messages": [{"role": "user", "content": "What does csv.reader() do?"},
                                                         {"role": "assistant", "content": "Reads rows. Each row is a list."}]}]


@pytest.fixture(scope="module")
def corpus():
    return tc.build(400, 150, DOCS, VAL_DOCS)


@pytest.fixture(scope="module")
def engine():
    return Engine()


@pytest.mark.slow
def test_the_same_arguments_give_the_same_conversations(corpus):
    again = tc.build(400, 150, DOCS, VAL_DOCS)
    assert json.dumps(again, sort_keys=True) == json.dumps(corpus, sort_keys=True)
    other = tc.build(400, 150, DOCS, VAL_DOCS, seed="another")
    assert other["train"] != corpus["train"]


def test_every_kind_is_drawn(corpus):
    for split in ("train", "heldout"):
        kinds = {c["kind"] for c in corpus[split]}
        assert kinds == ({"call", "text", "result", "echo"} if split == "train" else {"call", "text", "result"})
        assert {c.get("why") for c in corpus[split] if c["kind"] == "text"} >= {"docs", "missing"}
        results = [c for c in corpus[split] if c["kind"] == "result"]
        assert any(c["result"]["is_error"] for c in results) and any(not c["result"]["is_error"] for c in results)


def test_held_out_tools_arguments_and_identifiers_never_occur_in_training(corpus):
    train_vocab, held_vocab = tc.vocabulary("train"), tc.vocabulary("heldout")
    assert not train_vocab["tools"] & held_vocab["tools"]
    assert not train_vocab["args"] & held_vocab["args"]
    train_text = "\n".join((c["system"] or "") + "".join(m["content"] for m in c["messages"]) for c in corpus["train"])
    for name in held_vocab["tools"] | held_vocab["args"]:
        assert name not in train_text
    held_ids = tc.identifiers(corpus["heldout"])
    assert held_ids and not held_ids & tc.identifiers(corpus["train"])
    for ident in held_ids:
        assert f'"{ident}"' not in train_text and f":{ident}}}" not in train_text


def test_a_call_copies_the_identifier_the_question_names(corpus):
    calls = [c for c in corpus["train"] + corpus["heldout"] if c["kind"] == "call"]
    assert len(calls) > 50
    for c in calls:
        value = next(iter(c["call"]["input"].values()))
        assert value == c["ident"]
        assert str(c["ident"]) in c["messages"][0]["content"]
        assert c["messages"][-1]["content"] == f"{TOOL_USE_PREFIX}{c['call']['name']}\n" + json.dumps(
            c["call"]["input"], ensure_ascii=False, separators=(",", ":"))


def test_an_answer_after_a_result_states_its_key_fact(corpus):
    for c in corpus["train"] + corpus["heldout"]:
        if c["kind"] == "result":
            assert c["key"].lower() in c["messages"][-1]["content"].lower()
            assert c["key"].lower() in c["result"]["content"].lower() or c["family"] == "docs" or c["result"]["is_error"]


def test_no_blocked_word_and_every_schema_decodes(corpus):
    tok = load_tokenizer()
    for c in corpus["train"] + corpus["heldout"]:
        assert not find_blocked((c["system"] or "") + " ".join(m["content"] for m in c["messages"]))
    for fam in tc.FAMILIES:
        JsonConstraint(fam.schema(fam.extras), tok)


def test_training_tokens_are_what_the_engine_reads(corpus, engine):
    """The prompt the engine builds from the same request, then the call or answer, is the training text."""
    tok = load_tokenizer()
    seen = set()
    for c in corpus["heldout"] + corpus["train"]:
        style = c.get("call", {}).get("style")
        if (c["kind"], style) in seen or c["kind"] == "echo":  # (a drill without tools: the chat template, closed)
            continue
        seen.add((c["kind"], style))
        ids = tc.encode_conversation(tok, c)
        n = 1 if c["kind"] in ("call", "text") else 3
        req = parse_request(_body(c, request_messages(c, n), {"type": "auto"}, 16))
        prompt = engine.prompt_ids(req)
        assert ids[: len(prompt)] == prompt
        if c["kind"] == "call":  # the engine's forced opening, then the JSON
            name = c["call"]["name"]
            forced = tok.encode(f"{TOOL_USE_PREFIX}{name}\n") if style == "tool" else tok.encode(TOOL_USE_PREFIX) + tok.encode(name + "\n")
            assert ids[len(prompt): len(prompt) + len(forced)] == forced
        assert ids[-1] == tok.special_id("<|end|>")
    assert len(seen) == 4  # text, result, and a call of each style


def test_a_result_conversation_renders_as_the_api_history(corpus, engine):
    """The whole history (call and tool_result blocks), as the payload writes it, is the training text."""
    tok = load_tokenizer()
    c = next(c for c in corpus["train"] if c["kind"] == "result")
    req = parse_request(_body(c, request_messages(c, 3), {"type": "auto"}, 16))
    msgs = [(m["role"], m["content"]) for m in c["messages"][:3]]
    assert engine.prompt_ids(req) == tok.encode_chat(c["system"], msgs)


def test_training_identifiers_are_drawn_from_thousands_of_words_none_held_out():
    """Too few words and a model learns the identifiers by heart instead of copying them."""
    words = tc.training_words(DOCS)
    held = tc.WORDS["heldout"]
    for key in ("surname", "word", "thing", "city"):
        assert len(set(words[key])) > 2000
        assert not {w.lower() for w in words[key]} & {w.lower() for v in held.values() for w in v}
    assert not set(words["word"]) & tc.vocabulary("heldout")["args"]


def test_a_copying_drill_answers_each_question_with_the_identifier_it_names(corpus):
    """The training split's echo conversations: several questions, each asked for its identifier, each answered by
    that identifier exactly as it appears in the question (the copy a call's argument makes)."""
    echoes = [c for c in corpus["train"] if c["kind"] == "echo"]
    assert echoes
    for c in echoes:
        turns = c["messages"]
        assert 6 <= len(turns) <= 10 and [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2)
        for q, a in zip(turns[::2], turns[1::2]):
            assert a["content"] and a["content"] in q["content"]
