"""Recap: the current scenario through every stage on one page, each part linking to its stage.

The rows and cards are the registry's request steps, in order: each stage's page module may give its
figures for the recap (``recap(page) -> dict``), shown by its own ``templates/stages/recap/<slug>.html``
(``part`` is "row" or "card", ``r`` its figures). This module adds only what every row reads: the run's
figures (the one count every page shows), the prompt's length and the run's end."""
from __future__ import annotations

from typing import TypedDict

from explainer.lifecycle.figures import run_figures
from explainer.stages.registry import BY_SLUG, REQUEST_STEPS
from explainer.stages.words import stop_reason_in_words

OPTIONS: dict = {}


class RecapStep(TypedDict):
    """One request step's row and card."""
    slug: str
    title: str
    number: int | None
    url: str
    template: str  # templates/stages/recap/<slug>.html
    recap: dict  # the stage's own figures: its page module's recap(page), or nothing


def _step(page, slug: str) -> RecapStep:
    st = BY_SLUG[slug]
    own = getattr(st.page, "recap", None)
    return {"slug": slug, "title": st.title, "number": st.number, "url": page.url(slug),
            "template": f"stages/recap/{slug}.html", "recap": own(page) if own else {}}


def context(page) -> dict:
    run = page.run
    figures = run_figures(run, page.engine.max_prompt_tokens)  # the one count every page shows (events, bytes, tokens)
    return {
        "figures": figures,
        "n_prompt": len(run.prompt_ids or []),
        "done": run.done,
        "event_total": figures["events"],
        "stop_words": stop_reason_in_words(run.done["stop_reason"]) if run.done else None,
        "request_steps": [_step(page, slug) for slug in REQUEST_STEPS],
        "links": {slug: page.url(slug) for slug in REQUEST_STEPS},
    }
