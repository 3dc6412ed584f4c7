"""View options of a stage page (selected layer, head, token, …): plain query parameters,
checked against the range each stage declares, so a hand-edited URL gets a clear 400.

Every view option of every page is read here, and nowhere else, by the same rules:

- a whole number is ASCII digits with one optional sign (``-3``, ``+3``), nothing more: no
  Unicode digits (``²``, ``٣``, ``５``, which ``str.isdigit()`` calls digits and ``int()`` may
  refuse or read), no spaces, exponents, underscores, hex or decimals;
- a decimal is the same with an optional point and up to four decimals (``0.7``), never
  ``nan``, ``inf`` or ``1e3``;
- a value longer than ``MAX_OPTION_CHARS`` is refused before it is read, and a whole number
  with no upper bound of its own is still at most ``MAX_WHOLE`` (the page checks the real
  bound once the run is known);
- an empty value (``?k=``) is the same as no value: the option's default;
- a key given more than once (``?k=1&k=2``, ``?k=&k=x``) is refused, whatever the values:
  a link the pages make never repeats a key (they set options with ``URLSearchParams.set``),
  so a repeated one was edited by hand, and guessing which value was meant would show a page
  that no one asked for. The scenario ``s`` and ``embed`` follow the same rule (:func:`single`).

A refusal is an :class:`OptionError` with one sentence; the views turn it into the page's 400,
or a JSON 400 on ``/data``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_OPTION_CHARS = 24  # longer than any value a page makes: refused unread
MAX_WHOLE = 999_999_999  # a whole number with no bound of its own stays below this
_WHOLE = re.compile(r"[+-]?[0-9]+")  # [0-9], not \d: \d matches every script's digits
_DECIMAL = re.compile(r"[+-]?[0-9]{1,3}(\.[0-9]{1,4})?")


class OptionError(ValueError):
    pass


def single(query, name: str) -> str | None:
    """The one value of ``name`` in a query (a QueryDict, or a plain dict of strings); None when
    absent. A key given more than once is refused (see the module's docstring)."""
    values = query.getlist(name) if hasattr(query, "getlist") else ([query[name]] if name in query else [])
    if len(values) > 1:
        raise OptionError(f"“{name[:40]}” is given {len(values)} times in this link; give it once.")
    return values[0] if values else None


def _too_long(name: str, raw: str) -> None:
    if len(raw) > MAX_OPTION_CHARS:
        raise OptionError(f"“{name}” is too long: at most {MAX_OPTION_CHARS} characters.")


def whole_number(name: str, raw: str, low: int, high: int | None) -> int:
    """``raw`` as a whole number from ``low`` to ``high`` (None: to ``MAX_WHOLE``), or an OptionError."""
    _too_long(name, raw)
    if not _WHOLE.fullmatch(raw):
        raise OptionError(f"“{name}” must be a whole number.")
    v = int(raw)
    if v < low or (high is not None and v > high):
        hi = "" if high is None else f" to {high}"
        raise OptionError(f"“{name}” must be from {low}{hi}; got {v}.")
    if v > MAX_WHOLE:
        raise OptionError(f"“{name}” must be at most {MAX_WHOLE:,}; got {raw}.")
    return v


def decimal_number(name: str, raw: str, low: float, high: float, low_open: bool = False) -> float:
    """``raw`` as a decimal like ``0.7`` from ``low`` (excluded with ``low_open``) to ``high``, or an OptionError."""
    _too_long(name, raw)
    if not _DECIMAL.fullmatch(raw):
        raise OptionError(f"“{name}” must be a number like 0.7.")
    v = float(raw)
    if v < low or v > high or (low_open and v == low):
        lo = f"above {low:g}" if low_open else f"from {low:g}"
        raise OptionError(f"“{name}” must be {lo} to {high:g}; got {raw}.")
    return v


@dataclass(frozen=True)
class IntOption:
    default: int | None
    low: int
    high: int | None = None  # None: no upper bound known until the scenario is computed
    label: str = ""

    def parse(self, name: str, raw: str | None) -> int | None:
        if raw is None or raw == "":
            return self.default
        return whole_number(name, raw, self.low, self.high)


@dataclass(frozen=True)
class OptionalIntOption:
    """A whole number in the query string; absent means "the request's own value" (None)."""

    low: int
    high: int
    default: None = None

    def parse(self, name: str, raw: str | None) -> int | None:
        if raw is None or raw == "":
            return None
        return whole_number(name, raw, self.low, self.high)


@dataclass(frozen=True)
class DecimalOption:
    """A number like ``0.7`` in the query string; absent means "the request's own value" (None)."""

    low: float
    high: float
    low_open: bool = False  # top_p: 0 itself is not allowed
    default: None = None

    def parse(self, name: str, raw: str | None) -> float | None:
        if raw is None or raw == "":
            return None
        return decimal_number(name, raw, self.low, self.high, self.low_open)


@dataclass(frozen=True)
class ChoiceOption:
    default: str
    choices: tuple[str, ...]

    def parse(self, name: str, raw: str | None) -> str:
        if raw is None or raw == "":
            return self.default
        if raw not in self.choices:
            raise OptionError(f"“{name}” must be one of {', '.join(self.choices)}.")
        return raw


def parse_options(declared: dict, query) -> dict:
    """Every declared option's value from ``query`` (a QueryDict, or a plain dict of strings)."""
    return {name: opt.parse(name, single(query, name)) for name, opt in declared.items()}
