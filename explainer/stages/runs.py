"""Computed runs of scenarios, shared by every stage page.

Running a scenario (prefill + sampling) takes a fraction of a second; walking through
the stages shows the same scenario again and again, so runs are kept in an in-process LRU
keyed by the scenario's digest. Same scenario, same seed: same run.

Every page cache (this one and those of the pages) is an :class:`explainer.lifecycle.lru.LRU`
bounded by bytes under one shared budget, ``settings.EXPLAINER_CACHE_MB``.
"""
from __future__ import annotations

import numpy as np
from django.conf import settings

from explainer.lifecycle import lru
from explainer.lifecycle.engine import Engine, Run, run_request
from explainer.lifecycle.scenario import Scenario, ScenarioCodec
from explainer.llm.catalog import BUNDLED_NAME
from explainer.llm.interface import ModelLoadError
from explainer.web.pages import MAX_QUERY_CHARS
from explainer.web.runner import engine_for, get_engine, is_local_model

_RUNS = lru.LRU("stage runs")


def codec() -> ScenarioCodec:
    """The permalink codec: new links are signed with SECRET_KEY; those signed with a key of
    SECRET_KEY_FALLBACKS (being rotated out, README "Configuration") still open."""
    return ScenarioCodec(settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS)


def engine(scenario: Scenario | None = None) -> Engine:
    """The engine that runs ``scenario`` (its ``model`` names a local model, or the bundled one answers)."""
    return engine_for(scenario.model) if scenario is not None else get_engine()


def link_model(request, *args, **kwargs) -> str | None:
    """The model a stage link's scenario (``?s=``) names, read without opening it: what decides where the
    page is computed (``explainer.web.runner.model_view``). None for no scenario; a link that does not
    decode raises, and its page says why."""
    if len(request.META.get("QUERY_STRING", "")) > MAX_QUERY_CHARS:
        return None
    blob = request.GET.get("s", "")
    return codec().decode(blob).model if blob else None


def stamp(scenario: Scenario) -> Scenario:
    """The scenario with its model's fingerprint, for a link: a Claude name carries none."""
    if is_local_model(scenario.model):
        fp = engine_for(scenario.model).loaded.fingerprint
        return scenario if scenario.weights == fp else scenario.replace(weights=fp)
    return scenario if not scenario.weights else scenario.replace(weights="")


def check_model(scenario: Scenario) -> str | None:
    """Why ``scenario`` cannot be shown here (its model is missing, broken or not the same weights), or None."""
    name = scenario.model
    if is_local_model(name):
        try:
            fp = engine_for(name).loaded.fingerprint
        except ModelLoadError as exc:
            return f"This link uses the local model {name}, which is installed here but cannot be opened: {exc}"
        if scenario.weights and scenario.weights != fp:
            return (f"This link was made with other weights for {name} (fingerprint {scenario.weights[:12]}); this "
                    f"server's {name} has {fp}, so its run would not be the one the link shows.")
        return None
    if scenario.weights or not (name.startswith("claude-") or name == BUNDLED_NAME):
        return (f"This link uses the model {name}, which is not installed on this server"
                + (f" (the link was made with weights {scenario.weights[:12]})." if scenario.weights else "."))
    return None


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
    eng = engine(scenario)
    key = f"{scenario.key()}:{eng.loaded.fingerprint}"
    run = _RUNS.get(key)
    if run is None:
        run = compact(run_request(eng, scenario.request_body(), seed=scenario.seed))
        _RUNS.put(key, run)
    return run
