"""The budget a chat template's render runs under: every step a template takes meets it.

Jinja's sandbox keeps a template away from Python's internals, not from the machine's time and
memory. A render therefore meets :class:`_RenderBudget` at every loop iteration, call, filter,
``~``, ``+``, ``*``, ``**`` and ``%``, and each piece of output: anything that could build a large
value is refused from its operands' sizes before it is computed, and anything that could run long
meets the clock between steps (and the request's own budget, :mod:`explainer.llm.budget`). The
sandbox that calls these checks is ``template_sandbox.py``.
"""
from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import ItemsView, Iterable, KeysView, ValuesView
from string import Formatter
from typing import Any, NoReturn, TypeGuard, TypeVar

import jinja2
from jinja2.utils import Namespace

from explainer.llm import budget
from explainer.llm.interface import ModelLoadError, TokenizerError

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
        else:
            n, children = _other_size(x)
            total += n
            if children is not None and total <= cap:
                extend(children)
        if total > cap:
            return total
    return total


def _other_size(x: Any) -> tuple[int, Iterable[Any] | None]:
    """``_size`` of what is not one of the exact types it counts first: (characters, the elements to count next)."""
    if isinstance(x, str):  # Markup
        return len(x) + 2, None
    if isinstance(x, (bytes, bytearray)):
        return 4 * len(x) + 3, None
    if isinstance(x, dict):
        return 2 + 4 * len(x), itertools.chain(x.keys(), x.values())  # taken only while under the cap
    if isinstance(x, (set, frozenset, list, tuple, KeysView, ValuesView, ItemsView)):
        return 2 + 2 * len(x), x
    if isinstance(x, int):
        return x.bit_length() // 3 + 2, None
    if isinstance(x, jinja2.Undefined):
        return 0, None
    return 16, None  # a range, a macro, a loop, a generator: a short description


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
