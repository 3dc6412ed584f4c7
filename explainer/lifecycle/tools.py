"""Tool use: demo tools that really run, and schema-constrained decoding of their arguments.

Three parts, in the order a tool call happens:

1. **Demo tools** (``DEMO_TOOLS``, ``run_tool``): ``get_dag_status`` (a bundled table of
   invented Airflow DAGs), ``calculator`` (arithmetic parsed with ``ast``, never ``eval``)
   and ``get_time`` (``zoneinfo``). Each has a Messages API definition
   (``{"name", "description", "input_schema"}``); ``run_tool`` validates the input against
   the schema with ``jsonschema`` before the tool runs and returns ``(content, is_error)``,
   the two fields of a ``tool_result`` block.

2. **Schema-constrained decoding** (``JsonConstraint``, ``constrained_generate``): at every
   step, the set of token ids whose bytes keep the output a prefix of some JSON document that
   validates against the tool's ``input_schema``. The schema is compiled to a byte-level
   pushdown automaton (a stack of frames, one per open value); a token is allowed iff feeding
   all its bytes from the current state succeeds. Every state the automaton can reach can
   still be completed, so the model can never paint itself into a corner.

   Choices that keep the automaton small (the output is still plain JSON that validates):

   - no whitespace anywhere: ``{"a":1,"b":[true]}``;
   - keys in a fixed order: the required properties first, then the optional ones, each group
     in the order of ``properties``; an optional property may be skipped, a required one not;
     no key outside ``properties`` is ever produced;
   - string values: any UTF-8 except raw control characters; the escapes ``\\" \\\\ \\/ \\b
     \\f \\n \\r \\t`` (no ``\\u``, so no lone surrogates); ``minLength``/``maxLength`` count
     code points, as JSON Schema does, an escape counting as one. Keys and enum values are
     written as ``json.dumps`` writes them (``\\u0001`` included);
   - a string with no ``maxLength`` is ended after ``UNBOUNDED_STRING_CHARS`` characters (the
     value stays valid: the schema sets no maximum). The bundled model learned to write prose,
     and inside an open string it would write on until ``max_tokens``;
   - an array with no maximum may not end within ``max_tokens``: the finish then says
     ``complete=False`` (give tool schemas a ``maxItems``);
   - numbers: ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?`` with at most 15 integer
     digits, 15 fraction digits and 2 exponent digits (integers: the first part only);
   - ``enum``/``const`` (any JSON values) become literal alternatives, written compactly;
   - supported keywords: ``type`` (one or a list whose first bytes differ, e.g.
     ``["string", "null"]``), ``properties``, ``required``, ``additionalProperties``,
     ``items``, ``minItems``, ``maxItems``, ``minLength``, ``maxLength``, ``enum``, ``const``
     and annotations (``description``, ``title``, ``format``…). Anything else that could
     reject a value (``minimum``, ``pattern``, ``anyOf``, ``$ref``…) raises
     :class:`UnsupportedSchema` rather than being silently ignored.

   Speed: tokens sit in a byte trie, so a depth-first walk shares the work of common
   prefixes and prunes a whole subtree at the first byte that fails; the automaton's
   transitions are memoised per state, and masks are cached per state. Counters (characters
   left, items left) are clamped to "more than the longest token" before the lookup, because
   beyond that one token cannot tell them apart; so a long string reuses one mask.

3. **Prompt format** for the bundled model, which was never trained on tools: the tool
   definitions go at the end of the system prompt (:func:`tools_system_prompt`); a tool call
   is an assistant turn ``tool_use NAME`` + newline + the JSON input (:func:`tool_call_text`);
   a tool result is a user turn (:func:`tool_result_text`), as in the Messages API.

Example:
    >>> run_tool("calculator", {"expression": "2 ** 10 / 4"})
    ('{"result": 256.0}', False)
"""
from __future__ import annotations

import ast
import codecs
import copy
import json
import math
import operator
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from explainer.lifecycle import jsonlimits, lru
from explainer.llm.generate import banned_ids
from explainer.llm.model import ContextWindowExceeded, TinyTransformer
from explainer.llm.sampling import Candidate, SamplingParams, distribution, draw
from explainer.llm.tokenizer import Tokenizer

DEMO_DATA_DIR = Path(__file__).resolve().parent / "demo_data"

# =====================================================================================
# 1. Demo tools
# =====================================================================================

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ToolError(Exception):
    """A tool ran but could not answer; its message becomes a ``tool_result`` with ``is_error``."""


@dataclass(frozen=True)
class Tool:
    """One tool: its Messages API definition and the function that runs it.

    ``handler(input, clock)`` gets input that already validates against ``input_schema``
    and returns a JSON-serialisable result, or raises :class:`ToolError`.
    """

    name: str
    description: str
    input_schema: dict
    handler: Callable[[dict, Clock], Any] = field(repr=False, compare=False)

    def definition(self) -> dict:
        """The tool as a request's ``tools`` list carries it (a copy: callers may change it)."""
        return {"name": self.name, "description": self.description, "input_schema": copy.deepcopy(self.input_schema)}


@lru_cache(maxsize=1)
def load_dags() -> dict[str, dict]:
    """The bundled, invented DAG table, by ``dag_id`` (read once)."""
    rows = json.loads((DEMO_DATA_DIR / "dags.json").read_text(encoding="utf-8"))["dags"]
    return {row["dag_id"]: row for row in rows}


def _get_dag_status(args: dict, clock: Clock) -> dict:
    dags = load_dags()
    row = dags.get(args["dag_id"])
    if row is None:  # the schema's enum stops this first; kept for callers that skip validation
        raise ToolError(f"unknown DAG {args['dag_id']!r}; known DAGs: {', '.join(sorted(dags))}")
    return row


# ---- calculator ---------------------------------------------------------------------
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 100  # |exponent| above this is refused before computing: 10 ** 10 ** 10 would hang
MAX_INT_BITS = 1024  # an intermediate integer beyond ~1e308 is refused, like a float overflow

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _check_size(value: int | float) -> int | float:
    if isinstance(value, complex):  # (-8) ** 0.5 is complex in Python
        raise ToolError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("the result is too large")
    return value


def _evaluate(node: ast.AST) -> int | float:
    """Evaluate an arithmetic AST; any node that is not a number or an allowed operator is refused."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # type(): True is an int too
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent {right} is too large (at most {MAX_EXPONENT} in absolute value)")
        try:
            return _check_size(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("the result is too large") from None
    raise ToolError("only numbers, + - * / ** and parentheses are allowed")


def calculate(expression: str) -> int | float:
    """Arithmetic on numbers with + - * / ** and parentheses, parsed with ``ast`` (never ``eval``).

    Example: ``calculate("(1 + 2) * 3 ** 2") == 27``
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError("not an arithmetic expression") from None
    return _evaluate(tree)


def _calculator(args: dict, clock: Clock) -> dict:
    return {"result": calculate(args["expression"])}


# ---- get_time -------------------------------------------------------------------------
def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
        return True
    except (ZoneInfoNotFoundError, ValueError):
        return False


# A few well-known zones, kept only where this machine's time-zone database has them;
# UTC never needs the database.
TIMEZONES = ("UTC",) + tuple(n for n in ("Europe/London", "Europe/Paris", "America/New_York",
                                          "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney")
                             if _zone_exists(n))


def _get_time(args: dict, clock: Clock) -> dict:
    name = args.get("timezone", "UTC")
    if name == "UTC":
        zone = timezone.utc
    else:
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {name!r}; available: {', '.join(TIMEZONES)}") from None
    now = clock().astimezone(zone)
    return {"timezone": name, "time": now.isoformat(timespec="seconds")}


def _object(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


DEMO_TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("get_dag_status",
         "Look up one Airflow DAG of the (invented) demo deployment: schedule, owner, whether it is paused, "
         "the state and times of its last run, and when it runs next.",
         _object({"dag_id": {"type": "string", "enum": sorted(load_dags()), "description": "The DAG's id."}}, ["dag_id"]),
         _get_dag_status),
    Tool("calculator",
         "Evaluate an arithmetic expression with numbers, + - * / ** and parentheses. Returns {\"result\": number}.",
         _object({"expression": {"type": "string", "maxLength": MAX_EXPRESSION_CHARS,
                                 "description": "For example (3 + 4) * 2 ** 3"}}, ["expression"]),
         _calculator),
    Tool("get_time",
         "The current date and time in a time zone, in ISO 8601.",
         _object({"timezone": {"type": "string", "enum": list(TIMEZONES),
                               "description": "An IANA time zone name; UTC when left out."}}, []),
         _get_time),
)}


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def validate_input(schema: dict, value: Any) -> str | None:
    """None when ``value`` validates against ``schema``, else one readable error ("where: why").

    Example: ``validate_input({"type": "integer"}, "x") == "input: 'x' is not of type 'integer'"``
    """
    for where, v in (("schema", schema), ("input", value)):  # jsonschema recurses once per level
        try:
            jsonlimits.check_depth(v)
        except jsonlimits.TooDeep as exc:
            return f"{where}: {exc}"
    error = best_match(_validator(json.dumps(schema)).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "input"
    return f"{where}: {error.message}"


def run_tool(name: str, tool_input: Any, *, tools: dict[str, Tool] | None = None,
             clock: Clock = utc_now) -> tuple[str, bool]:
    """Run one tool call as the client would: ``(content, is_error)`` for its ``tool_result`` block.

    The input is validated against the tool's schema before the tool runs. A bug in a tool
    raises rather than being reported as the model's fault.
    """
    tools = DEMO_TOOLS if tools is None else tools
    tool = tools.get(name)
    if tool is None:
        return f"unknown tool {name!r}; available: {', '.join(tools)}", True
    problem = validate_input(tool.input_schema, tool_input)
    if problem is not None:
        return f"invalid input for {name}: {problem}", True
    try:
        result = tool.handler(tool_input, clock)
    except ToolError as exc:
        return str(exc), True
    return json.dumps(result, ensure_ascii=False), False


# =====================================================================================
# 2. Schema-constrained decoding
# =====================================================================================

class UnsupportedSchema(ValueError):
    """The schema uses a keyword the constrained decoder cannot enforce (decode without it)."""


def _check_schema_depth(schema: Any) -> None:
    """UnsupportedSchema (never RecursionError from json.dumps, jsonschema or the compiler)
    when the schema's JSON nests deeper than the app's one limit; checked without recursion."""
    try:
        jsonlimits.check_depth(schema)
    except jsonlimits.TooDeep:
        raise UnsupportedSchema(f"the schema nests too deeply (more than {jsonlimits.MAX_JSON_DEPTH} "
                                "levels of objects and arrays)") from None


MAX_INT_DIGITS, MAX_FRAC_DIGITS, MAX_EXP_DIGITS = 15, 15, 2
MAX_NESTING = 8  # containers inside containers; tool schemas in the family go to 3
UNBOUNDED_STRING_CHARS = 64  # where the decoder ends a string whose schema has no maxLength

# Actions a frame returns for one byte. "AGAIN" means the byte was not consumed and is fed
# to the new top of the stack (a number ends at the first byte that cannot continue it).
_SET, _PUSH, _PUSH_AGAIN, _POP, _POP_AGAIN, _SWAP_AGAIN = range(6)
_POP_ACT, _POP_AGAIN_ACT = (_POP,), (_POP_AGAIN,)

_QUOTE, _BACKSLASH, _COMMA = 0x22, 0x5C, 0x2C
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET = 0x7B, 0x7D, 0x5B, 0x5D
_DIGITS = frozenset(range(0x30, 0x3A))
_ESCAPES = frozenset(b'"\\/bfnrt')

# UTF-8 lead byte -> (continuation bytes to come, allowed range of the next one). The narrow
# ranges after E0, ED, F0 and F4 rule out overlong forms, surrogates and code points > U+10FFFF.
_UTF8_LEAD: list[tuple[int, int, int] | None] = [None] * 256
for _b in range(0xC2, 0xE0):
    _UTF8_LEAD[_b] = (1, 0x80, 0xBF)
for _b in range(0xE1, 0xF0):
    _UTF8_LEAD[_b] = (2, 0x80, 0xBF)
_UTF8_LEAD[0xE0], _UTF8_LEAD[0xED] = (2, 0xA0, 0xBF), (2, 0x80, 0x9F)
for _b in range(0xF1, 0xF4):
    _UTF8_LEAD[_b] = (3, 0x80, 0xBF)
_UTF8_LEAD[0xF0], _UTF8_LEAD[0xF4] = (3, 0x90, 0xBF), (3, 0x80, 0x8F)


def _dec(left: int) -> int:
    """One fewer left; -1 means unbounded and stays so."""
    return left - 1 if left > 0 else left


def _clamp(n: int, cap: int) -> int:
    return n if n < cap else cap


class _Trie:
    """Byte strings -> values, as child dicts; used for enum literals and object keys."""

    def __init__(self, items: list[tuple[bytes, Any]]):
        self.children: list[dict[int, int]] = [{}]
        self.value: list[Any] = [None]
        for data, value in items:
            node = 0
            for b in data:
                nxt = self.children[node].get(b)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][b] = nxt
                    self.children.append({})
                    self.value.append(None)
                node = nxt
            self.value[node] = value


# Each node is one compiled schema; a frame is a hashable tuple whose first item is the node's
# index. ``step(frame, byte)`` returns an action tuple or None (the byte is not allowed), and
# ``canon(frame, cap)`` clamps counters for the mask cache.

class _Node:
    idx: int
    first: frozenset[int]  # bytes a value of this node can start with

    def initial(self) -> tuple:
        raise NotImplementedError

    def step(self, f: tuple, b: int):
        raise NotImplementedError

    def canon(self, f: tuple, cap: int) -> tuple:
        return f


class _Literal(_Node):
    """One of a few exact byte strings (booleans, null, enum and const values)."""

    def __init__(self, idx: int, options: list[bytes]):
        self.idx, self.trie = idx, _Trie([(o, True) for o in options])
        self.first = frozenset(o[0] for o in options)

    def initial(self) -> tuple:
        return (self.idx, 0)

    def step(self, f, b):
        children = self.trie.children
        nxt = children[f[1]].get(b)
        if nxt is not None:
            # Pop at once when nothing can follow, so a finished document is an empty stack.
            return _POP_ACT if self.trie.value[nxt] and not children[nxt] else (_SET, (self.idx, nxt))
        return _POP_AGAIN_ACT if self.trie.value[f[1]] else None  # e.g. enum [1, 12] after "1"


class _String(_Node):
    """frame: (idx, phase 0 before quote | 1 inside | 2 after backslash, left, need, utf8_rem, lo, hi).

    ``left`` characters may still be added (-1: no maxLength), ``need`` more are required
    before the closing quote; ``utf8_rem`` continuation bytes in [lo, hi] must come next.
    """

    first = frozenset({_QUOTE})

    def __init__(self, idx: int, min_len: int, max_len: int | None):
        self.idx, self.min_len, self.max_len = idx, min_len, max_len

    def initial(self) -> tuple:
        return (self.idx, 0, -1 if self.max_len is None else self.max_len, self.min_len, 0, 0, 0)

    def step(self, f, b):
        idx, phase, left, need, rem, lo, hi = f
        if phase == 1:
            if rem:
                if not lo <= b <= hi:
                    return None
                return (_SET, (idx, 1, left, need, rem - 1, 0x80, 0xBF) if rem > 1 else (idx, 1, left, need, 0, 0, 0))
            if b == _QUOTE:
                return _POP_ACT if need == 0 else None
            if b < 0x20 or left == 0:
                return None
            left, need = _dec(left), need - 1 if need else 0  # a new character starts here
            if b < 0x80:
                return (_SET, (idx, 2 if b == _BACKSLASH else 1, left, need, 0, 0, 0))
            lead = _UTF8_LEAD[b]
            return None if lead is None else (_SET, (idx, 1, left, need) + lead)
        if phase == 0:
            return (_SET, (idx, 1, left, need, 0, 0, 0)) if b == _QUOTE else None
        return (_SET, (idx, 1, left, need, 0, 0, 0)) if b in _ESCAPES else None  # phase 2: the escaped char

    def canon(self, f, cap):
        idx, phase, left, need, rem, lo, hi = f
        return (idx, phase, _clamp(left, cap), _clamp(need, cap), rem, lo, hi)


# Number sub-states; accepting ones may end at the first byte that cannot continue them.
_N_START, _N_MINUS, _N_ZERO, _N_INT, _N_DOT, _N_FRAC, _N_E, _N_ESIGN, _N_EXP = range(9)


class _Number(_Node):
    """frame: (idx, sub-state, digits in the current part)."""

    first = frozenset(_DIGITS | {0x2D})

    def __init__(self, idx: int, integer: bool):
        self.idx, self.integer = idx, integer

    def initial(self) -> tuple:
        return (self.idx, _N_START, 0)

    def step(self, f, b):
        idx, sub, k = f
        digit = 0x30 <= b <= 0x39
        if sub == _N_START or sub == _N_MINUS:
            if b == 0x30:
                return (_SET, (idx, _N_ZERO, 1))
            if digit:
                return (_SET, (idx, _N_INT, 1))
            return (_SET, (idx, _N_MINUS, 0)) if b == 0x2D and sub == _N_START else None
        if sub == _N_ZERO or sub == _N_INT:
            if digit and sub == _N_INT and k < MAX_INT_DIGITS:
                return (_SET, (idx, _N_INT, k + 1))
            if not self.integer:
                if b == 0x2E:
                    return (_SET, (idx, _N_DOT, 0))
                if b in (0x65, 0x45):
                    return (_SET, (idx, _N_E, 0))
            return _POP_AGAIN_ACT
        if sub == _N_DOT:
            return (_SET, (idx, _N_FRAC, 1)) if digit else None
        if sub == _N_FRAC:
            if digit and k < MAX_FRAC_DIGITS:
                return (_SET, (idx, _N_FRAC, k + 1))
            return (_SET, (idx, _N_E, 0)) if b in (0x65, 0x45) else _POP_AGAIN_ACT
        if sub == _N_E:
            if b in (0x2B, 0x2D):
                return (_SET, (idx, _N_ESIGN, 0))
            return (_SET, (idx, _N_EXP, 1)) if digit else None
        if sub == _N_ESIGN:
            return (_SET, (idx, _N_EXP, 1)) if digit else None
        if digit and k < MAX_EXP_DIGITS:  # _N_EXP
            return (_SET, (idx, _N_EXP, k + 1))
        return _POP_AGAIN_ACT


class _Object(_Node):
    """frame: (idx, phase, i, key trie node). Phases: 0 before "{", 1 after "{", 2 in a key,
    3 after a value, 4 after ",". ``i`` is the first property that may still come.

    Properties are in a fixed order (required first), so from ``i`` the candidate keys are
    ``i, i+1, …`` up to and including the first required one; each key is matched with its
    quotes and colon (``"name":``) in a trie built per ``i``.
    """

    first = frozenset({_LBRACE})

    def __init__(self, idx: int, props: list[tuple[str, _Node]], n_required: int):
        self.idx, self.props, self.n_required = idx, props, n_required
        self.keys: list[_Trie] = []
        for i in range(len(props) + 1):
            stop = i + 1 if i < n_required else len(props)
            self.keys.append(_Trie([(_json_bytes(props[j][0]) + b":", j) for j in range(i, stop)]))

    def initial(self) -> tuple:
        return (self.idx, 0, 0, 0)

    def _key(self, i: int, pos: int, b: int):
        trie = self.keys[i]
        nxt = trie.children[pos].get(b)
        if nxt is None:
            return None
        j = trie.value[nxt]
        if j is None:
            return (_SET, (self.idx, 2, i, nxt))
        return (_PUSH, (self.idx, 3, j + 1, 0), self.props[j][1].initial())  # the colon was the last byte

    def step(self, f, b):
        idx, phase, i, pos = f
        if phase == 2:
            return self._key(i, pos, b)
        if phase == 3 or phase == 1:
            if b == _RBRACE:
                return _POP_ACT if i >= self.n_required else None
            if phase == 3:
                return (_SET, (idx, 4, i, 0)) if b == _COMMA and i < len(self.props) else None
            return self._key(i, 0, b)
        if phase == 4:
            return self._key(i, 0, b)
        return (_SET, (idx, 1, 0, 0)) if b == _LBRACE else None


class _Array(_Node):
    """frame: (idx, phase 0 before "[" | 1 after "[" | 2 after an item | 3 after ",", left, need)."""

    first = frozenset({_LBRACKET})

    def __init__(self, idx: int, item: _Node, min_items: int, max_items: int | None):
        self.idx, self.item, self.min_items, self.max_items = idx, item, min_items, max_items

    def initial(self) -> tuple:
        return (self.idx, 0, -1 if self.max_items is None else self.max_items, self.min_items)

    def step(self, f, b):
        idx, phase, left, need = f
        if phase == 0:
            return (_SET, (idx, 1, left, need)) if b == _LBRACKET else None
        if b == _RBRACKET and phase != 3:
            return _POP_ACT if need == 0 else None
        if phase == 2:
            return (_SET, (idx, 3, left, need)) if b == _COMMA and left != 0 else None
        if left == 0:  # phase 1 of "maxItems": 0
            return None
        return (_PUSH_AGAIN, (idx, 2, _dec(left), need - 1 if need else 0), self.item.initial())

    def canon(self, f, cap):
        idx, phase, left, need = f
        return (idx, phase, _clamp(left, cap), _clamp(need, cap))


class _Union(_Node):
    """Several types whose values start with different bytes: the first byte picks one."""

    def __init__(self, idx: int, branches: list[_Node]):
        self.idx, self.by_first = idx, {b: n for n in branches for b in n.first}
        self.first = frozenset(self.by_first)

    def initial(self) -> tuple:
        return (self.idx,)

    def step(self, f, b):
        node = self.by_first.get(b)
        return None if node is None else (_SWAP_AGAIN, node.initial())


def _json_bytes(value: Any) -> bytes:
    """The compact JSON of ``value`` as UTF-8: how keys and enum values are written."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise UnsupportedSchema(f"cannot write {value!r} as JSON: {exc}") from None


_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment",
                "deprecated", "readOnly", "writeOnly", "format"}  # format is not asserted by default
_KEYWORDS = {"string": {"minLength", "maxLength"}, "integer": set(), "number": set(), "boolean": set(), "null": set(),
             "object": {"properties", "required", "additionalProperties"},
             "array": {"items", "minItems", "maxItems"}}


class _Compiler:
    def __init__(self) -> None:
        self.nodes: list[_Node] = []

    def add(self, make: Callable[[int], _Node]) -> _Node:
        node = make(len(self.nodes))
        self.nodes.append(node)
        return node

    def compile(self, schema: Any, path: str, depth: int) -> _Node:
        if not isinstance(schema, dict):
            raise UnsupportedSchema(f"{path}: a schema must be a JSON object")
        if "enum" in schema or "const" in schema:
            options = schema["enum"] if "enum" in schema else [schema["const"]]
            if not isinstance(options, list):
                raise UnsupportedSchema(f"{path}: enum must be a list")
            # Only values that validate against the whole schema can ever be right.
            check = Draft202012Validator(schema)
            literals = list(dict.fromkeys(_json_bytes(v) for v in options if check.is_valid(v)))
            if not literals:
                raise UnsupportedSchema(f"{path}: no enum value validates against the schema")
            return self.add(lambda i: _Literal(i, literals))
        types = schema.get("type")
        if isinstance(types, list):
            if not types or not all(isinstance(t, str) for t in types):
                raise UnsupportedSchema(f"{path}: 'type' must be a name or a non-empty list of names")
            types = list(dict.fromkeys(types))
            if "integer" in types and "number" in types:
                types.remove("integer")  # every integer is a number
            if len(types) == 1:
                types = types[0]
            else:
                # Each branch keeps the keywords of its own type (maxLength means nothing to null).
                others = set().union(*_KEYWORDS.values())
                branches = [self.compile({k: v for k, v in schema.items() if k not in others or k in _KEYWORDS.get(t, ())}
                                         | {"type": t}, path, depth) for t in types]
                firsts = [n.first for n in branches]
                if sum(len(s) for s in firsts) != len(frozenset().union(*firsts)):
                    raise UnsupportedSchema(f"{path}: types {types} cannot be told apart by their first byte")
                return self.add(lambda i: _Union(i, branches))
        if not isinstance(types, str) or types not in _KEYWORDS:
            raise UnsupportedSchema(f"{path}: 'type' must be one of {sorted(_KEYWORDS)} (or a list of them)")
        unknown = set(schema) - _ANNOTATIONS - _KEYWORDS[types] - {"type"}
        if unknown:
            raise UnsupportedSchema(f"{path}: keywords {sorted(unknown)} are not supported for constrained decoding")
        if types == "string":
            lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
            if hi is not None and int(hi) < lo:
                raise UnsupportedSchema(f"{path}: maxLength < minLength")
            # No maxLength: the decoder still ends the string after UNBOUNDED_STRING_CHARS (valid either way).
            hi = max(lo, UNBOUNDED_STRING_CHARS) if hi is None else int(hi)
            return self.add(lambda i: _String(i, lo, hi))
        if types in ("integer", "number"):
            return self.add(lambda i: _Number(i, types == "integer"))
        if types == "boolean":
            return self.add(lambda i: _Literal(i, [b"true", b"false"]))
        if types == "null":
            return self.add(lambda i: _Literal(i, [b"null"]))
        if depth >= MAX_NESTING:
            raise UnsupportedSchema(f"{path}: nested deeper than {MAX_NESTING} containers")
        if types == "array":
            if "items" not in schema:
                raise UnsupportedSchema(f"{path}: an array needs an 'items' schema")
            item = self.compile(schema["items"], f"{path}/items", depth + 1)
            lo, hi = int(schema.get("minItems", 0)), schema.get("maxItems")
            if hi is not None and int(hi) < lo:
                raise UnsupportedSchema(f"{path}: maxItems < minItems")
            return self.add(lambda i: _Array(i, item, lo, None if hi is None else int(hi)))
        props = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(props, dict) or not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise UnsupportedSchema(f"{path}: 'properties' must be an object and 'required' a list of names")
        missing = [r for r in required if r not in props]
        if missing:
            raise UnsupportedSchema(f"{path}: required {missing} not in properties")
        order = [k for k in props if k in required] + [k for k in props if k not in required]
        compiled = [(k, self.compile(props[k], f"{path}/properties/{k}", depth + 1)) for k in order]
        return self.add(lambda i: _Object(i, compiled, len(set(required))))


@dataclass
class _TokenTrie:
    """All non-special tokens by their bytes. ``edges[node]`` lists (byte, child, token ids
    ending at child, whether child has children); node 0 is the root."""

    edges: list[list[tuple[int, int, tuple[int, ...], bool]]]
    max_len: int


_TOKEN_TRIES: dict[int, tuple[Tokenizer, _TokenTrie]] = {}


def _token_trie(tok: Tokenizer) -> _TokenTrie:
    hit = _TOKEN_TRIES.get(id(tok))
    if hit is not None and hit[0] is tok:  # the tokenizer is kept alive beside its trie, so its id stays unique
        return hit[1]
    children: list[dict[int, int]] = [{}]
    ends: list[list[int]] = [[]]
    for t in range(tok.vocab_size):
        if tok.is_special(t):
            continue
        node = 0
        for b in tok.token_bytes(t):
            nxt = children[node].get(b)
            if nxt is None:
                nxt = children[node][b] = len(children)
                children.append({})
                ends.append([])
            node = nxt
        ends[node].append(t)
    edges = [[(b, c, tuple(ends[c]), bool(children[c])) for b, c in sorted(kids.items())] for kids in children]
    trie = _TokenTrie(edges, max(len(tok.token_bytes(t)) for t in range(tok.vocab_size)))
    _TOKEN_TRIES[id(tok)] = (tok, trie)
    return trie


class _Machine:
    """The automaton of one grammar over one tokenizer, with its transition memo and mask cache.

    A state is the stack of frames (a tuple); ``()`` means the document is complete. Shared
    by every constraint on the same schema, so masks stay warm across requests.
    """

    def __init__(self, nodes: list[_Node], root: _Node, tok: Tokenizer):
        self.nodes, self.tok = nodes, tok
        self.trie = _token_trie(tok)
        self.cap = self.trie.max_len + 1  # one token adds at most max_len characters or items
        self.start: tuple = (root.initial(),)
        self.end_id = tok.special_id("<|end|>")
        self._index: dict[tuple, int] = {}
        self._states: list[tuple] = []
        self._rows: list[list[int | None]] = []  # per state id: next state id per byte, -1 dead
        self._masks: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()
        done = np.zeros(tok.vocab_size, dtype=bool)
        done[self.end_id] = True
        done.flags.writeable = False
        self.done_mask = done

    def approx_bytes(self) -> int:
        """What this machine holds beyond the shared token trie: nodes, interned states, their
        transition rows (256 slots each) and the cached masks (one bool per vocabulary entry)."""
        per_state = 56 + 256 * 8 + 200  # the row list, the state tuple and its index entry
        per_mask = 112 + self.tok.vocab_size + 150  # the array and its key
        return 2048 + 400 * len(self.nodes) + per_state * len(self._states) + per_mask * len(self._masks)

    # ---- the automaton itself (pure: no memo) -------------------------------------------
    def step(self, state: tuple, b: int) -> tuple | None:
        """The state after byte ``b``, or None when ``b`` cannot come next."""
        nodes = self.nodes
        while state:
            top = state[-1]
            act = nodes[top[0]].step(top, b)
            if act is None:
                return None
            kind = act[0]
            if kind == _SET:
                return state[:-1] + (act[1],)
            if kind == _PUSH:
                return state[:-1] + (act[1], act[2])
            if kind == _POP:
                return state[:-1]
            if kind == _POP_AGAIN:
                state = state[:-1]
            elif kind == _PUSH_AGAIN:
                state = state[:-1] + (act[1], act[2])
            else:  # _SWAP_AGAIN
                state = state[:-1] + (act[1],)
        return None  # after the document, nothing may follow

    def walk(self, state: tuple | None, data: bytes) -> tuple | None:
        for b in data:
            if state is None:
                return None
            state = self.step(state, b)
        return state

    # ---- masks ---------------------------------------------------------------------------
    def canon(self, state: tuple) -> tuple:
        nodes, cap = self.nodes, self.cap
        return tuple(nodes[f[0]].canon(f, cap) for f in state)

    def mask(self, state: tuple) -> np.ndarray:
        """Read-only boolean mask [vocab] of the tokens allowed in ``state``."""
        if not state:
            return self.done_mask
        key = self.canon(state)
        m = self._masks.get(key)
        if m is None:
            with self._lock:  # the engine may decode on several threads
                m = self._masks.get(key)
                if m is None:
                    m = self._masks[key] = self._compute(key)
        return m

    def _intern(self, state: tuple) -> int:
        sid = self._index.get(state)
        if sid is None:
            sid = self._index[state] = len(self._states)
            self._states.append(state)
            self._rows.append([None] * 256)
        return sid

    def _next(self, sid: int, b: int) -> int:
        nxt = self.step(self._states[sid], b)
        ns = -1 if nxt is None else self._intern(nxt)
        self._rows[sid][b] = ns
        return ns

    def _compute(self, state: tuple) -> np.ndarray:
        """Depth-first over the token trie: a subtree is skipped at its first failing byte."""
        edges, rows = self.trie.edges, self._rows
        allowed: list[int] = []
        stack = [(0, self._intern(state))]
        while stack:
            node, sid = stack.pop()
            row = rows[sid]
            for b, child, ids, has_children in edges[node]:
                ns = row[b]
                if ns is None:
                    ns = self._next(sid, b)
                if ns < 0:
                    continue
                if ids:
                    allowed.extend(ids)
                if has_children:
                    stack.append((child, ns))
        m = np.zeros(self.tok.vocab_size, dtype=bool)
        m[allowed] = True
        m.flags.writeable = False
        return m


def _weigh(x: Any) -> int:
    """Bytes for the machine cache: a machine by its own estimate (it shares the tokenizer's
    trie with every other machine, which ``lru.sizeof`` would count again for each)."""
    return x.approx_bytes() if isinstance(x, _Machine) else lru.sizeof(x)


# Machines grow as they decode (states, masks): each lookup weighs the machine again, so the
# shared byte budget sees what the last request added.
_MACHINES = lru.LRU("schema automata", sizeof=_weigh, max_entries=64)


def _machine_for(key: str, tok: Tokenizer, build: Callable[[_Compiler], _Node]) -> _Machine:
    cache_key = (key, id(tok))
    m = _MACHINES.get(cache_key)
    if m is None or m.tok is not tok:
        compiler = _Compiler()
        root = build(compiler)
        m = _Machine(compiler.nodes, root, tok)
    _MACHINES.put(cache_key, m)
    return m


class _Constraint:
    """A cursor over one machine: the state after the tokens so far, and their bytes."""

    def __init__(self, machine: _Machine):
        self.machine = machine
        self.tokenizer = machine.tok
        self.state: tuple = machine.start
        self.tokens: list[int] = []
        self._bytes = bytearray()

    def allowed(self) -> np.ndarray:
        """Boolean mask [vocab]: True for each token that keeps the output a valid prefix
        (only ``<|end|>`` once :meth:`done`). Read-only and shared: copy before changing it."""
        return self.machine.mask(self.state)

    def accepts(self, token: int) -> bool:
        """Whether ``token`` may come next, by feeding its bytes (no mask involved)."""
        if token == self.machine.end_id:
            return self.done()
        if self.tokenizer.is_special(token) or not 0 <= token < self.tokenizer.vocab_size:
            return False
        return self.machine.walk(self.state, self.tokenizer.token_bytes(token)) is not None

    def advance(self, token: int) -> None:
        """Append ``token``; ValueError when it is not allowed here."""
        if token == self.machine.end_id and self.done():
            self.tokens.append(token)
            return
        if self.tokenizer.is_special(token) or not 0 <= token < self.tokenizer.vocab_size:
            raise ValueError(f"token {token} is not allowed here")
        data = self.tokenizer.token_bytes(token)
        new = self.machine.walk(self.state, data)
        if new is None:
            raise ValueError(f"token {token} ({data!r}) is not allowed after {bytes(self._bytes)!r}")
        self.state = new
        self.tokens.append(token)
        self._bytes += data

    def done(self) -> bool:
        return not self.state

    def output_bytes(self) -> bytes:
        return bytes(self._bytes)

    def text(self) -> str:
        """The output so far (a character cut mid-way shows as U+FFFD until it is complete)."""
        return self._bytes.decode("utf-8", errors="replace")

    def copy(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.tokens, new._bytes = list(self.tokens), bytearray(self._bytes)
        return new


class JsonConstraint(_Constraint):
    """Which tokens may come next so that the output stays a prefix of a JSON document that
    validates against ``schema`` (see the module docstring for the family of schemas).

    Example:
        >>> tok = load_tokenizer()
        >>> c = JsonConstraint({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}, tok)
        >>> c.allowed()[tok.encode('{"')[0]], c.allowed()[tok.encode("[")[0]]
        (True, False)
    """

    def __init__(self, schema: dict, tokenizer: Tokenizer, shared: bool = True):
        """``shared=False`` compiles a private automaton with empty caches (a reference for tests)."""
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise UnsupportedSchema("a tool's input_schema must have type 'object'")
        _check_schema_depth(schema)
        self.schema = schema

        def build(c: _Compiler) -> _Node:
            return c.compile(schema, "input_schema", 0)

        if shared:
            key = json.dumps(schema, ensure_ascii=False)  # keeps property order, which sets key order
            machine = _machine_for(key, tokenizer, build)
        else:
            compiler = _Compiler()
            root = build(compiler)
            machine = _Machine(compiler.nodes, root, tokenizer)
        super().__init__(machine)

    def value(self) -> Any:
        """The parsed document once :meth:`done`."""
        if not self.done():
            raise ValueError("the document is not complete yet")
        return json.loads(self.output_bytes())


class ChoiceConstraint(_Constraint):
    """Exactly one of a few byte strings, none a prefix of another (e.g. tool names + "\\n").

    Example: ``ChoiceConstraint(["get_time\\n", "calculator\\n"], tok)``
    """

    def __init__(self, options: list[str], tokenizer: Tokenizer):
        data = [o.encode("utf-8") for o in options]
        if not data or any(not d for d in data) or any(a != b and b.startswith(a) for a in data for b in data):
            raise ValueError("options must be non-empty and none may be a prefix of another")
        self.options = list(options)
        key = "choice:" + json.dumps(options)
        super().__init__(_machine_for(key, tokenizer, lambda c: c.add(lambda i: _Literal(i, data))))


# ---- the decoding loop ------------------------------------------------------------------

@dataclass
class ConstrainedStep:
    """One sampled token with the distribution before and after the mask."""

    index: int
    token: int
    piece: str  # text released by this token (whole characters only)
    n_allowed: int  # tokens the mask allowed at this step
    mass_removed: float  # probability the unconstrained distribution gave to forbidden tokens
    before: list[Candidate]  # top rows of the unconstrained distribution
    after: list[Candidate]  # top rows after masking (what the draw used)
    mask_ms: float


@dataclass
class ConstrainedFinish:
    text: str
    complete: bool
    stop_reason: str  # "complete" | "max_tokens" | "model_context_window_exceeded"
    output_tokens: int
    value: Any = None  # the parsed document when complete


def constrained_generate(logits_fn: Callable[[int | None], np.ndarray], constraint: _Constraint,
                         sampling_params: SamplingParams, rng: np.random.Generator, max_tokens: int,
                         n_candidates: int = 10) -> Iterator[ConstrainedStep | ConstrainedFinish]:
    """Sample until the constraint is complete (nothing more is appended: the caller adds
    ``<|end|>``) or ``max_tokens``; yields one :class:`ConstrainedStep` per token, then a
    :class:`ConstrainedFinish`.

    ``logits_fn(prev)`` returns next-token logits [V]: with None, after the prompt; otherwise
    after also feeding ``prev`` (see :func:`model_logits_fn`). The last token is never fed.

    Example:
        >>> fn = model_logits_fn(load_model(), prompt_ids)
        >>> *steps, finish = constrained_generate(fn, JsonConstraint(schema, tok), SamplingParams(), rng, 64)
    """
    tok = constraint.tokenizer
    banned = banned_ids(tok)  # "before" is what plain generation would draw from: role markers are never sampled
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    prev: int | None = None
    n, reason = 0, "complete"
    while not constraint.done():
        if n >= max_tokens:
            reason = "max_tokens"
            break
        try:
            logits = np.asarray(logits_fn(prev), dtype=np.float64)
        except ContextWindowExceeded:
            reason = "model_context_window_exceeded"
            break
        t0 = time.perf_counter()
        mask = constraint.allowed()
        mask_ms = (time.perf_counter() - t0) * 1000
        before = distribution(logits, sampling_params, banned=banned)
        after = distribution(np.where(mask, logits, -np.inf), sampling_params)
        token = draw(after, rng)
        constraint.advance(token)
        yield ConstrainedStep(n, token, decoder.decode(tok.token_bytes(token)), int(mask.sum()),
                              float(before.probs[~mask].sum()), before.rows(n_candidates),
                              after.rows(n_candidates), mask_ms)
        prev, n = token, n + 1
    complete = constraint.done()
    value = constraint.value() if complete and isinstance(constraint, JsonConstraint) else None
    yield ConstrainedFinish(constraint.text(), complete, reason, n, value)


def model_logits_fn(model: TinyTransformer, prompt_ids: list[int], cache=None,
                    first_logits: np.ndarray | None = None) -> Callable[[int | None], np.ndarray]:
    """A ``logits_fn`` over the bundled model: prefill ``prompt_ids`` (after what ``cache``
    holds) on the first call, then one token per call, reusing the KV cache.

    ``first_logits``: the caller already ran the prefill (to time it where it happens); the
    first call returns these instead of running the model."""
    cache = cache if cache is not None else model.new_cache()
    pending = [first_logits] if first_logits is not None else []

    def logits_fn(prev: int | None) -> np.ndarray:
        if prev is None and pending:
            return pending.pop()
        ids = prompt_ids[cache.length:] if prev is None else [prev]
        return model.forward(ids, cache=cache).logits[-1]

    logits_fn.cache = cache  # the caller appends <|end|> to it after the call
    return logits_fn


# =====================================================================================
# 3. Prompt format for tools (the bundled model's chat template has no tool role)
# =====================================================================================

TOOL_USE_PREFIX = "tool_use "


def tools_system_prompt(system: str | None, tools: list[dict]) -> str:
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
