import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explainer.llm.generate import Finish, GenerationConfig, Step, generate
from explainer.llm.model import load_model
from explainer.llm.sampling import SamplingParams, distribution, draw
from explainer.llm.tokenizer import load_tokenizer

LOGITS = np.array([2.0, 1.0, 0.5, 3.0, -1.0, 3.0])  # token 3 and 5 tie at the top


def test_temperature_zero_is_greedy():
    d = distribution(LOGITS, SamplingParams(temperature=0))
    assert d.final[3] == 1.0 and d.final.sum() == 1.0  # the tie goes to the lower id
    rng = np.random.default_rng(1)
    assert {draw(d, rng) for _ in range(50)} == {3}


def test_top_k_keeps_exactly_the_k_best():
    d = distribution(LOGITS, SamplingParams(temperature=1.0, top_k=3))
    assert set(np.flatnonzero(d.final)) == {3, 5, 0}
    np.testing.assert_allclose(d.final.sum(), 1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=40), st.floats(0.05, 0.99), st.floats(0.05, 1.0))
@pytest.mark.slow
def test_top_p_keeps_the_smallest_prefix_reaching_p(logits, p, temperature):
    logits = np.array(logits)
    d = distribution(logits, SamplingParams(temperature=temperature, top_p=p))
    kept = np.flatnonzero(d.final)
    probs_sorted = d.probs[d.order]
    n = len(kept)
    assert set(kept) == set(d.order[:n].tolist())  # the kept set is a prefix of the ranking
    assert probs_sorted[:n].sum() >= p - 1e-9  # it reaches p
    assert n == 1 or probs_sorted[: n - 1].sum() < p - 1e-12  # and is the smallest that does


def test_rows_carry_logit_scaled_logit_probability_and_cumulative():
    d = distribution(LOGITS, SamplingParams(temperature=0.5, top_k=4))
    rows = d.rows(6)
    assert [r.token for r in rows] == [3, 5, 0, 1, 2, 4]
    assert rows[0].scaled_logit == pytest.approx(6.0)
    assert rows[-1].cumulative == pytest.approx(1.0)
    assert [r.kept for r in rows] == [True, True, True, True, False, False]
    np.testing.assert_allclose(sum(r.probability for r in rows), 1.0)


def test_seeded_draws_repeat():
    d = distribution(LOGITS, SamplingParams(temperature=1.0))
    a = [draw(d, np.random.default_rng(7)) for _ in range(5)]
    b = [draw(d, np.random.default_rng(7)) for _ in range(5)]
    assert a == b
    many = [draw(d, r) for r in [np.random.default_rng(3)] for _ in range(4000)]
    freq = np.bincount(many, minlength=len(LOGITS)) / len(many)
    np.testing.assert_allclose(freq, d.final, atol=0.03)  # and follow the distribution


model, tok = load_model(), load_tokenizer()
PROMPT = tok.encode_chat(None, [("user", "What is a database index?")])


def _run(**kw):
    items = list(generate(model, tok, PROMPT, GenerationConfig(**kw)))
    return [i for i in items if isinstance(i, Step)], items[-1]


def test_generation_is_reproducible_by_seed():
    steps_a, fin_a = _run(max_tokens=20, seed=5, sampling=SamplingParams(temperature=1.0))
    steps_b, fin_b = _run(max_tokens=20, seed=5, sampling=SamplingParams(temperature=1.0))
    assert [s.token for s in steps_a] == [s.token for s in steps_b] and fin_a.text == fin_b.text


def test_generation_honours_max_tokens_and_streams_the_whole_text():
    steps, fin = _run(max_tokens=7, seed=1, sampling=SamplingParams(temperature=1.0))
    assert isinstance(fin, Finish)
    assert fin.output_tokens == len(steps) <= 7
    assert "".join(s.text for s in steps) == fin.text
    if fin.stop_reason == "max_tokens":
        assert len(steps) == 7


@pytest.mark.slow
def test_generation_stops_at_a_stop_sequence_and_never_streams_it():
    _, free = _run(max_tokens=30, seed=2, sampling=SamplingParams(temperature=0))
    words = free.text.split()
    assert len(words) > 2, free.text
    stop = " " + words[2]
    steps, fin = _run(max_tokens=30, seed=2, sampling=SamplingParams(temperature=0), stop_sequences=(stop,))
    assert fin.stop_reason == "stop_sequence" and fin.stop_sequence == stop
    streamed = "".join(s.text for s in steps)
    assert streamed == fin.text == free.text[: free.text.index(stop)]


def test_generation_stops_at_the_context_window():
    long_prompt = tok.encode_chat(None, [("user", "word " * 2000)])[-(model.config.n_ctx - 3):]
    items = list(generate(model, tok, long_prompt, GenerationConfig(max_tokens=50)))
    assert items[-1].stop_reason in ("model_context_window_exceeded", "end_turn")
    assert items[-1].output_tokens <= 3


def _reference_draw(final: np.ndarray, u: float) -> int:
    """The inverse-CDF draw over the whole stable order, with the plain sum as the total."""
    order = np.argsort(-final, kind="stable")
    cum = np.cumsum(final[order])
    i = int(np.searchsorted(cum, u * float(final.sum()), side="right"))
    return int(order[min(i, int(np.count_nonzero(final)) - 1)])


@pytest.mark.parametrize("spread", [0.3, 3.0, 12.0])  # flat (the draw may need the whole order) to peaked
def test_a_large_vocabulary_is_sorted_only_as_far_as_needed_and_draws_the_same(spread):
    from explainer.llm.sampling import FULL_SORT_MAX, head_order

    rng = np.random.default_rng(7)
    V = 49152
    assert V > FULL_SORT_MAX
    logits = (rng.standard_normal(V) * spread).round(1)  # rounded: many ties, broken by the lower id
    logits[[5, 900, 40000]] = logits.max()  # a three-way tie at the top
    full = np.argsort(-logits, kind="stable")
    for n in (1, 10, 64, 1000, V):
        assert np.array_equal(head_order(logits, n), full[:n])
    for params in (SamplingParams(0.7), SamplingParams(1.0, top_k=50), SamplingParams(0.7, top_p=0.9),
                   SamplingParams(1.2, top_k=4000, top_p=0.5), SamplingParams(0)):
        d = distribution(logits, params, banned=(1, 2))
        assert np.array_equal(d.order, np.argsort(-d.logits, kind="stable"))  # (the banned ids go last)
        assert d.final[[1, 2]].sum() == 0 and abs(d.final.sum() - 1) < 1e-9
        if params.top_k:
            assert np.count_nonzero(d.final) <= params.top_k
        if params.top_p and not params.top_k:  # the smallest prefix of the order whose mass reaches p
            kept = d.probs[d.final > 0]
            assert kept.sum() >= params.top_p - 1e-9 and kept.sum() - kept.min() < params.top_p + 1e-9
        r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
        for _ in range(30):
            assert draw(d, r1) == _reference_draw(d.final, r2.random())
        assert [c.token for c in d.rows(10)] == [int(t) for t in d.order[:10]]


@pytest.mark.parametrize("V", [300, 1024, 4096, 49152])
def test_a_batch_of_draws_is_each_row_drawn_alone_bit_for_bit(V):
    """``draw_rows`` (a batched step's draws, made together) against ``distribution`` + ``draw`` + ``rows`` one row
    at a time: the same token, probabilities and candidate rows, for batches of 1 to 32 rows mixing temperatures,
    greedy, top-k, top-p and banned ids."""
    from explainer.llm.sampling import Draw, draw_rows
    rng = np.random.default_rng(V)
    for _ in range(8):
        B = int(rng.integers(1, 33))
        logits = (rng.standard_normal((B, V)) * rng.uniform(0.5, 8)).astype(np.float32)
        logits[:, :3] += 5
        params = [SamplingParams(float(rng.choice([0.0, 0.3, 0.7, 1.0, 1.7])), int(rng.choice([0, 0, 5])),
                                 float(rng.choice([1.0, 1.0, 0.9]))) for _ in range(B)]
        bans = [tuple(sorted(set(rng.integers(0, V, size=int(rng.integers(0, 4))).tolist()))) for _ in range(B)]
        seeds = rng.integers(0, 1000, size=B)
        got = draw_rows(logits, [Draw(params[i], bans[i], np.random.default_rng(seeds[i]), 10) for i in range(B)])
        for i in range(B):
            dist = distribution(logits[i], params[i], bans[i])
            assert draw(dist, np.random.default_rng(seeds[i])) == got[i].token
            assert np.array_equal(dist.final, got[i].dist.final) and np.array_equal(dist.probs, got[i].dist.probs)
            assert dist.rows(10) == got[i].candidates


def test_a_step_whose_draw_fails_fails_that_request_only():
    """A row whose draw cannot be made (a banned id outside the vocabulary) gets its error; the step's other rows get the tokens
    they would get alone, from generators that were not advanced by the failed attempt."""
    from explainer.llm.batching import Scheduler
    from explainer.llm.sampling import Draw

    class Row:
        def __init__(self, d):
            self.draw = d

    V = 40
    logits = np.random.default_rng(3).standard_normal((3, V)).astype(np.float32)
    p = SamplingParams(0.8)
    good = [Draw(p, (), np.random.default_rng(s), 3) for s in (1, 2)]
    rows = [Row(good[0]), Row(Draw(p, (V + 5,), np.random.default_rng(9), 3)), Row(good[1])]
    out = Scheduler._draws(rows, logits)
    assert isinstance(out[1], BaseException)
    for r, s in ((0, 1), (2, 2)):
        alone = distribution(logits[r], p)
        assert out[r].token == draw(alone, np.random.default_rng(s))
