"""Overview: the pipeline as one picture, and a Send button that runs the scenario live over ws/stream/."""
from explainer.stages.examples import example_links
from explainer.stages.registry import BY_SLUG, REQUEST_STEPS

DATA = {"request-body": "request_body"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS: dict = {}


def context(page) -> dict:
    s = page.scenario
    last_user = next((m["content"] for m in reversed(s.messages) if m["role"] == "user" and isinstance(m["content"], str)), "")
    return {
        "pipeline": [{"slug": x, "title": BY_SLUG[x].title, "summary": BY_SLUG[x].summary, "number": BY_SLUG[x].number,
                      "url": page.url(x)} for x in REQUEST_STEPS],
        "prompt_text": last_user,
        "request_body": s.request_body(),
        "examples": example_links(page) if page.engine.loaded.bundled else [],  # measured on the bundled model's replies
    }
