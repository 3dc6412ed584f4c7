"""Streaming: the reply travels back as a series of small events, one text delta at a time.

The page shows the recorded run's events as the API would put them on the wire (Server-Sent
Events), rendered on the server so they are there before anything runs, and a Play button
that runs the same request live over ``ws/stream/`` with the same seed, so the live text
matches the recorded one. The pace (a view option) slows the socket down for humans; the
engine never waits, and its own timings are reported beside the ones the browser measures.
"""
from __future__ import annotations

import json
from collections import Counter

from explainer.lifecycle import frames as fr
from explainer.lifecycle.figures import compact_json, run_figures, sse_text, text_figures
from explainer.stages.options import ChoiceOption, IntOption
from explainer.stages.words import stop_reason_in_words, token_label
from explainer.web.sockets import MAX_PACE_MS

PACE_MAX = min(500, MAX_PACE_MS)
DATA = {"request-body": "request_body", "stream-config": "stream_config"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS = {
    "pace": IntOption(150, 0, PACE_MAX, "milliseconds the socket pauses after each token"),
    "frames": ChoiceOption("all", ("all", "api")),
}


def sse(event: dict) -> dict:
    """One event as the API writes it on the wire: an ``event:`` line and a ``data:`` line of compact JSON
    (its bytes counted by figures.sse_text, as every page counts them)."""
    return {"name": event["type"], "data": compact_json(event), "bytes": text_figures(sse_text(event), 0).bytes}


def token_gist(step: dict, label=None) -> dict:
    """An explainer.token frame without its bulk (the page's script shows live frames the same way).
    ``label(id)`` names a token from its bytes (words.token_label: a byte of a cut character is ‹E4›)."""
    top = step["candidates"][0]
    name = (lambda c: label(c["token"])) if label else (lambda c: c["text"])
    return {"index": step["index"], "token": step["token"], "text": name(step), "piece": step["piece"], "ms": step["ms"],
            "candidates": f"[{len(step['candidates'])}; top {json.dumps(name(top), ensure_ascii=False)} p={top['final_probability']}]"}


def explainer_line(name: str, data: dict) -> dict:
    return {"name": name, "data": json.dumps(data, ensure_ascii=False, separators=(",", ":")), "explainer": True}


def transcript(run, label=None) -> list[dict]:
    """The recorded run's frames in the order the socket sent them: API events as SSE, with the
    explainer's token frames put back before the text delta each one produced."""
    out, steps, si = [], run.steps, 0
    for raw in run.events:
        if raw["type"] == fr.CONTENT_BLOCK_DELTA:
            while si < len(steps) and not steps[si]["piece"]:
                out.append(explainer_line("explainer.token", token_gist(steps[si], label)))
                si += 1
            if si < len(steps):
                out.append(explainer_line("explainer.token", token_gist(steps[si], label)))
                si += 1
        elif raw["type"] == fr.CONTENT_BLOCK_STOP:
            out += [explainer_line("explainer.token", token_gist(st, label)) for st in steps[si:]]
            si = len(steps)
        line = sse(raw)
        if raw["type"] == fr.MESSAGE_START:
            line["note"] = f"input_tokens: {raw['message']['usage']['input_tokens']}, known before any output"
        elif raw["type"] == fr.MESSAGE_DELTA:
            line["note"] = f"output_tokens: {raw['usage']['output_tokens']}, known only now, at the end"
        out.append(line)
    if run.done:
        out.append(explainer_line("explainer.done", run.done))
    return out


def sdk_args(page) -> dict:
    """The pieces of the SDK example that come from the scenario (the template writes the code)."""
    s = page.scenario
    extra = {"temperature": s.temperature}
    if s.top_k is not None:
        extra["top_k"] = s.top_k
    if s.top_p is not None:
        extra["top_p"] = s.top_p
    return {"model": json.dumps(s.model, ensure_ascii=False), "max_tokens": s.max_tokens,
            "n_messages": len(s.messages), "extra_body": json.dumps(extra)}


def context(page) -> dict:
    run, s = page.run, page.scenario
    events = transcript(run, lambda t: token_label(page.engine.tokenizer, t))
    done = run.done or {}
    figures = run_figures(run, page.engine.max_prompt_tokens)  # the one count of events and deltas every page shows
    return {
        "wide": False,
        "events": events,
        "figures": figures,
        "n_api_events": figures["events"],
        "wire_bytes": figures["wire_bytes"],
        "n_deltas": figures["deltas"],
        "recorded_text": run.text,
        "text_characters": text_figures(run.text, len(run.steps)).characters,
        # the text as its deltas carried it, one piece each (they join up to the text)
        "pieces": [e["delta"]["text"] for e in run.events
                   if e["type"] == fr.CONTENT_BLOCK_DELTA and e["delta"].get("type") == fr.TEXT_DELTA],
        "done": done,
        # "stopped: reached max_tokens, the limit you set": the reason in words (the page's script says the same)
        "stop_words": stop_reason_in_words(done.get("stop_reason")),
        "usage": done.get("usage"),
        "timings": done.get("timings"),
        "pace_max": PACE_MAX,
        "request_body": s.request_body(),
        "stream_config": {
            "seed": s.seed, "pace": page.opts["pace"], "pace_default": OPTIONS["pace"].default, "frames": page.opts["frames"], "pace_max": PACE_MAX,
            "recorded_text": run.text,
            "figures": {k: figures[k] for k in ("events", "deltas", "text_deltas", "wire_bytes", "input_tokens",
                                                "output_tokens", "refused", "status")},
        },
        "sdk": sdk_args(page),
    }


EVENT_ORDER = ("message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop",
               "message_delta", "message_stop")


def recap(page) -> dict:
    """Streaming's card on the recap: how many events of each type carried the reply, in the order they come."""
    counts = Counter(e["type"] for e in page.run.events)
    order = sorted(counts.items(), key=lambda kv: EVENT_ORDER.index(kv[0]) if kv[0] in EVENT_ORDER else len(EVENT_ORDER))
    return {"event_counts": order}
