"""The demo tools run for real, refuse bad input, and say so in a tool_result's terms."""
import json
from datetime import UTC, datetime

import pytest
from jsonschema import Draft202012Validator

from explainer.lifecycle.demo_tools import (
    DEMO_TOOLS,
    MAX_EXPONENT,
    MAX_EXPRESSION_CHARS,
    TIMEZONES,
    Tool,
    ToolError,
    calculate,
    load_dags,
    run_tool,
    validate_input,
)
from explainer.lifecycle.tool_format import tool_call_text, tool_result_text, tools_system_prompt

FIXED = datetime(2031, 3, 14, 9, 26, 53, tzinfo=UTC)


def fixed_clock() -> datetime:
    return FIXED


def result(content: str):
    return json.loads(content)


# ---- definitions ----------------------------------------------------------------------

def test_it_defines_each_tool_in_the_messages_api_format():
    for name, tool in DEMO_TOOLS.items():
        d = tool.definition()
        assert set(d) == {"name", "description", "input_schema"} and d["name"] == name
        Draft202012Validator.check_schema(d["input_schema"])  # a valid JSON Schema
        assert d["input_schema"]["type"] == "object" and d["input_schema"]["additionalProperties"] is False


def test_it_keeps_the_dag_table_small_and_fictional():
    dags = load_dags()
    assert 10 <= len(dags) <= 15
    for row in dags.values():
        assert {"dag_id", "schedule", "owner", "paused", "last_run_state", "last_run_end", "next_run"} <= set(row)
    assert DEMO_TOOLS["get_dag_status"].input_schema["properties"]["dag_id"]["enum"] == sorted(dags)


# ---- get_dag_status -------------------------------------------------------------------

def test_it_returns_the_row_of_a_known_dag():
    content, is_error = run_tool("get_dag_status", {"dag_id": "penguin_census_nightly"})
    assert not is_error
    assert result(content) == load_dags()["penguin_census_nightly"]


def test_it_refuses_an_unknown_dag_before_running_the_tool():
    content, is_error = run_tool("get_dag_status", {"dag_id": "real_prod_pipeline"})
    assert is_error and content.startswith("invalid input for get_dag_status: dag_id:")
    assert "real_prod_pipeline" in content


def test_it_says_unknown_dag_when_the_handler_is_called_directly():
    with pytest.raises(ToolError, match="unknown DAG 'nope'"):
        DEMO_TOOLS["get_dag_status"].handler({"dag_id": "nope"}, fixed_clock)


# ---- calculator -----------------------------------------------------------------------

@pytest.mark.parametrize("expression, expected", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("2 ** 10", 1024), ("7 / 2", 3.5), ("-3 ** 2", -9),
    ("2 ** -1", 0.5), ("1.5e3 - 500", 1000.0), ("  +4  ", 4), ("((2))", 2),
])
def test_it_computes_arithmetic(expression, expected):
    content, is_error = run_tool("calculator", {"expression": expression})
    assert not is_error and result(content) == {"result": expected}


@pytest.mark.parametrize("expression, message", [
    ("__import__('os')", "only numbers"),
    ("__import__('os').system('true')", "only numbers"),
    ("(1).__class__", "only numbers"),
    ("x + 1", "only numbers"),
    ("'a' * 3", "only numbers"),
    ("True + 1", "only numbers"),
    ("1j * 1j", "only numbers"),
    ("[1, 2]", "only numbers"),
    ("2 // 3", "only numbers"),
    ("1 +", "not an arithmetic expression"),
    ("", "not an arithmetic expression"),
    ("1 / 0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("10 ** 10 ** 10", "too large"),
    (f"2 ** {MAX_EXPONENT + 1}", "too large"),
    ("9 ** 100 ** 1 * 9 ** 100 * 9 ** 100 * 9 ** 100", "too large"),
    ("1e308 * 10", "too large"),
    ("(-8) ** 0.5", "not a real number"),
    ("(" * 150 + "1" + ")" * 150, "is too long"),  # the schema's maxLength stops it before the parser
])
def test_it_refuses_what_is_not_safe_arithmetic(expression, message):
    content, is_error = run_tool("calculator", {"expression": expression})
    assert is_error and message in content


def test_it_never_calls_eval_on_a_long_expression():
    with pytest.raises(ToolError, match="longer than"):
        calculate("1+" * MAX_EXPRESSION_CHARS + "1")


# ---- get_time -------------------------------------------------------------------------

def test_it_tells_the_time_in_utc_by_default():
    content, is_error = run_tool("get_time", {}, clock=fixed_clock)
    assert not is_error and result(content) == {"timezone": "UTC", "time": "2031-03-14T09:26:53+00:00"}


def test_it_tells_the_time_in_a_named_zone():
    if "Europe/Paris" not in TIMEZONES:
        pytest.skip("no time-zone database on this machine")
    content, is_error = run_tool("get_time", {"timezone": "Europe/Paris"}, clock=fixed_clock)
    assert not is_error and result(content)["time"] == "2031-03-14T10:26:53+01:00"


def test_it_refuses_an_invalid_time_zone():
    for zone in ("Mars/Olympus_Mons", "../../etc/passwd", ""):
        content, is_error = run_tool("get_time", {"timezone": zone}, clock=fixed_clock)
        assert is_error and content.startswith("invalid input for get_time: timezone:")
    with pytest.raises(ToolError, match="unknown time zone"):
        DEMO_TOOLS["get_time"].handler({"timezone": "Mars/Olympus_Mons"}, fixed_clock)


# ---- validation and run_tool ----------------------------------------------------------

@pytest.mark.parametrize("name, tool_input, where", [
    ("calculator", {}, "input: 'expression' is a required property"),
    ("calculator", {"expression": 42}, "expression: 42 is not of type 'string'"),
    ("calculator", {"expression": "1", "extra": 1}, "input: Additional properties are not allowed"),
    ("calculator", {"expression": "1" * (MAX_EXPRESSION_CHARS + 1)}, "expression:"),
    ("get_dag_status", ["penguin_census_nightly"], "input:"),
    ("get_time", {"timezone": None}, "timezone:"),
])
def test_it_validates_input_against_the_schema_first(name, tool_input, where):
    content, is_error = run_tool(name, tool_input)
    assert is_error and content.startswith(f"invalid input for {name}: {where}")


def test_it_reports_an_unknown_tool_as_an_error_result():
    content, is_error = run_tool("rm_rf", {})
    assert is_error and "unknown tool 'rm_rf'" in content and "calculator" in content


def test_it_runs_a_tool_from_another_registry():
    echo = Tool("echo", "Echo.", {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                lambda args, clock: {"x": args["x"]})
    assert run_tool("echo", {"x": 3}, tools={"echo": echo}) == ('{"x": 3}', False)
    assert run_tool("calculator", {"expression": "1"}, tools={"echo": echo})[1] is True


def test_validate_input_says_none_for_valid_input():
    assert validate_input({"type": "integer"}, 3) is None
    assert validate_input({"type": "integer"}, "x") == "input: 'x' is not of type 'integer'"


def test_it_writes_the_tool_prompt_format():
    text = tools_system_prompt("Be brief.", [t.definition() for t in DEMO_TOOLS.values()])
    assert text.startswith("Be brief.\n\nYou can call these tools:")
    assert '"dag_id"' in text and "tool_use NAME" in text
    assert tool_call_text("get_time", "{}") == "tool_use get_time\n{}"
    assert tool_result_text("boom", is_error=True) == "tool_result (error): boom"
