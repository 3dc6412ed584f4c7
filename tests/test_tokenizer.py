import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explainer.llm.interface import TokenizerError
from explainer.llm.tokenizer import SPECIAL_TOKENS, load_tokenizer

tok = load_tokenizer()

# Every Unicode code point that UTF-8 can encode (no lone surrogates).
valid_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=300, deadline=None)
@given(valid_text)
def test_it_round_trips_any_unicode_text(s):
    assert tok.decode(tok.encode(s)) == s


@settings(max_examples=100, deadline=None)
@given(valid_text, st.integers(min_value=0, max_value=25_000))
def test_it_round_trips_at_every_vocabulary_size(s, n):
    ids = tok.encode(s, max_merges=n)
    assert tok.decode(ids) == s
    assert all(tok.rank_of(i) is None or tok.rank_of(i) < n for i in ids)


@pytest.mark.parametrize("s", [
    "", "\x00", "a\x00b", "👍🏽 family: 👨‍👩‍👧‍👦", "e\u0301 n\u0303", "\u202eevil\u202c", "日本語のテキスト",
    "def f(x):\n\treturn x ** 2\n", "  leading and trailing  ", "\r\n\r\n",
])
def test_it_round_trips_awkward_strings(s):
    assert tok.decode(tok.encode(s)) == s


def test_it_rejects_lone_surrogates_with_a_clear_error():
    with pytest.raises(TokenizerError, match="lone surrogate"):
        tok.encode("abc\ud800def")


def test_it_never_produces_special_tokens_from_text():
    ids = tok.encode("".join(SPECIAL_TOKENS))
    assert not any(tok.is_special(i) for i in ids)
    assert tok.decode(ids) == "".join(SPECIAL_TOKENS)


def test_it_stops_at_any_rank():
    text = "The tokenizer merges frequent byte pairs."
    assert tok.encode(text, max_merges=0) == list(text.encode())
    lengths = [len(tok.encode(text, max_merges=n)) for n in (0, 10, 100, 1000, 4000, len(tok.merges))]
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] < lengths[0]


def test_the_merge_trace_replays_to_the_encoding():
    for chunk in tok.encode_with_trace("Scheduling DAGs in production"):
        pieces = tuple(chunk["bytes"])
        for step in chunk["steps"]:
            assert tok.token_bytes(step.token) == tok.token_bytes(step.left) + tok.token_bytes(step.right)
            assert step.token == tok.first_merge_id + step.rank
            assert len(step.pieces) < len(pieces)
            pieces = step.pieces
        assert list(pieces) == chunk["ids"]
    assert sum((c["ids"] for c in tok.encode_with_trace("Scheduling DAGs")), []) == tok.encode("Scheduling DAGs")


def test_each_merge_is_the_lowest_ranked_pair_available():
    ranks = {pair: r for r, pair in enumerate(tok.merges)}
    for chunk in tok.encode_with_trace(" production-ready scheduling of DAGs"):
        pieces = tuple(chunk["bytes"])
        for step in chunk["steps"]:
            available = [ranks[p] for p in zip(pieces, pieces[1:]) if ranks.get(p, 10**9) < tok.model_merges]
            assert step.rank == min(available)
            pieces = step.pieces


def test_the_merge_list_and_model_vocabulary_sizes():
    assert 16_000 <= len(tok.merges) <= 32_000
    assert 1_000 <= tok.model_merges <= 8_000
    assert tok.vocab_size == 256 + len(SPECIAL_TOKENS) + tok.model_merges


def test_the_chat_template():
    ids = tok.encode_chat("Be brief.", [("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")])
    s = tok.special_id
    assert ids[0] == s("<|system|>") and ids[-1] == s("<|assistant|>")
    assert ids.count(s("<|end|>")) == 4
    prefill = tok.encode_chat(None, [("user", "Hi"), ("assistant", "Well,")])
    assert prefill[-1] != s("<|end|>") and tok.decode(prefill[-len(tok.encode("Well,")):]) == "Well,"
