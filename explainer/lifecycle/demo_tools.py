"""The demo tools that really run: what a client does with a ``tool_use`` block.

``get_dag_status`` (a bundled table of invented Airflow DAGs, in ``demo_data/dags.json``),
``calculator`` (arithmetic parsed with ``ast``, never ``eval``) and ``get_time``
(``zoneinfo``). Each has a Messages API definition (``{"name", "description",
"input_schema"}``, :meth:`Tool.definition`); :func:`run_tool` validates the input against
the schema with ``jsonschema`` before the tool runs and returns ``(content, is_error)``, the
two fields of a ``tool_result`` block.

The model's side of a call lives elsewhere: the input is decoded under the tool's schema by
``explainer.llm.constrained``, and calls and results are written into the model's text by
``explainer.lifecycle.tool_format``.

Example:
    >>> run_tool("calculator", {"expression": "2 ** 10 / 4"})
    ('{"result": 256.0}', False)
    >>> run_tool("get_time", {"timezone": "Mars/Olympus"})[1]
    True
"""
from __future__ import annotations

import ast
import copy
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from explainer.llm import jsonlimits

DEMO_DATA_DIR = Path(__file__).resolve().parent / "demo_data"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    input_schema: dict[str, Any]
    handler: Callable[[dict[str, Any], Clock], Any] = field(repr=False, compare=False)

    def definition(self) -> dict[str, Any]:
        """The tool as a request's ``tools`` list carries it (a copy: callers may change it)."""
        return {"name": self.name, "description": self.description, "input_schema": copy.deepcopy(self.input_schema)}


@lru_cache(maxsize=1)
def load_dags() -> dict[str, dict[str, Any]]:
    """The bundled, invented DAG table, by ``dag_id`` (read once)."""
    rows = json.loads((DEMO_DATA_DIR / "dags.json").read_text(encoding="utf-8"))["dags"]
    return {row["dag_id"]: row for row in rows}


def _get_dag_status(args: dict[str, Any], clock: Clock) -> dict[str, Any]:
    dags = load_dags()
    row = dags.get(args["dag_id"])
    if row is None:  # the schema's enum stops this first; kept for callers that skip validation
        raise ToolError(f"unknown DAG {args['dag_id']!r}; known DAGs: {', '.join(sorted(dags))}")
    return row


# ---- calculator ---------------------------------------------------------------------
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 100  # |exponent| above this is refused before computing: 10 ** 10 ** 10 would hang
MAX_INT_BITS = 1024  # an intermediate integer beyond ~1e308 is refused, like a float overflow

Number = int | float
_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number | complex]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _check_size(value: int | float | complex) -> int | float:
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
    value = node.value if isinstance(node, ast.Constant) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # True is an int too
        return _check_size(value)
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


def _calculator(args: dict[str, Any], clock: Clock) -> dict[str, Any]:
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


def _get_time(args: dict[str, Any], clock: Clock) -> dict[str, Any]:
    name = args.get("timezone", "UTC")
    zone: tzinfo
    if name == "UTC":
        zone = UTC
    else:
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {name!r}; available: {', '.join(TIMEZONES)}") from None
    now = clock().astimezone(zone)
    return {"timezone": name, "time": now.isoformat(timespec="seconds")}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
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


def validate_input(schema: dict[str, Any], value: Any) -> str | None:
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
