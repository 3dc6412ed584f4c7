"""explainer.lifecycle.conversation: per-turn accounting and the three overflow strategies.

The strategies are checked for their invariants (the system prompt is kept, the result fits,
the first turn is a user turn, roles alternate, the newest turn is always sent) on hand-made
cases, on random conversations, and with the bundled model's real tokenizer."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explainer.lifecycle import conversation as cv
from explainer.lifecycle.conversation import assistant, user
from explainer.lifecycle.engine import Engine
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.pricing import cost


def words(system, messages):
    """A stand-in tokenizer: one token per word, two per turn for its role marker and end, one for the system's."""
    n = len(system.split()) + 2 if system else 0
    return n + sum(len(m["content"].split()) + 2 for m in messages) + 1


def chat(*texts):
    """user, assistant, user, … from the given texts."""
    return [user(t) if i % 2 == 0 else assistant(t) for i, t in enumerate(texts)]


def sent_last(result, original):
    """The newest turn is always sent word for word (a summary may travel in the same user turn)."""
    a, b = result.messages[-1], original[-1]
    return a["role"] == b["role"] and (a == b or a["content"].endswith("\n\n" + b["content"]))


def check(result, system, original, budget):
    assert result.system == system
    assert result.tokens == words(system, result.messages) and result.fits and result.tokens <= budget
    assert cv.alternates(result.messages)
    assert sent_last(result, original)


HISTORY = chat("one two three", "four five six seven", "eight nine", "ten eleven twelve thirteen fourteen", "fifteen")
SYSTEM = "be brief"


# ---- helpers ------------------------------------------------------------------------------------

def test_normalise_merges_consecutive_turns_like_the_api():
    assert cv.normalise([("user", "a"), ("user", "b"), ("assistant", "c")]) == [user("a\n\nb"), assistant("c")]
    assert cv.normalise([user("x"), {"role": "assistant", "content": "y"}]) == chat("x", "y")


def test_exchanges_and_request_ends():
    assert cv.exchanges(HISTORY) == [(0, 2), (2, 4), (4, 5)]
    assert cv.request_ends(HISTORY) == [1, 3, 5]
    prefill = chat("q", "a", "q2", "The answer is")
    assert cv.request_ends(prefill) == [1, 4]  # a final assistant turn is sent with the last request


def test_alternates():
    assert cv.alternates(chat("a", "b", "c"))
    assert not cv.alternates([assistant("a"), user("b")])
    assert not cv.alternates([user("a"), user("b")])
    assert not cv.alternates([])


# ---- accounting ---------------------------------------------------------------------------------

def test_each_request_resends_the_history_before_it():
    rows = cv.per_turn(SYSTEM, HISTORY, words)
    assert [r.messages for r in rows] == [1, 3, 5]
    assert [r.input_tokens for r in rows] == [words(SYSTEM, HISTORY[:n]) for n in (1, 3, 5)]
    assert [r.input_tokens for r in rows] == [10, 20, 30]  # system 4, turns 5, 6, 4, 7, 3, reply marker 1
    assert [r.cumulative_input for r in rows] == [10, 30, 60]
    assert all(r.cost is None for r in rows)


def test_input_grows_linearly_and_the_total_quadratically():
    turn = "w " * 10
    msgs = chat(*[turn] * 39)  # 20 requests, every turn 12 tokens
    rows = cv.per_turn(None, msgs, words)
    steps = {b.input_tokens - a.input_tokens for a, b in zip(rows, rows[1:])}
    assert steps == {24}  # each request adds one reply and one question
    k = len(rows)
    assert rows[-1].cumulative_input == sum(13 + 24 * i for i in range(k))  # k*first + step*k(k-1)/2


def test_costs_use_the_list_price_and_refused_requests_are_not_billed():
    rows = cv.per_turn(SYSTEM, HISTORY, words, output_tokens=[4, 2, None], model="claude-sonnet-4-5")
    first = cost("claude-sonnet-4-5", {"input_tokens": rows[0].input_tokens, "output_tokens": 4})["total"]
    assert rows[0].cost == pytest.approx(first)
    assert rows[2].output_tokens is None and rows[2].cost == 0
    assert rows[2].cumulative_input == rows[1].cumulative_input
    assert rows[2].cumulative_cost == pytest.approx(rows[0].cost + rows[1].cost)


def test_a_model_without_a_price_has_no_cost():
    rows = cv.per_turn(SYSTEM, HISTORY, words, output_tokens=[1, 1, 1], model="claude-opus-5-5")
    assert all(r.cost is None and r.cumulative_cost is None for r in rows)


def test_projection_is_the_arithmetic_series():
    p = cv.project(100, 100, 1000)
    assert (p.turns, p.last_input, p.total_input) == (10, 1000, 5500)
    p = cv.project(33, 168.3, 200_000, model="claude-sonnet-4-5")
    sizes = [33 + k * 168.3 for k in range(p.turns)]
    assert sizes[-1] <= 200_000 < sizes[-1] + 168.3
    assert p.total_input == round(sum(sizes))
    assert p.input_cost == pytest.approx(p.total_input * 3 / 1e6)
    assert cv.project(10, 0, 1000) is None and cv.project(2000, 5, 1000) is None


# ---- drop oldest ----------------------------------------------------------------------------------

def test_drop_oldest_drops_whole_exchanges_until_it_fits():
    r = cv.drop_oldest(SYSTEM, HISTORY, words, budget=25)
    check(r, SYSTEM, HISTORY, 25)
    assert r.messages == HISTORY[2:] and (r.kept, r.dropped) == (3, 2)
    r = cv.drop_oldest(SYSTEM, HISTORY, words, budget=10)
    check(r, SYSTEM, HISTORY, 10)
    assert r.messages == HISTORY[4:]


def test_drop_oldest_changes_nothing_that_fits():
    r = cv.drop_oldest(SYSTEM, HISTORY, words, budget=1000)
    assert r.messages == HISTORY and r.dropped == 0 and r.fits


def test_drop_oldest_never_drops_the_newest_turn():
    r = cv.drop_oldest(SYSTEM, HISTORY, words, budget=5)
    assert r.messages == HISTORY[4:] and not r.fits and r.notes
    assert r.system == SYSTEM


# ---- keep last n ----------------------------------------------------------------------------------

def test_keep_last_n_is_a_sliding_window():
    r = cv.keep_last_n(SYSTEM, HISTORY, words, budget=1000, n=2)
    check(r, SYSTEM, HISTORY, 1000)
    assert r.messages == HISTORY[2:]
    r = cv.keep_last_n(SYSTEM, HISTORY, words, budget=1000, n=1)
    assert r.messages == [HISTORY[-1]]
    r = cv.keep_last_n(SYSTEM, HISTORY, words, budget=1000, n=9)
    assert r.messages == HISTORY and r.dropped == 0


def test_keep_last_n_keeps_fewer_when_n_do_not_fit():
    r = cv.keep_last_n(SYSTEM, HISTORY, words, budget=12, n=3)
    check(r, SYSTEM, HISTORY, 12)
    assert r.messages == [HISTORY[-1]] and r.notes


def test_keep_last_n_needs_at_least_one():
    with pytest.raises(ValueError):
        cv.keep_last_n(SYSTEM, HISTORY, words, budget=100, n=0)


# ---- summarise ------------------------------------------------------------------------------------

def test_summarise_replaces_older_turns_with_one_user_turn():
    seen = []

    def fake(older):
        seen.append(older)
        return "they counted to nine"

    r = cv.summarise(SYSTEM, HISTORY, words, budget=26, summarise_fn=fake, reserve=4)
    check(r, SYSTEM, HISTORY, 26)
    assert r.messages[0] == user(cv.SUMMARY_PREFIX + "they counted to nine")
    assert r.messages[1]["role"] == "assistant"  # the kept part starts with a reply, so roles alternate
    assert r.messages[1:] == HISTORY[len(seen[-1]):]
    assert seen[-1] == HISTORY[:r.summarised] and r.summary == "they counted to nine"
    assert r.kept + r.summarised == len(HISTORY) and r.summarised == 3


def test_summarise_keeps_fewer_turns_when_the_summary_is_longer_than_reserved():
    calls = []

    def wordy(older):
        calls.append(len(older))
        return "word word word"

    msgs = chat("a", "b", "c", "d", "e", "f", "g")  # 3 tokens a turn
    r = cv.summarise(None, msgs, words, budget=20, summarise_fn=wordy, reserve=1)
    check(r, None, msgs, 20)
    assert calls == [3, 5]  # the first cut left too little room; the second summarises more
    assert r.messages[1:] == msgs[5:] and r.notes


def test_summarise_does_nothing_when_the_history_fits():
    r = cv.summarise(SYSTEM, HISTORY, words, budget=1000, summarise_fn=lambda older: pytest.fail("not called"))
    assert r.messages == HISTORY and r.summary is None and r.fits


def test_summarise_joins_summary_and_question_when_no_reply_can_be_kept():
    msgs = chat("a", "a a a a a a a a", "last question")
    r = cv.summarise(None, msgs, words, budget=14, summarise_fn=lambda older: "s", reserve=1)
    check(r, None, msgs, 14)
    assert r.messages == [user(cv.SUMMARY_PREFIX + "s\n\nlast question")] and r.summarised == 2


def test_summarise_cannot_help_a_single_long_turn():
    r = cv.summarise(SYSTEM, [user("a " * 50)], words, budget=20, summarise_fn=lambda older: pytest.fail("not called"))
    assert not r.fits and r.notes and r.system == SYSTEM


# ---- every strategy, random conversations ---------------------------------------------------------

texts = st.text(alphabet="ab ", min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(turns=st.lists(texts, min_size=1, max_size=15), system=st.one_of(st.none(), texts),
       slack=st.integers(0, 30), n=st.integers(1, 6))
def test_every_strategy_keeps_the_system_prompt_and_the_rules(turns, system, slack, n):
    msgs = chat(*turns) if len(turns) % 2 else chat(*turns, "last question")
    budget = words(system, [msgs[-1]]) + words(None, [user(cv.SUMMARY_PREFIX + "s")]) + slack  # the newest turn fits
    results = [
        cv.drop_oldest(system, msgs, words, budget),
        cv.keep_last_n(system, msgs, words, budget, n),
        cv.summarise(system, msgs, words, budget, lambda older: "s", reserve=4),
    ]
    for r in results:
        assert r.system == system
        assert cv.alternates(r.messages)
        assert sent_last(r, msgs)
        assert r.tokens == words(system, r.messages)
        assert r.fits, r
        assert r.kept + r.dropped == len(msgs)


# ---- with the bundled model's tokenizer ----------------------------------------------------------

@pytest.fixture(scope="module")
def engine():
    return Engine()


def test_the_real_tokenizer_and_every_strategy(engine):
    def count(system, messages):
        body = {"model": "claude-sonnet-4-5", "messages": messages, **({"system": system} if system else {})}
        return len(engine.prompt_ids(parse_request(body, counting=True)))

    system = "You are a helpful assistant for software engineers."
    para = "PostgreSQL keeps every row version until VACUUM removes the ones no transaction can see any more. "
    msgs = chat(*[para * 2] * 13)
    assert count(system, msgs) > engine.max_prompt_tokens  # the API would refuse it
    budget = cv.reply_budget(engine.context_window, engine.max_prompt_tokens, 48)
    assert budget == engine.context_window - 48
    for r in (cv.drop_oldest(system, msgs, count, budget), cv.keep_last_n(system, msgs, count, budget, 2),
              cv.summarise(system, msgs, count, budget, lambda older: "we discussed VACUUM.")):
        assert r.system == system and r.fits and cv.alternates(r.messages) and sent_last(r, msgs)
        assert r.tokens == len(engine.prompt_ids(parse_request({"model": "m", "max_tokens": 1, "system": system, "messages": r.messages})))
        engine.check_fits(engine.prompt_ids(parse_request({"model": "m", "max_tokens": 1, "system": system, "messages": r.messages})))


def test_reply_budget():
    assert cv.reply_budget(512, 511, 48) == 464
    assert cv.reply_budget(512, 511, 1) == 511
    assert cv.reply_budget(512, 511, 4096) == 511  # no room can be kept: the reply stops at the window's end
