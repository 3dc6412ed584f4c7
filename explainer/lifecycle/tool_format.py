"""How tool use is written into the bundled model's text (its chat template has no tool role).

The model was never trained on tools, so the format is plain text, as in the Messages API's
turns: the tool definitions go at the end of the system prompt (:func:`tools_system_prompt`);
a tool call is an assistant turn ``tool_use NAME`` + newline + the JSON input
(:func:`tool_call_text`; the engine forces :data:`TOOL_USE_PREFIX` and decodes the rest under
constraints); a tool result is a user turn (:func:`tool_result_text`).

Example:
    >>> tool_call_text("get_time", '{"timezone":"UTC"}')
    'tool_use get_time\\n{"timezone":"UTC"}'
    >>> tool_result_text("division by zero", is_error=True)
    'tool_result (error): division by zero'
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

TOOL_USE_PREFIX = "tool_use "


def tools_system_prompt(system: str | None, tools: Sequence[Mapping[str, Any]]) -> str:
    """The system prompt with the tool definitions appended, as the model reads them."""
    lines = [system.rstrip(), ""] if system else []
    lines.append("You can call these tools:")
    for t in tools:
        lines.append(f"- {t['name']}: {t.get('description', '')}".rstrip())
        lines.append(f"  input schema: {json.dumps(t['input_schema'], ensure_ascii=False, separators=(',', ':'))}")
    lines.append(f"To call one, answer with `{TOOL_USE_PREFIX}NAME` on one line and its input as JSON on the next.")
    return "\n".join(lines)


def tool_call_text(name: str, input_json: str) -> str:
    """An assistant turn that calls a tool, as it is written back into the history.

    Example: ``tool_call_text("get_time", '{}') == 'tool_use get_time\\n{}'``
    """
    return f"{TOOL_USE_PREFIX}{name}\n{input_json}"


def tool_result_text(content: str, is_error: bool = False) -> str:
    """A user turn carrying a tool's result (the Messages API puts tool_result in a user turn)."""
    return f"tool_result{' (error)' if is_error else ''}: {content}"
