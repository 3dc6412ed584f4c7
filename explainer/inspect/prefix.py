"""A request's cache prefix, as the API builds its cache key: the tools, then the system prompt, then the
messages, read as leaves (a JSON path and its text) in that order, with the ``cache_control`` breakpoints among
them; and where two requests' prefixes first differ (the path, the character, the words around it).

Example:
    >>> first_difference(leaves({"system": "at 10:00"}), leaves({"system": "at 10:05"}))["path"]
    'system'
"""
from __future__ import annotations

import json
from typing import Any, TypedDict

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
AROUND = 24  # characters shown on each side of a first difference


# ---- the prefix: tools, then system, then messages, as leaves in order -------------------------------------------


def leaves(body: Any) -> list[tuple[str, str]]:
    """Every leaf of the cached part of a body, in the order the cache key reads it: ``(JSON path, text)``.

    ``cache_control`` itself is not part of the prefix's content and is left out.

    Example:
        >>> leaves({"system": [{"type": "text", "text": "Hi"}], "messages": [{"role": "user", "content": "Yo"}]})
        [('system[0].type', 'text'), ('system[0].text', 'Hi'), ('messages[0].role', 'user'), ('messages[0].content', 'Yo')]
    """
    out: list[tuple[str, str]] = []
    if not isinstance(body, dict):
        return out
    for key in ("tools", "system", "messages"):
        if key in body and body[key] is not None:
            _walk(body[key], key, out)
    return out


def _walk(value: Any, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k != "cache_control":
                _walk(v, f"{path}.{k}", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{path}[{i}]", out)
    else:
        out.append((path, value if isinstance(value, str) else json.dumps(value)))


class Breakpoint(TypedDict):
    path: str  # the block that carries cache_control
    ttl: str  # "5m" or "1h"
    leaves: int  # how many leaves the cached prefix holds (it ends after this block)


def breakpoints(body: Any) -> list[Breakpoint]:
    """The ``cache_control`` breakpoints of a body in prefix order: on a tool, a system block, or a message's block."""
    found: list[Breakpoint] = []
    if not isinstance(body, dict):
        return found
    count = 0

    def visit(block: Any, path: str) -> None:
        nonlocal count
        before: list[tuple[str, str]] = []
        _walk(block, path, before)
        count += len(before)
        cc = block.get("cache_control") if isinstance(block, dict) else None
        if isinstance(cc, dict):
            ttl = str(cc.get("ttl")) if cc.get("ttl") in TTL_SECONDS else "5m"
            found.append({"path": path, "ttl": ttl, "leaves": count})

    for key in ("tools", "system", "messages"):
        part = body.get(key)
        if isinstance(part, str):
            count += 1
        elif isinstance(part, list):
            for i, item in enumerate(part):
                if key != "messages":
                    visit(item, f"{key}[{i}]")
                    continue
                if not isinstance(item, dict):
                    continue
                for k, v in item.items():  # role, then content (a string, or blocks that may carry cache_control)
                    if k == "content" and isinstance(v, list):
                        for j, block in enumerate(v):
                            visit(block, f"messages[{i}].content[{j}]")
                    elif k != "cache_control":
                        sub: list[tuple[str, str]] = []
                        _walk(v, f"messages[{i}].{k}", sub)
                        count += len(sub)
    return found


class Difference(TypedDict):
    leaf: int  # index of the first leaf that differs
    path: str
    offset: int  # character offset inside that leaf's text
    common_chars: int  # characters of the prefix the two share before it
    before: str  # the earlier call's text around the difference
    after: str  # this call's text around it
    was: str  # the changed part, as it was
    now: str  # and as it is


def first_difference(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> Difference | None:
    """Where ``b``'s prefix first departs from ``a``'s; None when one is a prefix of the other (in leaves).

    Example:
        >>> d = first_difference([("system", "Time: 10:00. Be brief.")], [("system", "Time: 10:05. Be brief.")])
        >>> d["offset"], d["was"], d["now"]
        (10, '10:00.', '10:05.')
    """
    common = 0
    for i, ((pa, ta), (pb, tb)) in enumerate(zip(a, b)):
        if pa == pb and ta == tb:
            common += len(ta)
            continue
        if pa != pb:  # the structure changed here (a field or block added, removed or moved)
            return {"leaf": i, "path": pb, "offset": 0, "common_chars": common, "before": f"{pa}: {clip(ta)}",
                    "after": f"{pb}: {clip(tb)}", "was": pa, "now": pb}
        off = _common_prefix_len(ta, tb)
        was, now = _changed_words(ta, tb, off)
        return {"leaf": i, "path": pb, "offset": off, "common_chars": common + off,
                "before": _around(ta, off), "after": _around(tb, off), "was": was, "now": now}
    return None


def common_chars(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> int:
    d = first_difference(a, b)
    if d is not None:
        return d["common_chars"]
    return sum(len(t) for _, t in a[:min(len(a), len(b))])


def _common_prefix_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _changed_words(a: str, b: str, off: int) -> tuple[str, str]:
    """The differing stretch of two texts, widened to whole words (``10:00`` and ``10:05``, not ``0`` and ``5``)."""
    tail = 0
    while tail < min(len(a), len(b)) - off and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    start = off
    while start > 0 and not a[start - 1].isspace():
        start -= 1

    def end_of(s: str) -> int:
        e = max(len(s) - tail, off)
        while e < len(s) and not s[e].isspace():
            e += 1
        return e
    return clip(a[start:end_of(a)]), clip(b[start:end_of(b)])


def _around(text: str, off: int) -> str:
    lo, hi = max(0, off - AROUND), min(len(text), off + AROUND)
    return ("…" if lo else "") + text[lo:hi] + ("…" if hi < len(text) else "")


def around_at(text: str, off: int) -> int:
    """Where ``off`` falls in ``_around(text, off)``: the pages mark the difference from there."""
    return off - max(0, off - AROUND) + (1 if off > AROUND else 0)


def clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n] + "…"
