"""Words a learner reads instead of the API's names: a stop reason said in words, the API's name kept
beside it. ``static/js/lib/text.js`` (``stopReasonInWords``) says the same in the browser; a test checks
both lists agree."""
from __future__ import annotations

STOP_WORDS = {
    "end_turn": "the model chose to stop (end_turn)",
    "max_tokens": "reached max_tokens, the limit you set",
    "stop_sequence": "hit one of your stop sequences (stop_sequence)",
    "tool_use": "the model called a tool (tool_use)",
    "model_context_window_exceeded": "the context window is full (model_context_window_exceeded)",
    "refusal": "the model refused (refusal)",
    "pause_turn": "the turn was paused (pause_turn)",
}


def stop_reason_in_words(reason: str | None) -> str | None:
    return None if reason is None else STOP_WORDS.get(reason, reason)
