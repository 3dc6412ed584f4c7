"""JSON Schema -> automaton: the compiler of constrained decoding.

:meth:`Compiler.compile` turns a tool's ``input_schema`` into the nodes of
``explainer.llm.constrained.automaton`` (one per sub-schema), each kind of schema by its own
method. Anything that could reject a value and is not enforced raises
:class:`UnsupportedSchema`. The family of schemas and the form of the JSON written are
described in the package docstring (``explainer.llm.constrained``). No tokenizer here.

Example:
    >>> c = Compiler()
    >>> root = c.compile({"type": "array", "items": {"type": "boolean"}, "maxItems": 2}, "input_schema", 0)
    >>> type(root).__name__, [type(n).__name__ for n in c.nodes]
    ('Array', ['Literal', 'Array'])
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

from explainer.llm.constrained.automaton import Array, Literal, Node, Number, Object, String, Union
from explainer.llm.jsonlimits import MAX_JSON_DEPTH, TooDeep, check_depth

MAX_NESTING = 8  # containers inside containers; tool schemas in the family go to 3
UNBOUNDED_STRING_CHARS = 64  # where the decoder ends a string whose schema has no maxLength


class UnsupportedSchema(ValueError):
    """The schema uses a keyword the constrained decoder cannot enforce (decode without it)."""


def check_schema_depth(schema: Any) -> None:
    """UnsupportedSchema (never RecursionError from json.dumps, jsonschema or the compiler)
    when the schema's JSON nests deeper than the app's one limit; checked without recursion."""
    try:
        check_depth(schema)
    except TooDeep:
        raise UnsupportedSchema(f"the schema nests too deeply (more than {MAX_JSON_DEPTH} "
                                "levels of objects and arrays)") from None


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
_CONTAINERS = {"array", "object"}  # the kinds that count towards MAX_NESTING


class Compiler:
    """Compiles schemas into :attr:`nodes`: one method per kind of schema, a single type picked by ``_BY_TYPE``."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def add(self, make: Callable[[int], Node]) -> Node:
        node = make(len(self.nodes))
        self.nodes.append(node)
        return node

    def compile(self, schema: Any, path: str, depth: int) -> Node:
        """The node of ``schema`` (at ``path``, inside ``depth`` containers); UnsupportedSchema
        when it uses a keyword that could reject a value and is not enforced here."""
        if not isinstance(schema, dict):
            raise UnsupportedSchema(f"{path}: a schema must be a JSON object")
        if "enum" in schema or "const" in schema:
            return self._literals(schema, path)
        kind = _type_of(schema, path)
        if isinstance(kind, list):
            return self._union(schema, kind, path, depth)
        unknown = set(schema) - _ANNOTATIONS - _KEYWORDS[kind] - {"type"}
        if unknown:
            raise UnsupportedSchema(f"{path}: keywords {sorted(unknown)} are not supported for constrained decoding")
        if kind in _CONTAINERS and depth >= MAX_NESTING:
            raise UnsupportedSchema(f"{path}: nested deeper than {MAX_NESTING} containers")
        return self._BY_TYPE[kind](self, schema, path, depth)

    def _literals(self, schema: dict[str, Any], path: str) -> Node:
        """``enum`` or ``const``: the values that validate against the whole schema, as literals."""
        options = schema["enum"] if "enum" in schema else [schema["const"]]
        if not isinstance(options, list):
            raise UnsupportedSchema(f"{path}: enum must be a list")
        # Only values that validate against the whole schema can ever be right.
        check = Draft202012Validator(schema)
        literals = list(dict.fromkeys(_json_bytes(v) for v in options if check.is_valid(v)))
        if not literals:
            raise UnsupportedSchema(f"{path}: no enum value validates against the schema")
        return self.add(lambda i: Literal(i, literals))

    def _union(self, schema: dict[str, Any], types: list[str], path: str, depth: int) -> Node:
        """Several types, told apart by the first byte of their values."""
        # Each branch keeps the keywords of its own type (maxLength means nothing to null).
        others = set().union(*_KEYWORDS.values())
        branches = [self.compile({k: v for k, v in schema.items() if k not in others or k in _KEYWORDS.get(t, ())}
                                 | {"type": t}, path, depth) for t in types]
        firsts = [n.first for n in branches]
        if sum(len(s) for s in firsts) != len(frozenset().union(*firsts)):
            raise UnsupportedSchema(f"{path}: types {types} cannot be told apart by their first byte")
        return self.add(lambda i: Union(i, branches))

    def _string(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
        if hi is not None and int(hi) < lo:
            raise UnsupportedSchema(f"{path}: maxLength < minLength")
        # No maxLength: the decoder still ends the string after UNBOUNDED_STRING_CHARS (valid either way).
        hi = max(lo, UNBOUNDED_STRING_CHARS) if hi is None else int(hi)
        return self.add(lambda i: String(i, lo, hi))

    def _integer(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        return self.add(lambda i: Number(i, True))

    def _number(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        return self.add(lambda i: Number(i, False))

    def _boolean(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        return self.add(lambda i: Literal(i, [b"true", b"false"]))

    def _null(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        return self.add(lambda i: Literal(i, [b"null"]))

    def _array(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        if "items" not in schema:
            raise UnsupportedSchema(f"{path}: an array needs an 'items' schema")
        item = self.compile(schema["items"], f"{path}/items", depth + 1)
        lo, hi = int(schema.get("minItems", 0)), schema.get("maxItems")
        if hi is not None and int(hi) < lo:
            raise UnsupportedSchema(f"{path}: maxItems < minItems")
        return self.add(lambda i: Array(i, item, lo, None if hi is None else int(hi)))

    def _object(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(props, dict) or not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise UnsupportedSchema(f"{path}: 'properties' must be an object and 'required' a list of names")
        missing = [r for r in required if r not in props]
        if missing:
            raise UnsupportedSchema(f"{path}: required {missing} not in properties")
        order = [k for k in props if k in required] + [k for k in props if k not in required]
        children = [(k, self.compile(props[k], f"{path}/properties/{k}", depth + 1)) for k in order]
        compiled = [(_json_bytes(k) + b":", node) for k, node in children]  # each key as written, with its colon
        return self.add(lambda i: Object(i, compiled, len(set(required))))

    # the dispatch table: one method per type name of _KEYWORDS
    _BY_TYPE: dict[str, Callable[[Compiler, dict[str, Any], str, int], Node]] = {
        "string": _string, "integer": _integer, "number": _number, "boolean": _boolean, "null": _null,
        "array": _array, "object": _object,
    }


def _type_of(schema: dict[str, Any], path: str) -> str | list[str]:
    """The schema's type: one name of :data:`_KEYWORDS`, or a list of two or more names."""
    types = schema.get("type")
    if isinstance(types, list):
        if not types or not all(isinstance(t, str) for t in types):
            raise UnsupportedSchema(f"{path}: 'type' must be a name or a non-empty list of names")
        types = list(dict.fromkeys(types))
        if "integer" in types and "number" in types:
            types.remove("integer")  # every integer is a number
        if len(types) > 1:
            return types
        types = types[0]
    if not isinstance(types, str) or types not in _KEYWORDS:
        raise UnsupportedSchema(f"{path}: 'type' must be one of {sorted(_KEYWORDS)} (or a list of them)")
    return types
