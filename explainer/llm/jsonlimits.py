"""One depth limit for every JSON document the app accepts, and the scans that enforce it without recursion.

Python's ``json`` module, ``json.dumps``, ``dataclasses.asdict``, ``jsonschema`` and the
schema compiler all recurse once per level of nesting, so a few kilobytes of ``[[[[…`` can
raise ``RecursionError`` anywhere downstream (a 500, or a WebSocket closed with 1011). Every
JSON the app reads from outside (API bodies, WebSocket frames, scenario links) goes through
:func:`loads`, which refuses a document nested deeper than :data:`MAX_JSON_DEPTH` arrays and
objects *before* parsing it, with one linear scan that never recurses. Values that were
parsed elsewhere, or built in code (a tool's schema, before constrained decoding compiles it),
are checked with :func:`check_depth` (iterative).

Real documents stay far below the limit: a Messages API body with a tool whose
``input_schema`` nests ten objects deep is about 25 levels. The module lives in the model core
because the core's schema compiler needs it and the core imports nothing of the lifecycle; it
imports nothing but the standard library and numpy.

Example:
    >>> loads('{"a": [1, {"b": "[[[["}]}')
    {'a': [1, {'b': '[[[['}]}
    >>> depth_of([[[]]])
    3
    >>> check_depth({"a": [1, 2]})
    {'a': [1, 2]}
    >>> try:
    ...     loads("[" * 40 + "]" * 40)
    ... except TooDeep as exc:
    ...     print(exc)
    arrays and objects nest deeper than 32 levels
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

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
        children: Iterable[Any]
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


# A string; its end quote may be missing (an unterminated string runs to the end of the text),
# so the pattern always matches once it starts and the regex engine never backtracks over it.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.S)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1


def check_text(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise :class:`TooDeep` if the arrays/objects in the JSON ``text`` nest deeper than ``limit``.

    Drops the strings (one regex pass), keeps the brackets outside them and takes the running
    sum of +1/-1 with numpy: linear in the length of the text (about 10 ms per MB), never
    recursive. It does not check that the text is valid JSON (``json.loads`` does that).
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = _decode(bytes(text))
    if text.count("[") + text.count("{") <= limit:  # cannot nest deeper than it has brackets
        return
    brackets = _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKETS)
    if brackets and int(np.cumsum(_STEP[np.frombuffer(brackets, np.uint8)], dtype=np.int64).max()) > limit:
        raise TooDeep(limit)


def loads(text: str | bytes, limit: int = MAX_JSON_DEPTH, **kwargs: Any) -> Any:
    """``json.loads`` that refuses documents nested deeper than ``limit`` before parsing them
    (``kwargs`` go to ``json.loads``: ``parse_float``, ``parse_constant``…).

    Raises :class:`TooDeep` (a ``ValueError``) for too deep a document and
    ``json.JSONDecodeError`` (also a ``ValueError``) for invalid JSON. Never ``RecursionError``.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = _decode(bytes(text))
    check_text(text, limit)
    try:
        return json.loads(text, **kwargs)
    except RecursionError:  # cannot happen below the limit; kept so that it never escapes
        raise TooDeep(limit) from None


def _decode(raw: bytes) -> str:
    """Bytes as ``json.loads`` reads them (UTF-8, or UTF-16/32 told by the first bytes)."""
    return raw.decode(json.detect_encoding(raw), "surrogatepass")
