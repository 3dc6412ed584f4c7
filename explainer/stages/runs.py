"""Computed runs of scenarios, shared by every stage page.

Running a scenario (prefill + sampling) takes a fraction of a second; walking through
the stages shows the same scenario again and again, so runs are kept in a small
in-process LRU keyed by the scenario's digest. Same scenario, same seed: same run.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import lru_cache

from django.conf import settings

from explainer.lifecycle.engine import Engine, Run, run_request
from explainer.lifecycle.scenario import Scenario, ScenarioCodec
from explainer.live.runner import get_engine

_RUNS: OrderedDict[str, Run] = OrderedDict()
_LOCK = threading.Lock()
MAX_RUNS = 64


@lru_cache(maxsize=1)
def codec() -> ScenarioCodec:
    return ScenarioCodec(hashlib.sha256(b"explainer.scenario-link:" + settings.SECRET_KEY.encode()).digest())


def engine() -> Engine:
    return get_engine()


def run_of(scenario: Scenario) -> Run:
    key = scenario.key()
    with _LOCK:
        if key in _RUNS:
            _RUNS.move_to_end(key)
            return _RUNS[key]
    run = run_request(engine(), scenario.request_body(), seed=scenario.seed)
    with _LOCK:
        _RUNS[key] = run
        while len(_RUNS) > MAX_RUNS:
            _RUNS.popitem(last=False)
    return run
