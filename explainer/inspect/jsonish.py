"""Reading recorded JSON, whose shape nothing guarantees: a field as an object or a list, or empty.

Example:
    >>> obj({"usage": {"input_tokens": 3}}.get("usage")), obj("not an object"), items(None)
    ({'input_tokens': 3}, {}, [])
"""
from __future__ import annotations

from typing import Any


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []
