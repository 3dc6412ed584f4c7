"""Compose: the scenario as the exact request an app sends (JSON body, headers, curl / Python / TypeScript),
validated by the same code that answers /v1/messages, with the error body the API would return."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict

from django.urls import reverse

from explainer.lifecycle.errors import STATUS, APIError
from explainer.lifecycle.figures import body_figures, run_figures
from explainer.lifecycle.payload import MAX_STOP_SEQUENCES, parse_request
from explainer.lifecycle.snippets import json_text, snippets
from explainer.stages.examples import example_links
from explainer.stages.options import ChoiceOption
from explainer.stages.registry import BY_SLUG

log = logging.getLogger(__name__)

SNIPPETS = (("curl", "curl"), ("python", "Python SDK"), ("typescript", "TypeScript SDK"))
DATA = {"compose-data": "compose_data"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS = {"snippet": ChoiceOption("curl", tuple(k for k, _ in SNIPPETS))}

# Common mistakes, each applied to the current body and answered by the real validator.
MISTAKES = (
    ("The first turn is the assistant's", "messages",
     lambda b, s: {**b, "messages": [{"role": "assistant", "content": "Hello! How can I help?"}, *b.get("messages", [])]}),
    ("The system prompt sent as a message", "messages",
     lambda b, s: {**b, "messages": [{"role": "system", "content": s.system or "You are a helpful assistant."}, *b.get("messages", [])]}),
    ("max_tokens left out", "max_tokens", lambda b, s: {k: v for k, v in b.items() if k != "max_tokens"}),
    ("max_tokens of 0", "max_tokens", lambda b, s: {**b, "max_tokens": 0}),
    ("temperature above 1", "temperature", lambda b, s: {**b, "temperature": 1.5}),
    ("The explainer's seed sent to the API", "seed", lambda b, s: {**b, "seed": s.seed}),
)

# Values the scenario cannot hold (the permalink keeps only what the API could accept), probed on a
# minimal valid body so the browser can show the API's own answer before anything is sent.
_MINIMAL = {"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
FIELD_PROBES = {
    "max_tokens_missing": lambda b: {k: v for k, v in b.items() if k != "max_tokens"},
    "max_tokens_int": lambda b: {**b, "max_tokens": 1.5},
    "max_tokens_min": lambda b: {**b, "max_tokens": 0},
    "temperature": lambda b: {**b, "temperature": 1.5},
    "top_p": lambda b: {**b, "top_p": 0},
    "top_k": lambda b: {**b, "top_k": -1},
}


def _answer(body: dict) -> dict | None:
    """The API's error body for ``body``, or None if it would be accepted."""
    try:
        parse_request(body)
    except APIError as exc:
        return exc.body()
    return None


def _stop_text(stops: list[str]) -> str:
    """Stop sequences for a one-per-line box: a backslash and a line break are written as \\\\ and \\n."""
    return "\n".join(s.replace("\\", "\\\\").replace("\n", "\\n") for s in stops)


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))


def _mistakes(body: dict, s) -> list[dict]:
    """The common mistakes, each applied to this body and answered by the real validator (those it accepts left out)."""
    mistakes = []
    for title, field, change in MISTAKES:
        try:
            err = _answer(change(body, s))
        except Exception:  # a mistake that cannot be built for this body is left out, never a 500
            log.exception("compose mistake %r", title)
            continue
        if err:
            changed = change(body, s)
            shown = {field: changed[field]} if field in changed else {}
            mistakes.append({"title": title, "field": field, "change": json_text(shown) if shown else f'no "{field}" field',
                             "status": STATUS[err["error"]["type"]], "error": json_text(err)})
    return mistakes


def _verdict(run, body: dict) -> dict | None:
    """What the validator says of the request: its 400, or how its turns were read."""
    if run.error:
        return {"ok": False, "status": STATUS[run.error["error"]["type"]], "error": json_text(run.error),
                "type": run.error["error"]["type"], "message": run.error["error"]["message"]}
    if run.request is not None:
        return {"ok": True, "turns": len(body["messages"]), "merged": len(run.request.messages),
                "prefill": run.request.prefill is not None}
    return None


def context(page) -> dict:
    s, run = page.scenario, page.run
    body = s.request_body()
    mistakes = _mistakes(body, s)
    field_errors = {name: _answer(probe(dict(_MINIMAL))) for name, probe in FIELD_PROBES.items()}
    verdict = _verdict(run, body)
    code = snippets(body)
    figures = run_figures(run, page.engine.max_prompt_tokens)  # the one count every page shows (bytes, tokens, refusal)
    return {
        "figures": figures,
        "examples": example_links(page) if page.engine.loaded.bundled else [],  # measured on the bundled model's replies
        "wide": True,
        "body_json": json_text(body),
        "body_figures": body_figures(body),  # characters and UTF-8 bytes of the compact JSON the SDKs send
        "input_tokens": len(run.prompt_ids) if run.prompt_ids else None,
        "context_window": page.engine.context_window,
        "output_tokens": run.done["usage"]["output_tokens"] if run.done else None,
        "verdict": verdict,
        "turns": [{"role": m.get("role"), "text": _text_of(m.get("content", ""))} for m in s.messages],
        "stop_text": _stop_text(s.stop_sequences),
        "snippets": [{"key": k, "label": label, "code": code[k], "selected": k == page.opts["snippet"]} for k, label in SNIPPETS],
        "mistakes": mistakes,
        "sampling_url": page.url("sampling") if BY_SLUG["sampling"].built else None,
        "compose_data": {
            "fields": asdict(s),
            "field_errors": field_errors,
            "encode_url": "/scenario/encode",
            "page_url": reverse("stage", args=["compose"]),
            "max_stop_sequences": MAX_STOP_SEQUENCES,
            "figures": {k: figures[k] for k in ("body_bytes", "body_characters", "input_tokens", "output_tokens", "refused", "status")},
        },
    }


def recap(page) -> dict:
    """Compose's row and card on the recap: the body's size, and the body."""
    body = page.scenario.request_body()
    return {"body": body_figures(body), "body_json": json.dumps(body, indent=2, ensure_ascii=False)}
