"""Example prompts the app offers: chosen by measurement, not by hand.

``python -m explainer.llm.training.evaluate --choose-examples`` runs every candidate in
``explainer/llm/evaluation/candidates.json`` at seeds 0-4 and keeps, in ``examples.json``, the
ones whose replies end (``end_turn``) most often and repeat least. Each example here is a
scenario with room for the whole answer (``max_tokens`` 160, as measured), signed for a link.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from explainer.lifecycle.scenario import Scenario
from explainer.stages.runs import codec

EXAMPLES_PATH = Path(__file__).resolve().parents[1] / "llm" / "evaluation" / "examples.json"


@lru_cache(maxsize=1)
def _measured() -> dict:
    try:
        return json.loads(EXAMPLES_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"examples": [], "settings": {}}


def example_scenarios() -> list[Scenario]:
    data = _measured()
    max_tokens = int(data.get("settings", {}).get("max_tokens", 160))
    temperature = float(data.get("settings", {}).get("temperature", 0.7))
    return [Scenario(messages=[{"role": "user", "content": p}], max_tokens=max_tokens, temperature=temperature)
            for p in data.get("examples", [])]


def examples() -> list[dict]:
    """Each example: its prompt, its max_tokens, and its signed scenario blob for a link."""
    return [{"prompt": s.messages[0]["content"], "max_tokens": s.max_tokens, "s": codec().encode(s)}
            for s in example_scenarios()]


def example_links(page, slug: str | None = None) -> list[dict]:
    """The examples as links to a stage (this page's by default), each opening its example scenario."""
    return [{"prompt": s.messages[0]["content"], "max_tokens": s.max_tokens, "url": page.url(slug, scenario=s)}
            for s in example_scenarios()]
