"""A refused request is refused everywhere (issue 21, item 4): with a prompt over the model's window, every stage
says what did not happen, as the engine's actual outcome has it, and none says what a run would have done
(Recap's "scored all 4,096 tokens", Conversation's follow-up to a reply that does not exist).

Two refusals, both the engine's own 400: a prompt the server cut into tokens and counted over the window, and
one so long that it is refused on its length before it is cut at all. (The overview's live journey is checked
in the browser: tests/browser/test_overview_figures.py.)"""
from __future__ import annotations

import html as htmllib
import re

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.registry import STAGES
from explainer.stages.runs import engine, run_of
from tests.urls import stage_data, stage_url

pytestmark = pytest.mark.django_db

COUNTED = Scenario(messages=[{"role": "user", "content": "index " * 900}])  # cut into tokens, then refused
UNCOUNTED = Scenario(messages=[{"role": "user", "content": "x" * 60_000}])  # refused on its length before any BPE
REFUSED = {"counted": COUNTED, "uncounted": UNCOUNTED}
BUILT = [s.slug for s in STAGES if s.built]

# What a page must never say of a request that was refused: things only a run does.
NEVER = [
    r"scored all", r"It passes", r"passed the key", r"Send a follow-up", r"Its favourites for the first token",
    r"\d+ draws? at temperature", r"output tokens; stopped because", r"would accept this request",
    r"needs 0 input tokens", r"become 0 tokens", r"(?<![\d,])0 input tokens[:,]",
    r"events, first token after", r"The reply travelled back",
]


def text_of(html: str) -> str:
    """The page as a person reads it: no scripts, no tags, one space between words."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    html = re.sub(r"</?(code|strong|span|a|em|small|q|output)\b[^>]*>", "", html)  # inline: no space of their own
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", html)))


def main_visual(html: str) -> str:
    start = html.index('id="main-visual"')
    return text_of(html[start:html.index('<div class="scenario-bar">', start)])  # what _stage.html puts after it


def outcome(s: Scenario) -> dict:
    """The engine's actual outcome, which every page must agree with."""
    run = run_of(s)
    assert run.error is not None and run.error["error"]["type"] == "invalid_request_error"
    assert run.done is None and run.steps == [] and run.events == []
    return {"message": run.error["error"]["message"], "n": len(run.prompt_ids), "max": engine().max_prompt_tokens}


def test_the_two_refusals_are_the_engine_s_own():
    counted, uncounted = outcome(COUNTED), outcome(UNCOUNTED)
    assert counted["n"] > counted["max"] and counted["message"] == f"prompt is too long: {counted['n']} tokens > {counted['max']} maximum"
    assert uncounted["n"] == 0 and uncounted["message"].startswith("prompt is too long: at least ")


@pytest.mark.parametrize("kind", REFUSED)
@pytest.mark.parametrize("slug", BUILT)
@pytest.mark.slow
def test_no_stage_says_what_did_not_happen(client, slug, kind):
    s = REFUSED[kind]
    r = client.get(stage_url(slug, s))
    assert r.status_code == 200
    page = text_of(r.content.decode())
    said = [p for p in NEVER if re.search(p, page)]
    assert not said, (slug, said)
    # and each says it was refused, in the engine's words or its status
    o = outcome(s)
    assert o["message"] in page or "400" in page, slug


@pytest.mark.parametrize("kind", REFUSED)
@pytest.mark.slow
def test_each_stage_says_what_did_not_happen(client, kind):
    s = REFUSED[kind]
    o = outcome(s)
    pages = {slug: client.get(stage_url(slug, s)).content.decode() for slug in BUILT}
    main = {slug: main_visual(h) for slug, h in pages.items()}
    text = {slug: text_of(h) for slug, h in pages.items()}

    # Recap: row by row, what did not run
    recap = main["recap"]
    assert "refused with 400 invalid_request_error: no model ran" in recap
    assert "did not run: nothing was scored" in recap
    assert "nothing drawn: the model did not run" in recap
    assert "no stream: the API answers with the 400 error body instead" in recap
    assert "nothing generated, nothing billed" in recap
    if kind == "counted":
        assert f"{o['n']} tokens counted, more than the {o['max']} a prompt may use: the model never read them" in recap
    else:
        assert "not tokenized: the request was refused first" in recap
    assert "This request was refused, so the model never ran: nothing was scored." in text["recap"]
    assert "Nothing was drawn: the model never ran" in text["recap"]

    # Compose: the verdict says the engine's count when there is one, and that nothing runs or is billed
    assert "The API would answer 400 invalid_request_error" in text["compose"]
    assert "nothing is generated, and nothing is billed" in text["compose"]
    if kind == "counted":
        assert f"to count it: {o['n']}, more than the {o['max']} a prompt may use" in text["compose"]

    # Gateway: the format check refuses it, and the checks after it are not reached
    checks = main["gateway"]
    assert "400 invalid_request_error" in checks and checks.count("not reached") == 3 and "fire a request" not in checks

    # Conversation: no reply, so no follow-up
    conv = pages["conversation"]
    if kind == "counted":
        assert f"One request so far: {o['n']} input tokens, over the {o['max']}-token limit, so the API refuses it: " \
               "no reply came back, so there is nothing to follow up" in main["conversation"]
        assert re.search(r'<button type="submit" id="send"[^>]* disabled', conv)
        assert re.search(r'<textarea id="next-message"[^>]* disabled', conv)
    else:
        assert "too long for the 512-token window however it is cut" in main["conversation"]
        assert "nothing to do with its length" not in text["conversation"]
        assert o["message"] in text["conversation"]

    # the stages that never ran say so in their picture
    assert "No stream" in main["streaming"]
    assert "nothing to cache" in main["caching"]
    assert "No forward pass to show" in main["transformer"]
    assert "No tokens to sample" in main["sampling"]
    if kind == "counted":
        assert "the model never reads them" in main["tokenize"]
    else:  # no "0 tokens long": it was never cut into tokens
        assert "refuses this request before it is cut into tokens" in main["tokenize"] and " 0 " not in main["tokenize"]
    assert "The API refuses request 1 with a 400" in main["tools"] and "none: the 400 error body instead" in main["tools"]
    assert "The API would refuse this request" in text["overview"]


@pytest.mark.parametrize("kind", REFUSED)
def test_every_stage_s_data_says_it_was_refused(client, kind):
    s = REFUSED[kind]
    o = outcome(s)
    journey = stage_data(client, "overview", s)["journey-figures"]
    assert journey["refused"] and journey["status"] == 400 and not journey["ran"]
    assert journey["events"] == journey["deltas"] == journey["draws"] == 0 and journey["output_tokens"] is None
    assert journey["input_tokens"] == (o["n"] or None) and journey["over_window"] == (kind == "counted")
    for slug, figures in {
        "compose": stage_data(client, "compose", s)["compose-data"]["figures"],
        "gateway": stage_data(client, "gateway", s)["gateway-sim"]["figures"],
        "streaming": stage_data(client, "streaming", s)["stream-config"]["figures"],
    }.items():
        assert figures["refused"] and figures["status"] == 400 and figures["output_tokens"] is None, slug
        assert figures["input_tokens"] == journey["input_tokens"], slug


@pytest.mark.slow
def test_a_conversation_refused_at_its_last_request_offers_no_follow_up(client):
    """Several requests, the last over the window: the earlier replies exist, the last one does not."""
    from tests.test_stage_conversation import START, to_the_limit

    s = to_the_limit(START)
    html = client.get(stage_url("conversation", s)).content.decode()
    main = main_visual(html)
    assert "so the API refuses it" in main and "Send a follow-up" not in text_of(html)
    assert re.search(r'<button type="submit" id="send"[^>]* disabled', html)
