"""Schema-constrained decoding: whatever the logits, the output is JSON that validates.

The references are jsonschema (the output validates), json.loads (it parses), and a
freshly compiled automaton walked byte by byte with no memo or mask cache (the mask allows
exactly the tokens whose bytes it accepts).
"""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from explainer.lifecycle.demo_tools import DEMO_TOOLS
from explainer.lifecycle.tool_format import TOOL_USE_PREFIX, tools_system_prompt
from explainer.llm.constrained import (
    ChoiceConstraint,
    ConstrainedFinish,
    ConstrainedStep,
    JsonConstraint,
    UnsupportedSchema,
    constrained_generate,
    model_logits_fn,
)
from explainer.llm.model import load_model
from explainer.llm.sampling import SamplingParams
from explainer.llm.tokenizer import load_tokenizer

TOK = load_tokenizer()
V = TOK.vocab_size
END = TOK.special_id("<|end|>")
SPECIALS = [t for t in range(V) if TOK.is_special(t)]
# Random logits favour tokens that end a string or an array or go on to the next member, so
# unbounded strings end within a few tokens while optional members still get written ("}" is
# not favoured: it would skip them).
CLOSERS = np.array([0.0 if TOK.is_special(t) else 5.0 if b'"' in TOK.token_bytes(t) else
                    2.0 if any(c in TOK.token_bytes(t) for c in b"],") else 0.0 for t in range(V)])

RICH = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
        "options": {"type": "object", "properties": {
            "verbose": {"type": "boolean"},
            "level": {"type": "string", "enum": ["low", "high", "très \"haut\""]},
        }, "required": ["level"], "additionalProperties": False},
    },
    "required": ["name", "count", "options"],
    "additionalProperties": False,
}


# ---- references -----------------------------------------------------------------------

def reference_mask(schema, prefix: bytes) -> np.ndarray:
    """The allowed set, token by token, on a fresh automaton: no memo, no mask cache."""
    fresh = JsonConstraint(schema, TOK, shared=False).machine
    state = fresh.walk(fresh.start, prefix)
    assert state is not None, f"the prefix {prefix!r} was never valid"
    mask = np.zeros(V, dtype=bool)
    if state == ():
        mask[END] = True
        return mask
    for t in range(V):
        if not TOK.is_special(t) and fresh.walk(state, TOK.token_bytes(t)) is not None:
            mask[t] = True
    return mask


def assert_valid(schema, text: str):
    value = json.loads(text)
    Draft202012Validator(schema).validate(value)
    return value


def fast_complete(c: JsonConstraint, rng, max_tokens=4000) -> bool:
    """Finish a document with biased random logits (Gumbel-max over the mask)."""
    for _ in range(max_tokens):
        if c.done():
            return True
        scores = np.where(c.allowed(), rng.normal(0, 2, V) + CLOSERS + rng.gumbel(size=V), -np.inf)
        c.advance(int(np.argmax(scores)))
    return c.done()


# ---- schemas from the bounded family, and documents that fit them ----------------------

NAMES = st.text(min_size=1, max_size=6)  # any code point but surrogates: quotes, backslashes, controls, emoji
ENUM_TEXT = st.text(max_size=6)


@st.composite
def strings(draw):
    schema = {"type": "string"}
    if draw(st.booleans()):
        schema["maxLength"] = draw(st.integers(0, 40))
    if draw(st.booleans()):
        schema["minLength"] = draw(st.integers(0, min(3, schema.get("maxLength", 3))))
    if draw(st.integers(0, 3)) == 0:
        return {"type": "string", "enum": draw(st.lists(ENUM_TEXT, min_size=1, max_size=4, unique=True))}
    return schema


LEAVES = st.one_of(strings(), st.just({"type": "integer"}), st.just({"type": "number"}), st.just({"type": "boolean"}))


@st.composite
def arrays(draw, items=LEAVES):
    schema = {"type": "array", "items": draw(items), "maxItems": draw(st.integers(0, 4))}
    if draw(st.booleans()):
        schema["minItems"] = draw(st.integers(0, schema["maxItems"]))
    return schema


def objects(depth: int = 1):
    """Objects nested up to three deep, with leaves, arrays of leaves and (beyond the brief's
    family, which the decoder also handles) arrays of objects."""
    kinds = ["leaf", "array"] if depth >= 3 else ["leaf", "array", "object", "object", "array of objects"]

    def child(kind):
        if kind == "leaf":
            return LEAVES
        if kind == "array":
            return arrays()
        return objects(depth + 1) if kind == "object" else arrays(objects(depth + 1))

    @st.composite
    def build(draw):
        props = draw(st.dictionaries(NAMES, st.sampled_from(kinds).flatmap(child), max_size=4 if depth == 1 else 3))
        required = [k for k in props if draw(st.integers(0, 2)) > 0]
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    return build()


def key_order(schema) -> list[str]:
    props, required = schema.get("properties", {}), schema.get("required", [])
    return [k for k in props if k in required] + [k for k in props if k not in required]


CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters=[chr(i) for i in range(32) if chr(i) not in "\b\f\n\r\t"])


def instances(schema):
    """Documents that validate, with keys in the decoder's order (what it must accept)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "string":
        return st.text(CHARS, min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 8))
    if kind == "integer":
        return st.integers(-10**15 + 1, 10**15 - 1)
    if kind == "number":
        return st.floats(-1e9, 1e9).map(lambda x: round(x, 6))
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(instances(schema["items"]), min_size=schema.get("minItems", 0), max_size=schema["maxItems"])

    @st.composite
    def obj(draw):
        out = {}
        for k in key_order(schema):
            if k in schema["required"] or draw(st.booleans()):
                out[k] = draw(instances(schema["properties"][k]))
        return out

    return obj()


def compact(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# ---- properties -----------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
@pytest.mark.slow
def test_it_accepts_every_valid_document_written_in_its_form(data):
    schema = data.draw(objects())
    doc = compact(data.draw(instances(schema)))
    c = JsonConstraint(schema, TOK)
    m = c.machine
    state = m.start
    for i, b in enumerate(doc):
        assert state != (), f"complete too early at byte {i} of {doc!r}"
        state = m.step(state, b)
        assert state is not None, f"byte {i} of {doc!r} refused"
    assert state == ()
    for t in TOK.encode(doc.decode()):  # the same through whole tokens
        assert c.allowed()[t]
        c.advance(t)
    assert c.done() and c.output_bytes() == doc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects(), st.integers(0, 2**32 - 1))
@pytest.mark.slow
def test_random_logits_always_give_json_that_validates(schema, seed):
    rng = np.random.default_rng(seed)
    c = JsonConstraint(schema, TOK)
    check_at = set(rng.integers(0, 12, size=2).tolist())  # steps where the whole mask is compared to the reference

    def logits_fn(prev):
        mask = c.allowed()
        assert not mask[SPECIALS].any(), "a special token allowed mid-document"
        if len(c.tokens) in check_at:
            np.testing.assert_array_equal(mask, reference_mask(schema, c.output_bytes()))
            for t in rng.choice(np.flatnonzero(mask), size=min(3, int(mask.sum())), replace=False):
                branch = c.copy()  # an allowed token can always be completed into a valid document
                branch.advance(int(t))
                assert fast_complete(branch, rng) and assert_valid(schema, branch.text()) is not None
        return rng.normal(0, 2, V) + CLOSERS

    *steps, finish = constrained_generate(logits_fn, c, SamplingParams(temperature=1.0), rng, max_tokens=4000)
    assert isinstance(finish, ConstrainedFinish) and finish.complete, finish.text
    value = assert_valid(schema, finish.text)
    assert finish.value == value and list(value) == [k for k in key_order(schema) if k in value]
    assert "".join(s.piece for s in steps) == finish.text and len(steps) == finish.output_tokens
    mask = c.allowed()  # after completion only <|end|>
    assert mask[END] and mask.sum() == 1
    c.advance(END)
    assert all(0.0 <= s.mass_removed <= 1.0 + 1e-9 and s.n_allowed >= 1 for s in steps)


@pytest.mark.parametrize("values", [
    ["a", "ab", "abc"],  # each a prefix of the next
    ['say "hi"', "back\\slash", "tab\there", "\x01ctl", "", "日本語", "🙂"],
])
def test_enum_values_come_out_exactly(values):
    schema = {"type": "object", "properties": {"v": {"type": "string", "enum": values}}, "required": ["v"]}
    seen = set()
    for seed in range(40):
        c = JsonConstraint(schema, TOK)
        assert fast_complete(c, np.random.default_rng(seed))
        seen.add(assert_valid(schema, c.text())["v"])
    assert seen <= set(values) and len(seen) >= 2
    for v in values:  # and each can be written
        c = JsonConstraint(schema, TOK)
        for t in TOK.encode(compact({"v": v}).decode()):
            c.advance(t)
        assert c.done()


@pytest.mark.slow
def test_the_mask_is_exact_across_the_clamped_counters():
    # Characters left and needed are clamped beyond the longest token for the mask cache:
    # walk a string to its limit and compare with the reference at every length.
    schema = {"type": "object", "properties": {"s": {"type": "string", "minLength": 28, "maxLength": 36},
                                               "n": {"type": "array", "items": {"type": "boolean"}, "maxItems": 30}},
              "required": ["s", "n"]}
    m = JsonConstraint(schema, TOK).machine  # one machine, so clamped states reuse cached masks
    docs = [b'{"s":"' + b"x" * k for k in range(37)]
    docs += [b'{"s":"' + b"x" * 30 + b'","n":[' + b",".join([b"true"] * k) for k in range(31)]
    for doc in docs:
        np.testing.assert_array_equal(m.mask(m.walk(m.start, doc)), reference_mask(schema, doc), err_msg=repr(doc))


# ---- what it refuses ------------------------------------------------------------------

@pytest.mark.parametrize("doc", [
    b'{ "name":"x"', b'{"count":1', b'{"name":"x","count":1,"zzz":1',  # whitespace, order, extra key
    b'{"name":"x","name"', b'{"name":"x","count":01', b'{"name":"x","count":1.5',
    b'{"name":"x","count":-}', b'{"name":"x","count":1,"ratio":1.e', b'{"name":"x","count":1,"ratio":.5',
    b'{"name":"x","count":1234567890123456', b'{"name":"x","count":1,"ratio":1e123',
    b'{"name":"' + b"x" * 31, b'{"name":"a\nb', b'{"name":"\\x', b'{"name":"\\u0041',
    b'{"name":"\xc0\x80', b'{"name":"\xed\xa0\x80', b'{"name":"\xf4\x90', b'{"name":"\x80',
    b'{"name":"x","count":1}', b'{"name":"x","count":1,"options":{"level":"medium"',
    b'{"name":"x","count":1,"options":{"level":"low"},"tags":["a","b","c","d"',
    b'{"name":"x","count":1,"options":{"level":"low"},"tags":[,', b'{"name":"x","count":true',
    b'{"name":"x","count":1,"options":{"level":"low"}}}',
])
def test_it_refuses_what_cannot_lead_to_a_valid_document(doc):
    m = JsonConstraint(RICH, TOK).machine
    assert m.walk(m.start, doc) is None


def test_it_refuses_tokens_that_do_not_fit_and_special_tokens():
    c = JsonConstraint(RICH, TOK)
    with pytest.raises(ValueError):
        c.advance(TOK.encode("[")[0])
    for t in SPECIALS:
        assert not c.allowed()[t] and not c.accepts(t)
        with pytest.raises(ValueError):
            c.advance(t)


@pytest.mark.parametrize("schema", [
    {"type": "array", "items": {"type": "string"}},  # a tool's input is an object
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}},
    {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}},
    {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}]}}},
    {"type": "object", "properties": {"x": {"$ref": "#/$defs/y"}}},
    {"type": "object", "properties": {"a": {"type": "array"}}},
    {"type": "object", "properties": {}, "required": ["ghost"]},
    {"type": "object", "properties": {"x": {"type": ["integer", "number", "string"], "enum": [1.5e400]}}},
    {"type": "object", "properties": {"x": {"type": "string", "enum": [1, 2]}}},
])
def test_it_says_which_schemas_it_cannot_enforce(schema):
    with pytest.raises(UnsupportedSchema):
        JsonConstraint(schema, TOK)


def test_it_handles_nullable_types_and_consts():
    schema = {"type": "object", "properties": {"x": {"type": ["string", "null"], "maxLength": 2},
                                               "k": {"const": {"a": [1, None]}}}, "required": ["x", "k"]}
    for doc in (b'{"x":null,"k":{"a":[1,null]}}', b'{"x":"ab","k":{"a":[1,null]}}'):
        m = JsonConstraint(schema, TOK).machine
        assert m.walk(m.start, doc) == ()
    m = JsonConstraint(schema, TOK).machine
    assert m.walk(m.start, b'{"x":"abc') is None


def test_it_reports_an_incomplete_document_at_max_tokens():
    rng = np.random.default_rng(0)
    c = JsonConstraint(RICH, TOK)
    *steps, finish = constrained_generate(lambda prev: rng.normal(size=V), c, SamplingParams(), rng, max_tokens=3)
    assert len(steps) == 3 and not finish.complete and finish.stop_reason == "max_tokens" and finish.value is None


def test_a_choice_constraint_picks_one_option_exactly():
    names = [f"{n}\n" for n in DEMO_TOOLS]
    for seed in range(10):
        rng = np.random.default_rng(seed)
        *_, finish = constrained_generate(lambda prev, rng=rng: rng.normal(size=V), ChoiceConstraint(names, TOK),
                                          SamplingParams(), rng, max_tokens=30)
        assert finish.complete and finish.text in names
    with pytest.raises(ValueError):
        ChoiceConstraint(["get", "get_time"], TOK)


# ---- the real model -------------------------------------------------------------------

def tool_prompt(tool_name: str, question: str) -> list[int]:
    system = tools_system_prompt("You are a helpful assistant.", [DEMO_TOOLS[tool_name].definition()])
    return TOK.encode_chat(system, [("user", question)]) + TOK.encode(f"{TOOL_USE_PREFIX}{tool_name}\n")


@pytest.mark.parametrize("tool_name, question, schema, temperature, seed", [
    ("get_dag_status", "Did the penguin census run last night?", None, 0.0, 0),
    ("get_dag_status", "Is the hatchery sync healthy?", None, 1.0, 1),
    ("calculator", "What is 12 times 7?", None, 0.7, 2),
    ("get_time", "What time is it in Tokyo?", None, 1.0, 3),
    ("get_time", "Describe the data.", RICH, 1.0, 4),
])
@pytest.mark.slow
def test_the_real_model_always_produces_valid_tool_input(tool_name, question, schema, temperature, seed):
    model = load_model()
    schema = schema or DEMO_TOOLS[tool_name].input_schema
    c = JsonConstraint(schema, TOK)
    fn = model_logits_fn(model, tool_prompt(tool_name, question))
    rng = np.random.default_rng(seed)
    *steps, finish = constrained_generate(fn, c, SamplingParams(temperature=temperature, top_p=0.95), rng, max_tokens=160)
    assert finish.complete, finish.text
    assert_valid(schema, finish.text)
    for s in steps:
        assert isinstance(s, ConstrainedStep) and s.after[0].final_probability > 0
        assert all(c_.token not in SPECIALS for c_ in s.after if c_.final_probability > 0)
        assert s.mask_ms >= 0 and 0 <= s.mass_removed <= 1 + 1e-9
    if tool_name == "get_dag_status":
        assert finish.value["dag_id"] in schema["properties"]["dag_id"]["enum"]
    fn(steps[-1].token)  # the caller closes the call with <|end|> on the same cache
    model.forward([END], cache=fn.cache)
