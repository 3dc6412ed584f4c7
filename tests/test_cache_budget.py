"""Every page cache bounded in bytes under one shared budget (explainer/lifecycle/lru.py,
settings.EXPLAINER_CACHE_MB), cached runs that keep only the rows their pages show, and the
tokenizer's chunk cache bounded by bytes."""
import dataclasses
import random
import threading

import numpy as np
import pytest
from django.http import QueryDict

from explainer.lifecycle import lru
from explainer.lifecycle.lru import LRU, Budget, sizeof
from explainer.lifecycle.scenario import Scenario
from explainer.stages.registry import BY_SLUG
from explainer.stages.runs import engine, run_of


def blob(n_bytes: int, fill: int = 0) -> np.ndarray:
    return np.full(n_bytes, fill, np.uint8)


# ---- sizeof --------------------------------------------------------------------------------------

def test_sizeof_counts_what_a_value_keeps_alive():
    x = np.zeros((400, 4096), np.float32)  # a prefill's logits: 6.5 MB
    assert sizeof(x[-1]) >= x.nbytes  # a view keeps the whole matrix alive
    assert sizeof(np.array(x[-1])) < 20_000  # a copy is its row
    assert sizeof([x, x[-1], x[-2]]) < x.nbytes + 2_000  # one buffer counted once
    assert 1_000_000 <= sizeof("a" * 1_000_000) < 1_001_000
    assert sizeof({"k": ["x" * 1000] * 1000}) < 20_000  # the same string object, counted once
    assert sizeof([["x" * 100 + str(i)] for i in range(1000)]) > 100_000

    @dataclasses.dataclass
    class Holder:
        rows: list
    assert sizeof(Holder([blob(50_000)])) >= 50_000
    loop: list = []
    loop.append(loop)
    assert sizeof(loop) < 1000


def test_sizeof_is_iterative_and_capped():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert sizeof(deep) > 100_000 * 50  # no RecursionError
    many = [[i] for i in range(150_000)]
    assert sizeof(many) > 150_000 * 56  # past the cap it extrapolates rather than walking on


# ---- the LRU and the budget ---------------------------------------------------------------------------

def test_it_evicts_by_bytes_least_recently_used_first():
    budget = Budget(max_bytes=1_000_000)
    c = LRU("t", budget=budget)
    for i in range(4):
        assert c.put(i, blob(200_000))
    assert len(c) == 4 and 800_000 < c.bytes <= 1_000_000
    assert c.get(0) is not None  # 0 is now the most recently used
    assert c.put(4, blob(200_000))
    assert 1 not in c and all(k in c for k in (0, 2, 3, 4))
    assert budget.used() <= 1_000_000
    # many small entries weigh what they hold, not one slot each
    for i in range(100):
        c.put(("small", i), blob(1_000))
    assert budget.used() <= 1_000_000 and len(c) > 50


def test_an_entry_too_large_for_the_budget_is_not_kept():
    budget = Budget(max_bytes=1_000_000)
    c = LRU("t", budget=budget)
    assert c.put("a", blob(100_000))
    assert not c.put("big", blob(400_000))  # more than a quarter of the budget
    assert "big" not in c and "a" in c and c.refused == 1
    small = LRU("small", budget=budget, max_bytes=50_000)
    assert not small.put("x", blob(60_000)) and small.put("y", blob(20_000))


def test_one_budget_holds_across_two_caches():
    budget = Budget(max_bytes=1_000_000)
    a, b = LRU("a", budget=budget), LRU("b", budget=budget)
    for i in range(4):
        a.put(i, blob(200_000))
    for i in range(10):  # b's stores push a's entries out, oldest first
        b.put(i, blob(200_000))
        assert budget.used() <= 1_000_000
        assert a.bytes + b.bytes == budget.used()
    assert len(a) == 0 and len(b) == 4
    a.put("new", blob(200_000))  # and the other way round: b's oldest goes
    assert "new" in a and 6 not in b and 9 in b and budget.used() <= 1_000_000
    # a smaller limit applies at once
    budget.configure(max_bytes=500_000)
    assert budget.used() <= 500_000


def test_the_budget_follows_a_source_and_the_setting(settings, own_services):
    limit = {"bytes": 1_000_000}
    budget = Budget(source=lambda: limit["bytes"])
    c = LRU("t", budget=budget)
    for i in range(4):
        c.put(i, blob(200_000))
    limit["bytes"] = 450_000
    c.put("x", blob(100_000))
    assert budget.used() <= 450_000
    # the process-wide budget is settings.EXPLAINER_CACHE_MB when the app's services are built
    settings.EXPLAINER_CACHE_MB = 3
    own_services()
    assert lru.BUDGET.max_bytes == 3 * lru.MB
    settings.EXPLAINER_CACHE_MB = 128
    own_services()
    assert lru.BUDGET.max_bytes == 128 * lru.MB


def test_it_is_thread_safe():
    budget = Budget(max_bytes=2_000_000)
    caches = [LRU(f"c{i}", budget=budget) for i in range(3)]
    errors = []

    def work(n):
        try:
            rng = random.Random(n)
            for i in range(300):
                c = caches[rng.randrange(3)]
                if rng.random() < 0.5:
                    c.put((n, i % 40), blob(rng.randrange(1, 60_000)))
                else:
                    c.get((n, rng.randrange(40)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert budget.used() == sum(c.bytes for c in caches) <= 2_000_000
    assert all(c.bytes == sum(size for _, size, _ in c._data.values()) for c in caches)


def test_the_page_caches_share_the_process_budget():
    import explainer.stages.pages.caching
    import explainer.stages.pages.conversation
    import explainer.stages.pages.tokenize
    import explainer.stages.pages.tools
    import explainer.stages.pages.transformer  # noqa: F401
    names = {c.name for c in lru.BUDGET.caches}
    assert {"stage runs", "tokenize page", "transformer page", "tools page", "caching page: first requests",
            "caching page: request pairs", "conversation page: summaries", "schema automata"} <= names


# ---- cached runs ---------------------------------------------------------------------------------------

LONG = " ".join(f"word{i} about scheduling pipelines" for i in range(38))  # ~390 tokens


def test_a_cached_run_keeps_rows_not_the_prefill_matrix():
    s = Scenario(messages=[{"role": "user", "content": LONG}], max_tokens=8, seed=11)
    run = run_of(s)
    assert run.error is None and len(run.prompt_ids) > 350
    vocab = engine().tokenizer.vocab_size
    for st in run.steps:
        logits = st["logits"]
        assert logits.base is None and logits.flags.owndata and logits.shape == (vocab,) and logits.dtype == np.float32
    # 8 rows of 4096 float32 and the prompt's token list; the prefill matrix alone would be 6 MB
    assert sizeof(run) < 1_000_000
    assert run_of(s) is run  # and it is cached


@pytest.mark.slow
def test_fifty_long_scenarios_stay_under_the_budget(settings, own_services):
    settings.EXPLAINER_CACHE_MB = 2
    own_services()
    lru.BUDGET.clear()
    limit = 2 * lru.MB
    st = BY_SLUG["transformer"]
    from explainer.stages.options import parse_options
    from explainer.stages.views import StagePage

    peak = 0
    for i in range(50):
        s = Scenario(messages=[{"role": "user", "content": f"{i} " + LONG}], max_tokens=2, seed=i)
        page = StagePage(st, s, "", parse_options(st.page.OPTIONS, QueryDict("")))
        st.page.context(page)
        peak = max(peak, lru.BUDGET.used())
        assert lru.BUDGET.used() <= limit
    runs = next(c for c in lru.BUDGET.caches if c.name == "stage runs")
    transformer = next(c for c in lru.BUDGET.caches if c.name == "transformer page")
    assert len(runs) >= 1 and len(transformer) >= 1 and peak > limit // 2  # the caches were in use, not bypassed
    assert runs.evictions + transformer.evictions > 0


# ---- the tokenizer's chunk cache -------------------------------------------------------------------------

@pytest.mark.slow
def test_the_tokenizer_cache_stays_under_its_cap():
    from explainer.llm import bpe
    from explainer.llm import tokenizer as tk

    tok = dataclasses.replace(tk.load_tokenizer())  # a fresh instance: an empty cache of its own
    rng = random.Random(0)
    words, n = [], 0
    while n < 1_000_000:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 12)))
        words.append(w)
        n += len(w) + 1
    text = " ".join(words)[:1_000_000]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok._cache.nbytes <= bpe.CACHE_MAX_BYTES + 1_000
    assert sizeof(tok._cache.entries) <= bpe.CACHE_MAX_BYTES * 1.1  # the estimate is not optimistic
    assert len(tok._cache.entries) > 0  # still caching
    long_word = "x" * (bpe.CACHE_MAX_CHUNK + 10)
    tok.encode(" " + long_word)
    assert all(len(chunk) < bpe.CACHE_MAX_CHUNK for chunk, _ in tok._cache.entries)
    assert tok.encode("hello world") == tk.load_tokenizer().encode("hello world")
