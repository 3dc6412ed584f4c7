"""The Conversation stage's use of the serving model beyond the conversation itself: counting a request's prompt
as count_tokens does, and asking the model for a summary of the older turns (the "summarise" strategy), cut to
fit its window and kept per transcript.
"""
from __future__ import annotations

from explainer.lifecycle import lru
from explainer.lifecycle.engine import run_request
from explainer.lifecycle.payload import parse_request

SUMMARY_MAX_TOKENS = 40
SUMMARY_SYSTEM = "You write short, factual summaries of conversations."
SUMMARY_ASK = "Summarise this conversation in two sentences:\n\n"


# ---- the serving model as counter and summariser ----------------------------------------------

def counter(engine, model: str):
    """``count(system, messages)``: the prompt tokens of that request, exactly as count_tokens counts them."""
    def count(system, messages):
        body = {"model": model, "messages": messages}
        if system:
            body["system"] = system
        return len(engine.prompt_ids(parse_request(body, counting=True)))
    return count


_SUMMARIES = lru.LRU("conversation page: summaries")  # bounded by bytes (keys hold the transcripts)


def summary_request(engine, model: str, older: list[dict]) -> tuple[dict, int]:
    """The request that asks the model for a summary, cut to fit its window.

    The transcript loses its oldest lines first, then (if one line alone is too long) its
    oldest characters; returns the body and how many of the older messages it still covers.
    """
    lines = [f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in older]
    limit = engine.max_prompt_tokens - SUMMARY_MAX_TOKENS

    def body_of(text):
        return {"model": model, "max_tokens": SUMMARY_MAX_TOKENS, "temperature": 0, "system": SUMMARY_SYSTEM,
                "messages": [{"role": "user", "content": SUMMARY_ASK + text}]}

    def size(text):
        return len(engine.prompt_ids(parse_request(body_of(text))))

    while len(lines) > 1 and size("\n".join(lines)) > limit:
        lines = lines[1:]
    text = "\n".join(lines)
    if size(text) > limit:  # one very long turn: keep its end
        lo, hi = 0, len(text)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if size(text[mid:]) <= limit else (mid + 1, hi)
        text = text[lo:]
    return body_of(text), len(lines)


def summarise_with_model(engine, model: str, older: list[dict]) -> dict:
    """Run the summary request on the engine's model (temperature 0: the same summary every time)."""
    key = (model, engine.name, engine.loaded.fingerprint, tuple((m["role"], m["content"]) for m in older))
    cached = _SUMMARIES.get(key)
    if cached is not None:
        return cached
    body, covered = summary_request(engine, model, older)
    run = run_request(engine, body, seed=0)
    usage = (run.done or {}).get("usage") or {}
    info = {
        "text": run.text.strip(), "body": body, "covered": covered, "of": len(older), "error": run.error,
        "input_tokens": len(run.prompt_ids), "output_tokens": usage.get("output_tokens", 0),
        "stop_reason": (run.done or {}).get("stop_reason"),
    }
    _SUMMARIES.put(key, info)
    return info
