"""Overview: the pipeline as one picture, and a Send button that runs the scenario live over ws/stream/."""
from explainer.stages.examples import example_links
from explainer.stages.registry import BY_SLUG, REQUEST_STEPS

OPTIONS: dict = {}


def context(page) -> dict:
    s = page.scenario
    last_user = next((m["content"] for m in reversed(s.messages) if m["role"] == "user" and isinstance(m["content"], str)), "")
    return {
        "pipeline": [BY_SLUG[x] for x in REQUEST_STEPS if x != "recap"],
        "prompt_text": last_user,
        "request_body": s.request_body(),
        "wide": True,
        "examples": example_links(page),
    }
