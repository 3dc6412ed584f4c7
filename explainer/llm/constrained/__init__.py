"""Schema-constrained decoding: the model writes JSON that validates against a tool's schema.

At every step, the set of token ids whose bytes keep the output a prefix of some JSON document
that validates against the tool's ``input_schema``. The schema is compiled to a byte-level
pushdown automaton (a stack of frames, one per open value); a token is allowed iff feeding all
its bytes from the current state succeeds. Every state the automaton can reach can still be
completed, so the model can never paint itself into a corner. It masks the vocabulary and
knows nothing of requests, tools or the Messages API (``explainer.lifecycle`` uses it).

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
  :class:`UnsupportedSchema` rather than being silently ignored; so does a schema nested
  deeper than ``explainer.llm.jsonlimits.MAX_JSON_DEPTH`` levels of JSON.

The modules, from the schema to the sampled tokens:

- ``schema``: the compiler, JSON Schema -> automaton nodes, one method per kind of schema;
- ``automaton``: the nodes and the actions they return for one byte;
- ``machine``: one automaton over one tokenizer -> masks of allowed token ids (the speed-ups
  are described there), shared per schema through a cache;
- ``decoding``: :class:`JsonConstraint`, :class:`ChoiceConstraint` and the sampling loop
  :func:`constrained_generate`.
"""
from explainer.llm.constrained.decoding import (
    ChoiceConstraint,
    ConstrainedFinish,
    ConstrainedStep,
    Constraint,
    JsonConstraint,
    ModelLogits,
    constrained_generate,
    model_logits_fn,
)
from explainer.llm.constrained.machine import Machine, MachineCache, use_machine_cache
from explainer.llm.constrained.schema import MAX_NESTING, UNBOUNDED_STRING_CHARS, UnsupportedSchema

__all__ = [
    "ChoiceConstraint", "ConstrainedFinish", "ConstrainedStep", "Constraint", "JsonConstraint", "MAX_NESTING",
    "Machine", "MachineCache", "ModelLogits", "UNBOUNDED_STRING_CHARS", "UnsupportedSchema", "constrained_generate",
    "model_logits_fn", "use_machine_cache",
]
