"""Overview: the pipeline as one picture, and a Send button that runs the scenario live over ws/stream/."""
from explainer.lifecycle.figures import run_figures
from explainer.stages.examples import example_links
from explainer.stages.registry import BY_SLUG, REQUEST_STEPS

# element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
DATA = {"request-body": "request_body", "journey-figures": "journey_figures"}
OPTIONS: dict = {}


def context(page) -> dict:
    s = page.scenario
    last_user = next((m["content"] for m in reversed(s.messages) if m["role"] == "user" and isinstance(m["content"], str)), "")
    return {
        # the registry's request steps, each with the frames that light it (the script reads them from the page)
        "pipeline": [{"slug": x, "title": BY_SLUG[x].title, "summary": BY_SLUG[x].summary, "number": BY_SLUG[x].number,
                      "lit_by": " ".join(BY_SLUG[x].lit_by), "url": page.url(x)} for x in REQUEST_STEPS],
        "prompt_text": last_user,
        "request_body": s.request_body(),
        # what the journey's notes say when this scenario is sent unchanged: the page's script counts the live
        # run with lib/figures.js, the twin of the function every stage counts with (the same seed, the same run)
        "journey_figures": run_figures(page.run, page.engine.max_prompt_tokens),
        "examples": example_links(page) if page.engine.loaded.bundled else [],  # measured on the bundled model's replies
    }
