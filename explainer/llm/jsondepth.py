"""How deeply a JSON value nests, measured without recursion: the app's one depth limit.

The schema compiler of constrained decoding (``explainer.llm.constrained``) refuses a schema
nested deeper than :data:`MAX_JSON_DEPTH` before ``json.dumps``, ``jsonschema`` or the
compiler itself could recurse into it. The limit and its check live here, in the model core,
because the core imports nothing of the lifecycle; ``explainer.lifecycle.jsonlimits`` (the
limit on every JSON document the app reads) uses the same names from here.

This module imports nothing but the standard library.

Example:
    >>> depth_of([[[]]])
    3
    >>> check_depth({"a": [1, 2]})
    {'a': [1, 2]}
"""
from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 32


class TooDeep(ValueError):
    """A JSON document (or value) nests deeper than the limit; the message is safe to show."""

    def __init__(self, limit: int = MAX_JSON_DEPTH, what: str = "arrays and objects"):
        super().__init__(f"{what} nest deeper than {limit} levels")
        self.limit = limit


def depth_of(value: Any, limit: int | None = None) -> int:
    """How deeply lists/tuples/dicts nest in ``value`` (a scalar is 0, ``[]`` is 1); iterative.

    With ``limit``, raises :class:`TooDeep` as soon as the depth passes it (a value that
    contains itself therefore raises instead of looping forever).
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            continue
        d += 1
        if limit is not None and d > limit:
            raise TooDeep(limit)
        if d > deepest:
            deepest = d
        stack.extend((c, d) for c in children if isinstance(c, (dict, list, tuple)))
    return deepest


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> Any:
    """``value`` itself when it nests at most ``limit`` deep; else :class:`TooDeep`. Iterative."""
    depth_of(value, limit)
    return value
