"""A model's chat template, rendered in a sandbox and cut into the parts a page labels.

Chat templates come from the model's folder: they are untrusted Jinja code. They run in Jinja's
``ImmutableSandboxedEnvironment`` (no attribute starting with ``_``, no mutation of the
messages), with the globals and filters ``transformers`` gives them, so a template renders here
exactly as it does in ``tokenizer.apply_chat_template``.

The sandbox keeps a template away from Python's internals, not from the machine's time and memory,
so every render also runs under a budget (:class:`_RenderBudget`) that the template's own code
meets at every step: each loop iteration, call, filter, ``~``, ``+``, ``*``, ``**`` and ``%``, and
each piece of output. Anything that could build a large value (``'x' * 10**8``,
``'x'|center(10**9)``, ``lipsum(n=200000)``, a ``%`` format with a huge width, a list nested into
itself) is refused before it is computed, from its operands' sizes; anything that could run long
(a loop, a recursive macro) meets the clock between steps. The request's own budget
(:mod:`explainer.llm.budget`) is checked at the same places, so a cancelled request stops a render.

To tell the template's own text (role markers, separators) from the conversation's text, the
conversation is rendered with every text replaced by a sentinel, a private-use character around
the text's index; the rendering is then cut at the sentinels. A folder without a template (GPT-2)
gets :data:`FALLBACK_TEMPLATE` through the same code path.
"""
from __future__ import annotations

import functools
import inspect
import json
import re
import threading
import time
import types
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, ValuesView
from dataclasses import dataclass
from datetime import datetime
from string import Formatter
from typing import Any, NoReturn, TypeGuard, TypeVar

import jinja2
import regex
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context
from jinja2.runtime import str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from explainer.llm import budget
from explainer.llm.budget import Interrupted
from explainer.llm.interface import ModelLoadError
from explainer.llm.interface import TokenizerError

# Plain text turns for a model trained without a chat template. Each turn ends with the end-of-text
# token (the engine stops on it); the role's name sits on its own line, so the text of a turn is
# tokenized as it would be at the start of a line, whether it is sent or generated.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{{ message['role'] | capitalize }}:\n{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{% if messages %}{{ '\\n\\n' }}{% endif %}{{ 'Assistant:\\n' }}{% endif %}"
)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_PRIVATE_USE = range(0xE000, 0xF900)
_CACHE_MAX = 256  # sentinel renderings kept per template (keyed by the roles, not the texts)

# ---- the render budget ---------------------------------------------------------------------
# A real template renders a conversation in about a millisecond; one render may take this long.
RENDER_SECONDS = 0.5
# All the renders that cut one conversation into turns share this: one per turn and two more, each as long
# as the conversation up to that turn (about 2.5 s for 400 turns here, which no 2048-token window holds).
CONVERSATION_SECONDS = 5.0
# The longest text one render may write or build: this much for the template's own text (role markers,
# a default system prompt, tool instructions: a few kilobytes in real templates), plus twice the
# conversation's texts. A legitimate rendering writes each text once, so it always fits, however long
# the prompt the app accepts: the engine's check_size lets through at most (context window - 1) x the
# longest token's bytes of text, about 260 KB with EXPLAINER_MAX_CONTEXT = 2048 and a 128-byte token
# (and never more than the API's 1 MB body), and this limit grows with the text. A fixed limit large
# enough for that would let a short prompt's template build megabytes; this one keeps a render's memory
# within a few times its input, where ``'x' * 100000000`` would take 100 MB.
RENDER_MAX_CHARS = 256 * 1024
RENDER_TEXT_FACTOR = 2
# Characters one render may build in all (every string, list and call result it makes, counted once
# each): a template that builds and drops text in a loop, or holds a string in each of a few hundred
# recursive macro calls, stops here. Real templates build a few times their output.
RENDER_WORK_FACTOR = 16
# The longest template source: the longest real ones, with tool-calling instructions, are about 20 KB;
# compiling hostile source takes about 20 ms a kilobyte here, so this bounds opening a folder to about a second.
MAX_TEMPLATE_CHARS = 64 * 1024
MAX_INT_BITS = 1 << 16  # a template's integers (``**``, ``*``): far past any count or index it needs
STRFTIME_MAX_FORMAT = 256  # real templates ask for a date such as "%d %b %Y"
LIPSUM_MAX_WORDS = 10_000
SLOW_FILTER_MAX_CHARS = 64 * 1024  # wordwrap and urlize run in Python and cannot be stopped midway
JSON_MAX_INDENT = 64


class ChatTemplateError(ModelLoadError, TokenizerError):
    """The chat template failed, or refused a conversation through its ``raise_exception``."""


class ChatTemplateBudgetError(ChatTemplateError):
    """The chat template ran past its render budget (too long, or building too much text)."""


class _OverBudget(Exception):
    """Raised inside a render when the template exceeds its budget; ``reason`` says how."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _NotRendering(Exception):
    """A filter called outside a render: Jinja folding a constant expression at compile time. Raising
    makes Jinja leave the expression to run time, where the budget applies."""


class _RenderBudget:
    """One render's limits: a deadline, the longest text it may write or build (``limit``) and the
    characters it may build in all (``work_limit``). Once exceeded it stays exceeded, so a template
    cannot catch the refusal and carry on."""

    __slots__ = ("deadline", "late", "limit", "work", "work_limit", "broken", "steps")

    def __init__(self, limit: int, deadline: float, late: str):
        self.limit, self.deadline, self.late = limit, deadline, late  # ``late``: what to say when the deadline passes
        self.work, self.work_limit = 0, limit * RENDER_WORK_FACTOR
        self.broken: str | None = None
        self.steps = 0

    def refuse(self, reason: str) -> NoReturn:
        self.broken = reason
        raise _OverBudget(reason)

    def tick(self) -> None:
        """Between two steps: the request's cancel flag and deadline, then this render's clock (every
        few steps: each step is bounded, and the clock costs more than most of them)."""
        if self.broken is not None:
            raise _OverBudget(self.broken)
        self.steps += 1
        if not self.steps & 7:
            self.check_now()

    def check_now(self) -> None:
        """The request's budget and this render's clock, now (inside a long step)."""
        if self.broken is not None:
            raise _OverBudget(self.broken)
        budget.check()
        if time.monotonic() > self.deadline:
            self.refuse(self.late)

    def need(self, n: int, what: str) -> None:
        """Refuse, before it is made, a value of ``n`` characters (or items) over the limit."""
        if n > self.limit:
            self.refuse(f"{what} would make {n:,} characters, over the {self.limit:,} this conversation allows")

    def built(self, value: Any, what: str) -> None:
        """A value the template just made: its printed size within the limit (so neither printing it nor
        comparing or hashing it can cost more), its own size counted towards the work limit."""
        if isinstance(value, (str, bytes)):
            n = len(value)
            self.need(n, what)
        elif isinstance(value, (list, tuple, dict, set, frozenset, Namespace)):
            self.need(_size(value, self.limit), what)
            n = len(value) if not isinstance(value, Namespace) else 1
        else:
            return
        self.work += n
        if self.work > self.work_limit:
            self.refuse(f"it built over {self.work_limit:,} characters of text")


_state = threading.local()
T = TypeVar("T")


def _active() -> _RenderBudget:
    b: _RenderBudget | None = getattr(_state, "budget", None)
    if b is None:
        raise _NotRendering()
    return b


def _pulse() -> None:
    """Inside a long step (measuring a large value): the render's budget, if one is running."""
    b: _RenderBudget | None = getattr(_state, "budget", None)
    if b is not None:
        b.check_now()


def _size(value: Any, cap: int) -> int:
    """About how many characters ``str(value)`` has, counted until ``cap`` is passed (the answer is then
    just over ``cap``). Containers count their elements as often as they hold them, so a list nested
    into itself ten times over is as large as it prints."""
    if type(value) is str:
        return len(value)
    total, stack, visits = 0, [value], 0
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        visits += 1
        if not visits & 4095:
            _pulse()
        x = pop()
        t = type(x)  # exact types first: isinstance() on a Namespace runs its Python-level __getattribute__
        if t is str:
            total += len(x) + 2
        elif t is dict:
            total += 2 + 4 * len(x)
            if total <= cap:
                extend(x.keys())
                extend(x.values())
        elif t is list or t is tuple:
            total += 2 + 2 * len(x)
            if total <= cap:
                extend(x)
        elif t is int:
            total += x.bit_length() // 3 + 2
        elif x is None or t is bool or t is float:
            total += 5
        elif t is Namespace:
            total += 12
            push(object.__getattribute__(x, "_Namespace__attrs"))
        elif isinstance(x, str):  # Markup
            total += len(x) + 2
        elif isinstance(x, (bytes, bytearray)):
            total += 4 * len(x) + 3
        elif isinstance(x, (set, frozenset, list, tuple, KeysView, ValuesView, ItemsView)):
            total += 2 + 2 * len(x)
            if total <= cap:
                extend(x)
        elif isinstance(x, dict):
            total += 2 + 4 * len(x)
            if total <= cap:
                extend(x.keys())
                extend(x.values())
        elif isinstance(x, int):
            total += x.bit_length() // 3 + 2
        elif not isinstance(x, jinja2.Undefined):  # a range, a macro, a loop, a generator: a short description
            total += 16
        if total > cap:
            return total
    return total


def _shape(value: Any, cap: int) -> tuple[int, int, int]:
    """For JSON and pprint: characters, values and nesting depth, counted until ``cap`` characters."""
    chars, count, depth, stack = 0, 0, 0, [(value, 1)]
    while stack and chars <= cap:
        x, d = stack.pop()
        count += 1
        depth = max(depth, d)
        t = type(x)
        if t is dict:
            chars += 2 + 4 * len(x)
            stack.extend((k, d + 1) for k in x.keys())
            stack.extend((v, d + 1) for v in x.values())
        elif t is list or t is tuple:
            chars += 2 + 2 * len(x)
            stack.extend((v, d + 1) for v in x)
        else:
            chars += _size(x, cap) + 2
    return chars, count, depth


def _text(b: _RenderBudget, value: object, what: str) -> str:
    """``str(value)``, once its size is known to be within the limit."""
    if not isinstance(value, str):
        b.need(_size(value, b.limit), what)
        value = str(value)
    b.need(len(value), what)
    return value


def _materialize(b: _RenderBudget, iterable: Iterable[Any]) -> list[Any] | tuple[Any, ...] | str:
    """An iterable as a sequence, read one item at a time under the budget (a generator may be endless)."""
    if isinstance(iterable, (list, tuple, str)):
        return iterable
    out = []
    for i, item in enumerate(iterable):
        if not i & 1023:
            b.check_now()
            b.need(i, "an iterable")
        out.append(item)
    return out


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


# ---- sizes of the operations that can build more than they are given ----------------------------
_PERCENT_FIELD = re.compile(r"%(?:\(([^)]*)\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)
_NUMBER_RUN = re.compile(r"\d+")


def _widths(b: _RenderBudget, fmt: str) -> int:
    """The numbers a format string contains (its widths and precisions, at most)."""
    total = 0
    for run in _NUMBER_RUN.findall(fmt):
        if len(run) > 9:
            b.refuse(f"a format string asks for a width of {run[:12]}… characters")
        total += int(run)
    return total


def _percent_cost(b: _RenderBudget, fmt: str, args: Any) -> int:
    """``fmt % args``: the format's text, its widths, and each field's value."""
    values: list[Any]
    if isinstance(args, dict):  # ``%(key)s`` fields name its values; a plain ``%s`` prints the whole dict
        values, by_key = [args], args
    else:
        values, by_key = list(args) if isinstance(args, tuple) else [args], None
    sizes = [_size(v, b.limit) for v in values]
    cost, i = len(fmt) + _widths(b, fmt), 0
    for m in _PERCENT_FIELD.finditer(fmt):
        key, width, precision, kind = m.groups()
        if kind == "%":
            continue
        for star in (width, precision):
            if star == "*" and i < len(values):
                cost += abs(values[i]) if _is_int(values[i]) else 0
                i += 1
        if key is not None and by_key is not None:
            cost += _size(by_key.get(key), b.limit)
        elif i < len(sizes):
            cost += sizes[i]
            i += 1
    return cost


def _format_cost(b: _RenderBudget, fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """``fmt.format(*args, **kwargs)``: the format's text, its widths, and each field's value (a field
    may name the same value many times, or take its width from an argument)."""
    values = [*args, *kwargs.values()]
    biggest = max((_size(v, b.limit) for v in values), default=0)
    widest = max((abs(v) for v in values if _is_int(v)), default=0)
    cost, auto = len(fmt) + _widths(b, fmt), 0
    try:
        fields = list(Formatter().parse(fmt))
    except ValueError:
        return cost  # str.format will say what is wrong with it
    for _, name, spec, _ in fields:
        if name is None:
            continue
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if base == "":
            value, auto = (args[auto] if auto < len(args) else None), auto + 1
            cost += _size(value, b.limit) if value is not None else biggest
        elif base.isdigit() and int(base) < len(args):
            cost += _size(args[int(base)], b.limit) if "." not in name and "[" not in name else biggest
        elif base in kwargs and "." not in name and "[" not in name:
            cost += _size(kwargs[base], b.limit)
        else:
            cost += biggest
        if spec and "{" in spec:
            cost += spec.count("{") * widest
    return cost


def _string_method_cost(b: _RenderBudget, s: str | bytes, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """What a str (or bytes) method that can return more than it is given would return; None for the rest."""
    n = len(s)
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        return max(n, width) if _is_int(width) else None
    if name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        tabs = s.count("\t") if isinstance(s, str) else s.count(b"\t")
        return n + tabs * max(0, tabsize) if _is_int(tabsize) else None
    kind = str if isinstance(s, str) else bytes
    if name == "replace" and len(args) >= 2 and isinstance(args[0], kind) and isinstance(args[1], kind):
        old: Any = args[0]  # of the same kind as ``s``, which the checker cannot follow through ``kind``
        new: Any = args[1]
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        k = s.count(old) if old else n + 1
        if _is_int(count) and count >= 0:
            k = min(k, count)
        return n + k * max(0, len(new) - len(old))
    if name == "translate" and args:
        table = args[0]
        longest = max((len(v) for v in table.values() if isinstance(v, (str, bytes))), default=1) if isinstance(table, dict) else 1
        return n * max(1, longest)
    if name in ("upper", "lower", "title", "capitalize", "casefold", "swapcase", "encode", "hex"):
        return 4 * n
    return None


def _checked_add(b: _RenderBudget, left: Any, right: Any) -> Any:
    if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
        b.need(len(left) + len(right), "the '+' operator")
    return left + right


def _check_binop(b: _RenderBudget, operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        seq, n = (left, right) if _is_int(right) else (right, left)
        if isinstance(seq, (str, bytes, list, tuple)) and _is_int(n):
            b.need(len(seq) * max(n, 0), "the '*' operator")
        elif _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            b.refuse(f"the '*' operator would make a number of over {MAX_INT_BITS:,} bits")
    elif operator == "**":
        if _is_int(left) and _is_int(right) and right > 0 and max(left.bit_length(), 1) * right > MAX_INT_BITS:
            b.refuse(f"the '**' operator would make a number of over {MAX_INT_BITS:,} bits")
    elif operator == "+":
        if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
            b.need(len(left) + len(right), "the '+' operator")
    elif operator == "%" and isinstance(left, (str, bytes)):
        fmt = left if isinstance(left, str) else left.decode("latin-1")
        b.need(_percent_cost(b, fmt, right), "the '%' operator")


# ---- the filters, each guarded ------------------------------------------------------------------
# Filters whose value is printed (str(value)) before anything else happens to it.
_PRINTS_VALUE = {"string", "e", "escape", "forceescape", "safe", "urlencode", "xmlattr", "title", "upper", "lower",
                 "capitalize", "trim", "striptags", "truncate", "wordcount", "center", "indent", "wordwrap", "replace",
                 "format", "urlize", "filesizeformat"}
# Filters whose value is compared or hashed element by element.
_COMPARES_VALUE = {"sort", "unique", "groupby", "dictsort", "min", "max"}
# Filters whose other arguments size what they make.
_SIZED_BY_ARGUMENTS = {"center", "indent", "wordwrap", "urlize", "replace", "join", "format", "truncate", "batch", "slice",
                       "tojson", "pprint", "sum"}
# Filters whose integer arguments are data (a default, a start, an attribute index), not sizes.
_DATA_ARGUMENTS = {"default", "d", "sum", "attr", "map", "select", "reject", "selectattr", "rejectattr", "int",
                   "float", "min", "max", "unique", "sort", "dictsort", "groupby", "first", "last", "random"}


def _filter_cost(b: _RenderBudget, name: str, a: dict[str, Any]) -> None:
    """Refuse a filter call whose result would be over the limit, from its arguments alone.

    ``a`` holds the call's arguments by name, and its value as ``value``; ``join`` and ``slice`` get
    their iterable read under the budget first, in place.
    """
    value = a["value"]
    if name == "center":
        width = a.get("width", 80)
        b.need(max(len(_text(b, value, "center")), width if _is_int(width) else 0), "the center filter")
    elif name == "indent":
        width = a.get("width", 4)
        unit = len(width) if isinstance(width, str) else width if _is_int(width) else 0
        b.need(unit, "the indent filter")
        if isinstance(value, str):
            b.need(len(value) + (value.count("\n") + 2) * unit, "the indent filter")
    elif name in ("wordwrap", "urlize"):
        text = _text(b, value, f"the {name} filter")
        if len(text) > SLOW_FILTER_MAX_CHARS:
            b.refuse(f"the {name} filter was given {len(text):,} characters (at most {SLOW_FILTER_MAX_CHARS:,})")
        if name == "wordwrap":
            extra = a.get("wrapstring") or "\n"
        else:
            extra = (a.get("target") or "") + (a.get("rel") or "") + " " * 64
        b.need(len(text) * 3 + (len(text) + 1) * len(_text(b, extra, f"the {name} filter")), f"the {name} filter")
    elif name == "replace":
        text, old, new = (_text(b, a.get(k), "the replace filter") for k in ("value", "old", "new"))
        count = a.get("count")
        k = text.count(old) if old else len(text) + 1
        if _is_int(count) and count >= 0:
            k = min(k, count)
        b.need(len(text) + k * max(0, len(new) - len(old)), "the replace filter")
    elif name == "join":
        items = a["value"] = _materialize(b, value)
        sep = _text(b, a.get("d", ""), "the join filter")
        b.need(_size(items, b.limit) + len(sep) * max(0, len(items) - 1), "the join filter")
    elif name == "format":
        fmt = _text(b, value, "the format filter")
        b.need(_percent_cost(b, fmt, a.get("kwargs") or tuple(a.get("args", ()))), "the format filter")
    elif name == "truncate":
        b.need(len(_text(b, value, "the truncate filter")) + _size(a.get("end", "..."), b.limit), "the truncate filter")
    elif name in ("batch", "slice"):
        count = a.get("linecount", a.get("slices", 0))
        if name == "slice":
            a["value"] = _materialize(b, value)
        if _is_int(count):
            b.need(count * (_size(a.get("fill_with"), b.limit) + 2), f"the {name} filter")
    elif name in ("tojson", "pprint"):
        chars, count, depth = _shape(value, b.limit)
        b.need(chars, f"the {name} filter")
        indent = a.get("indent") if name == "tojson" else 1
        unit = len(indent) if isinstance(indent, str) else indent if _is_int(indent) else 0
        if unit > JSON_MAX_INDENT:
            b.refuse(f"the {name} filter was asked to indent by {unit:,} characters (at most {JSON_MAX_INDENT})")
        seps = a.get("separators") or ()
        b.need(chars + count * (depth * unit + sum(len(s) for s in seps if isinstance(s, str)) + 2), f"the {name} filter")
    elif name in _PRINTS_VALUE:
        _text(b, value, f"the {name} filter")
    elif name in _COMPARES_VALUE and not isinstance(value, str):
        b.need(_size(value, b.limit), f"the {name} filter")


def _budgeted_sum(fn: Callable[..., Any], env: jinja2.Environment, a: dict[str, Any]) -> Any:
    """``sum``: numbers at C speed; anything else (``start=[]`` joins lists, quadratically) one item
    at a time, each addition checked."""
    b = _active()
    items = _materialize(b, a["value"])
    attribute, start = a.get("attribute"), a.get("start", 0)
    if attribute is not None:
        getter = make_attrgetter(env, attribute)
        items = [getter(x) for x in items]
    if isinstance(start, str) or all(isinstance(x, (int, float)) for x in (start, *items)):
        return fn(env, items, None, start)
    total = start
    for item in items:
        b.tick()
        total = _checked_add(b, total, item)
    return total


def _guard_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The filter ``fn`` under the render budget: the clock first, the size of what it would make
    before it runs, then the size of what it made (an iterator it returns is read under the budget)."""
    signature = None
    if name in _SIZED_BY_ARGUMENTS:
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            pass
    passes = jinja2.utils._PassArg.from_obj(fn) is not None
    integers_are_sizes = name not in _DATA_ARGUMENTS

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        b = _active()
        b.tick()
        if integers_are_sizes:
            for x in (*args[1 + passes:], *kwargs.values()):
                if _is_int(x) and abs(x) > b.limit:
                    b.refuse(f"the {name} filter was given the number {x:,}")
        if len(args) > passes:  # Jinja passes a filter's value by position, after its context if it takes one
            named: dict[str, Any] = {}
            if signature is not None:
                try:
                    named = dict(signature.bind(*args, **kwargs).arguments)
                except TypeError:
                    pass  # the filter itself will say what is wrong with the call
            named["value"] = args[passes]
            if name == "sum":
                result = _budgeted_sum(fn, args[0], named)
                b.built(result, "the sum filter")
                return result
            _filter_cost(b, name, named)
            if name in ("join", "slice"):
                args = (*args[:passes], named["value"], *args[passes + 1:])
        result = fn(*args, **kwargs)
        if isinstance(result, Iterator) and not isinstance(result, (str, bytes)):
            return _loop(result)
        b.built(result, f"the {name} filter")
        return result

    return guarded


# ---- globals -----------------------------------------------------------------------------------
def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 (Jinja's names)
    """Jinja's ``lipsum``, for at most LIPSUM_MAX_WORDS words."""
    b = _active()
    words = n * max if _is_int(n) and _is_int(max) and n > 0 and max > 0 else 0
    b.need(words * 12, "lipsum")  # a word and its space: 12 characters at most
    if words > LIPSUM_MAX_WORDS:
        b.refuse(f"lipsum was asked for up to {words:,} words (at most {LIPSUM_MAX_WORDS:,})")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def _loop(iterable: Iterable[T]) -> Iterator[T]:
    """What every ``{% for %}`` iterates (and what an iterator a filter returns is wrapped in): the
    items, with the budget's clock checked before each."""
    b = _active()
    for item in iterable:
        b.tick()
        yield item


def _concat(*parts: Any) -> str:
    """The ``~`` operator: each part printed, once the total is known to be within the limit."""
    b = _active()
    total = 0
    for part in parts:
        total += _size(part, b.limit)
        b.need(total, "the '~' operator")
    out = str_join(parts)
    b.built(out, "the '~' operator")
    return out


def _literal(value: T) -> T:
    """A list, tuple or dict written in the template: checked like any value the template builds."""
    _active().built(value, "a list or dict")
    return value


def _joined(parts: Iterable[str]) -> str:
    """The environment's ``concat``: how a macro, a ``{% set %}`` block or a filter block joins its output."""
    parts = parts if isinstance(parts, list) else list(parts)
    b: _RenderBudget | None = getattr(_state, "budget", None)
    if b is not None:
        b.need(sum(map(len, parts)), "the template's output")
    out = "".join(parts)
    if b is not None:
        b.built(out, "the template's output")
    return out


def _finalize(value: Any) -> Any:
    """Every ``{{ … }}``: its printed size within the limit before it is printed."""
    b: _RenderBudget | None = getattr(_state, "budget", None)
    if b is not None and not isinstance(value, str):
        b.need(_size(value, b.limit), "a {{ … }} expression")
    elif b is not None:
        b.need(len(value), "a {{ … }} expression")
    return value


_HELPERS = __name__


class _Budgeted(NodeTransformer):
    """Rewrites a parsed template so the budget sees what Jinja compiles to plain Python: every loop
    iterates through :func:`_loop`, every ``~`` is :func:`_concat` and every list, tuple or dict
    written in the template goes through :func:`_literal`. The helpers are imported names, which a
    template cannot shadow."""

    @staticmethod
    def _call(helper: str, args: list[nodes.Node], lineno: int) -> nodes.Call:
        return nodes.Call(nodes.ImportedName(f"{_HELPERS}.{helper}", lineno=lineno), args, [], None, None, lineno=lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)  # (rewrites the node's children in place)
        node.iter = self._call("_loop", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._call("_concat", list(node.nodes), node.lineno)

    def _container(self, node: nodes.Node) -> nodes.Node:
        node = self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":
            return node
        return self._call("_literal", [node], node.lineno)

    visit_List = visit_Tuple = visit_Dict = _container


class _Refused(jinja2.TemplateError):
    """What ``raise_exception`` raises inside the template; the message is the template's own."""


class _Generation(Extension):
    """``{% generation %}…{% endgeneration %}`` marks assistant text for transformers' training masks;
    here it renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


def _short(error: object, n: int = 300) -> str:
    """An error's text for a one-sentence refusal: its first line, cut to ``n`` characters."""
    text = str(error)
    line = text.splitlines()[0] if text.strip() else text
    return line if len(line) <= n else line[:n] + "…"


def _raise_exception(message: str) -> None:
    raise _Refused(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | str | None = None, separators: tuple[str, str] | None = None,
            sort_keys: bool = False) -> str:
    """transformers' ``tojson``: no HTML escaping (Jinja's own filter escapes ``<``, ``>``, ``&``, ``'``)."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    if isinstance(format, str) and len(format) > STRFTIME_MAX_FORMAT:
        _active().refuse(f"strftime_now was given a format of {len(format):,} characters (at most {STRFTIME_MAX_FORMAT})")
    return datetime.now().strftime(format)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, with the render budget met at every call, operator, loop and output.

    It also renders an unsafe attribute (``''.__class__``) as an error rather than an undefined value,
    so a template that reaches for Python's internals fails loudly instead of rendering something else.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    concat = staticmethod(_joined)  # how the template's output is joined

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(f"the template reads {attribute!r} of a {type(obj).__name__} object, which the sandbox forbids")

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree: nodes.Template = _Budgeted().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        b = _active()
        if operator == "+" and type(left) is str and type(right) is str:  # the common case, kept short
            n = len(left) + len(right)
            b.work += n
            b.steps += 1
            if n > b.limit or b.work > b.work_limit or not b.steps & 7 or b.broken is not None:
                b.need(n, "the '+' operator")
                if b.work > b.work_limit:
                    b.refuse(f"it built over {b.work_limit:,} characters of text")
                b.check_now()
            return left + right
        b.tick()
        _check_binop(b, operator, left, right)
        result = self.binop_table[operator](left, right)
        b.built(result, f"the {operator!r} operator")
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (the sandbox's own signature)
        b = _active()
        b.tick()
        if __obj is _loop or __obj is _concat or __obj is _literal:
            return __obj(*args)
        given = {k: v for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars")}
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format in a function
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, (str, bytes)):
            if name == "join" and args:
                items = _materialize(b, args[0])
                b.need(_size(items, b.limit) + len(owner) * max(0, len(items) - 1), "str.join")
                args = (items, *args[1:])
            elif name in ("format", "format_map") and isinstance(owner, str):
                if name == "format_map":
                    b.need(_format_cost(b, owner, (), args[0] if args and isinstance(args[0], dict) else {}), "str.format_map")
                else:
                    b.need(_format_cost(b, owner, args, given), "str.format")
            else:
                cost = _string_method_cost(b, owner, name, args, given)
                if cost is not None:
                    b.need(cost, f"str.{name}")
        if isinstance(__obj, (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodWrapperType)) or owner is not None:
            for x in (*args, *given.values()):
                if _is_int(x) and abs(x) > b.limit:
                    b.refuse(f"{name or 'a call'} was given the number {x:,}")
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, types.GeneratorType):
            return _loop(result)
        b.built(result, f"{name or 'a call'}")
        return result


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols])
    env.filters["tojson"] = _tojson
    env.filters = {name: _guard_filter(name, fn) for name, fn in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["lipsum"] = _lipsum
    env.finalize = _finalize
    return env


@dataclass(frozen=True)
class Piece:
    """One part of a rendered conversation, in order."""

    label: str  # "template" (the template's own text), "system" or "messages.i"
    text: str
    closes: str | None = None  # the turn that ends with this piece (``ends[closes]`` counts the ids up to here)


class ChatTemplate:
    """The template of one model folder, compiled once.

    ``origin`` is the file it came from (``tokenizer_config.json`` or ``chat_template.jinja``):
    every error names it. ``variables`` are the special tokens' texts (``bos_token``, ...).
    """

    def __init__(self, source: str | None, origin: str, variables: dict[str, str]):
        self.has_own_template = source is not None
        self.source = source if source is not None else FALLBACK_TEMPLATE
        self.origin = origin if source is not None else "the built-in plain-text chat template"
        self.variables = dict(variables)
        if len(self.source) > MAX_TEMPLATE_CHARS:
            raise ModelLoadError(f"{self.origin}: the chat template is {len(self.source):,} characters long; at most "
                                 f"{MAX_TEMPLATE_CHARS:,} are accepted (real templates are a few thousand).")
        try:
            self._template = _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ModelLoadError(f"{self.origin}: the chat template is not valid Jinja ({exc.message}, line {exc.lineno}).") from None
        except Exception as exc:  # a parser pushed past its limits (nesting, a 5,000-digit number) by hostile source
            raise ModelLoadError(f"{self.origin}: the chat template cannot be compiled ({type(exc).__name__}: "
                                 f"{_short(exc)}).") from None
        self._cache: dict[tuple[tuple[str, ...], bool, bool, str], tuple[list[str], list[str]]] = {}

    # ---- rendering ----------------------------------------------------------------
    def render(self, messages: list[tuple[str, str]], add_generation_prompt: bool, deadline: float | None = None) -> str:
        """The conversation as the model reads it, as ``apply_chat_template(..., tokenize=False)`` renders it.

        The render runs under its budget: RENDER_SECONDS (or until ``deadline``, a ``time.monotonic()``
        value, if that comes first), and RENDER_MAX_CHARS plus twice the conversation's text for what it
        writes or builds. Past it, :class:`ChatTemplateBudgetError` (a ModelLoadError and a
        TokenizerError: the folder's fault when it is opened, the request's 400 when it is served); a
        cancelled request raises :class:`~explainer.llm.budget.Interrupted`.
        """
        chat = [{"role": role, "content": text} for role, text in messages]
        ends = time.monotonic() + RENDER_SECONDS
        late = f"it ran for over {RENDER_SECONDS:g} s"
        if deadline is not None and deadline < ends:
            ends, late = deadline, f"its renders for this conversation ran for over {CONVERSATION_SECONDS:g} s"
        limit = RENDER_MAX_CHARS + RENDER_TEXT_FACTOR * sum(len(text) for _, text in messages)
        b = _RenderBudget(limit, ends, late)
        outer, _state.budget = getattr(_state, "budget", None), b
        try:
            b.check_now()
            out, written = [], 0
            for chunk in self._template.generate(messages=chat, add_generation_prompt=add_generation_prompt,
                                                 tools=None, documents=None, **self.variables):
                b.tick()
                written += len(chunk)
                b.need(written, "the rendered conversation")
                out.append(chunk)
            return "".join(out)
        except _OverBudget as exc:
            raise ChatTemplateBudgetError(f"{self.origin}: the chat template exceeded its render budget ({exc.reason}).") from None
        except Interrupted:
            raise
        except _Refused as exc:
            raise ChatTemplateError(f"{self.origin}: the chat template refuses this conversation: {_short(exc.message)}") from None
        except Exception as exc:  # untrusted code: whatever it raises is the template's failure
            if b.broken is not None:  # the template caught the refusal somewhere and failed otherwise
                raise ChatTemplateBudgetError(f"{self.origin}: the chat template exceeded its render budget ({b.broken}).") from None
            raise ChatTemplateError(f"{self.origin}: the chat template failed ({type(exc).__name__}: {_short(exc)}).") from None
        finally:
            _state.budget = outer

    # ---- cutting into parts ---------------------------------------------------------
    def pieces(self, system: str | None, messages: list[tuple[str, str]], add_generation_prompt: bool = True) -> list[Piece]:
        """The rendered conversation cut into the template's text and each turn's text.

        A final assistant message is a prefill: the rendering stops right after its text
        (transformers' ``continue_final_message``). The template's text after turn i is split into
        what closes turn i (what rendering the conversation up to turn i puts after its text) and
        what opens the next turn, so ``closes`` marks where a turn ends.
        """
        deadline = time.monotonic() + CONVERSATION_SECONDS
        turns = ([("system", system)] if system else []) + list(messages)
        labels = (["system"] if system else []) + [f"messages.{i}" for i in range(len(messages))]
        prefill = bool(messages) and messages[-1][0] == "assistant"
        generate = add_generation_prompt and not prefill
        texts = [text for _, text in turns]
        mark = self._sentinel(texts)
        roles = tuple(role for role, _ in turns)
        glue, closings = self._glue(roles, generate, prefill, mark, deadline)
        texts = self._texts_as_rendered(turns, generate, prefill, glue, labels, deadline)
        out = [Piece("template", glue[0])]
        for i, (label, text) in enumerate(zip(labels, texts)):
            last = i == len(turns) - 1
            if last and prefill:
                out.append(Piece(label, text, closes=label))
                break
            closing = closings[i]
            out += [Piece(label, text), Piece("template", closing, closes=label), Piece("template", glue[i + 1][len(closing):])]
        return out

    def assistant_closing(self) -> str | None:
        """What the template writes right after an assistant turn's text (None if it cannot render one)."""
        mark = self._sentinel([])
        try:
            glue, _ = self._glue(("user", "assistant"), False, False, mark, time.monotonic() + CONVERSATION_SECONDS)
        except ChatTemplateBudgetError:
            raise  # a template past its budget on two short turns is refused outright
        except ModelLoadError:
            return None
        return glue[2]

    def _sentinel(self, texts: list[str]) -> str:
        """A private-use character that neither the texts, the template nor its variables contain."""
        for code in _PRIVATE_USE:
            if not code & 63:
                budget.check()
            c = chr(code)
            if c not in self.source and not any(c in t for t in (*texts, *self.variables.values())):
                return c
        raise ChatTemplateError("the conversation uses every private-use character, so it cannot be split into turns.")

    def _cut(self, rendered: str, n: int, mark: str) -> list[str]:
        """The template's text between the sentinels 0..n-1 of ``rendered`` (n + 1 strings)."""
        parts = regex.split(f"{mark}(\\d+){mark}", rendered)
        glue, found = parts[0::2], parts[1::2]
        if found != [str(i) for i in range(n)] or any(mark in g for g in glue):
            raise ChatTemplateError(f"{self.origin}: the chat template drops, repeats or rewrites the text of a message, "
                                    "so its own tokens cannot be told apart from the conversation's.")
        return glue

    def _glue(self, roles: tuple[str, ...], generate: bool, prefill: bool, mark: str,
              deadline: float) -> tuple[list[str], list[str]]:
        """The template's text around each turn, and what closes each turn; depends on the roles only."""
        key = (roles, generate, prefill, mark)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        marks = [f"{mark}{i}{mark}" for i in range(len(roles))]
        glue = self._cut(self.render(list(zip(roles, marks)), generate, deadline), len(roles), mark)
        closings = []
        for i in range(len(roles) - (1 if prefill else 0)):
            try:
                alone = self._cut(self.render(list(zip(roles[:i + 1], marks)), False, deadline), i + 1, mark)[-1]
            except ChatTemplateBudgetError:
                raise
            except ModelLoadError:  # the template refuses a conversation that stops here: end the turn at its text
                alone = ""
            closings.append(alone if glue[i + 1].startswith(alone) else "")
        if prefill:
            glue[-1] = ""
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (glue, closings)
        return glue, closings

    def _texts_as_rendered(self, turns: list[tuple[str, str]], generate: bool, prefill: bool, glue: list[str],
                           labels: list[str], deadline: float) -> list[str]:
        """Each turn's text as the template writes it: as sent, or trimmed (Llama 3's templates ``trim``).

        The conversation is rendered once more with its real texts and matched against the template's
        text around the sentinels; a template that rewrites a text any other way is refused.
        """
        if not turns:
            return []
        rendered = self.render(turns, generate, deadline)
        pos, out = len(glue[0]), []
        if not rendered.startswith(glue[0]):
            raise self._rewrites(labels[0])
        for i, (_, text) in enumerate(turns):
            after = None if prefill and i == len(turns) - 1 else glue[i + 1]  # a prefill's rendering goes on after it
            for candidate in dict.fromkeys((text, text.strip(), text.lstrip(), text.rstrip())):
                if not rendered.startswith(candidate, pos):
                    continue
                end = pos + len(candidate)
                if after is None or (rendered.startswith(after, end) and (i + 1 < len(turns) or end + len(after) == len(rendered))):
                    out.append(candidate)
                    pos = end + (len(after) if after is not None else 0)
                    break
            else:
                raise self._rewrites(labels[i])
        return out

    def _rewrites(self, label: str) -> ChatTemplateError:
        return ChatTemplateError(f"{self.origin}: the chat template rewrites the text of {label} (other than trimming it), "
                                 "so the conversation's tokens cannot be told apart from the template's.")
