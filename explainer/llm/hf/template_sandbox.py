"""The sandbox a chat template renders in: Jinja's immutable sandbox, with the globals and filters
``transformers`` gives a template, each guarded by the render budget (``render_budget.py``), and the
template's syntax tree rewritten so that its loops and concatenations meet the budget too.
"""
from __future__ import annotations

import functools
import inspect
import json
import types
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from explainer.llm.hf.render_budget import (
    JSON_MAX_INDENT,
    LIPSUM_MAX_WORDS,
    SLOW_FILTER_MAX_CHARS,
    STRFTIME_MAX_FORMAT,
    T,
    _active,
    _check_binop,
    _checked_add,
    _format_cost,
    _is_int,
    _materialize,
    _percent_cost,
    _RenderBudget,
    _shape,
    _size,
    _state,
    _string_method_cost,
    _text,
)

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


