"""Computed runs of scenarios, shared by every stage page.

Running a scenario (prefill + sampling) takes a fraction of a second; walking through
the stages shows the same scenario again and again, so runs are kept in an in-process LRU
keyed by the scenario's digest. Same scenario, same seed: same run.

Every page cache (this one and those of the pages) is an :class:`explainer.lifecycle.lru.LRU`
bounded by bytes under one shared budget, ``settings.EXPLAINER_CACHE_MB``.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from django.conf import settings

from explainer.lifecycle import lru
from explainer.lifecycle.engine import Engine, Run, run_request
from explainer.lifecycle.scenario import Scenario, ScenarioCodec
from explainer.web.runner import get_engine

# The budget follows the setting (read at every store, so a changed setting applies at once).
lru.BUDGET.configure(source=lambda: getattr(settings, "EXPLAINER_CACHE_MB", lru.DEFAULT_CACHE_MB) * lru.MB)

_RUNS = lru.LRU("stage runs")


@lru_cache(maxsize=1)
def codec() -> ScenarioCodec:
    return ScenarioCodec(hashlib.sha256(b"explainer.scenario-link:" + settings.SECRET_KEY.encode()).digest())


def engine() -> Engine:
    return get_engine()


def compact(run: Run, keep_logits: bool = True) -> Run:
    """What a cached run keeps: each step's logits row as its own float32 copy (or none at all
    with ``keep_logits=False``, for pages that never read them).

    The first step's logits come out of the prefill as ``logits[-1]``, a view that keeps the
    whole [prompt tokens × vocabulary] matrix alive (6.2 of 6.9 MB of a 397-token prompt's run);
    the pages only read each step's own row (and float32 is what the model computed, so the
    sampling page and the tutorial redraw exactly the engine's draw).
    """
    for step in run.steps:
        logits = step.get("logits")
        if not keep_logits:
            step.pop("logits", None)
        elif isinstance(logits, np.ndarray):
            row = np.array(logits, dtype=np.float32)  # a copy, never a view
            row.flags.writeable = False
            step["logits"] = row
    return run


def run_of(scenario: Scenario) -> Run:
    key = scenario.key()
    run = _RUNS.get(key)
    if run is None:
        run = compact(run_request(engine(), scenario.request_body(), seed=scenario.seed))
        _RUNS.put(key, run)
    return run
