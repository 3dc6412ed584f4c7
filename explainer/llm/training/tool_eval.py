"""The tool loop, measured on the held-out split through the engine the API uses.

Usage::

    python -m explainer.llm.training.evaluate --tools                 # the shipped weights
    python -m explainer.llm.training.evaluate --tools --weights other.npz --per-kind 30

The held-out conversations (``tool_corpus``, split ``heldout``: tool names, argument names and
identifiers the training never saw) become Messages API requests, parsed by
``lifecycle.payload.parse_request`` and run by ``lifecycle.engine.Engine``, at temperature 0.7
and several seeds:

- ``forced_argument``: ``tool_choice`` ``tool``: the call's argument equals the identifier in the question;
- ``any_argument``: ``tool_choice`` ``any``: the right tool, and the argument equals the identifier;
- ``auto_call``: ``tool_choice`` ``auto`` on a question its tool answers: the reply is a tool call
  (``auto_right_tool``: and of the right tool);
- ``auto_text``: ``auto`` on a question the tools need not or cannot answer: the reply is text;
- ``result_fact``: the second request (the question, the call, its ``tool_result``), ``auto``: the
  answer is text that contains the result's key fact.

Plus the article's example (``ARTICLE``): "Did my etl_pipeline DAG run today?" with a
``get_dag_status`` tool, then its result.
"""
from __future__ import annotations

import json
from pathlib import Path

from explainer.lifecycle.engine import Engine
from explainer.lifecycle.payload import parse_request
from explainer.llm.training import tool_corpus

TEMPERATURE = 0.7
SEEDS = (0, 1, 2)
TARGETS = {"forced_argument": 0.90, "auto_call": 0.85, "auto_text": 0.80, "result_fact": 0.70}

ARTICLE_TOOL = {"name": "get_dag_status", "description": "Get the status of an Airflow DAG: its last run and when it ran.",
                "input_schema": {"type": "object", "properties": {"dag_id": {"type": "string", "description": "The DAG's id."}},
                                 "required": ["dag_id"]}}
ARTICLE_QUESTION = "Did my etl_pipeline DAG run today?"
ARTICLE_RESULT = '{"dag_id": "etl_pipeline", "last_run_state": "success", "last_run": "6 hours ago"}'


def heldout(corpus: Path, n: int = 600) -> list[dict]:
    """The held-out conversations, drawn as the corpus builder draws them (documentation questions from
    the text corpus's validation split)."""
    path = corpus / "tools_heldout.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.open(encoding="utf-8")]
    val = [json.loads(line) for line in (corpus / "val.jsonl").open(encoding="utf-8")]
    return tool_corpus.build(0, n, [], val)["heldout"]


def _body(conv: dict, messages: list[dict], tool_choice: dict, max_tokens: int) -> dict:
    body = {"model": "claude-sonnet-4-5", "max_tokens": max_tokens, "temperature": TEMPERATURE,
            "tools": conv["tools"], "tool_choice": tool_choice, "messages": messages}
    if conv.get("base"):
        body["system"] = conv["base"]
    return body


def request_messages(conv: dict, upto: int | None = None) -> list[dict]:
    """The conversation's turns as Messages API blocks (a call as tool_use, a result as tool_result)."""
    out = []
    msgs = conv["messages"] if upto is None else conv["messages"][:upto]
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and m["content"].startswith(tool_corpus.TOOL_USE_PREFIX):
            name, _, arg = m["content"][len(tool_corpus.TOOL_USE_PREFIX):].partition("\n")
            out.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{i:02d}", "name": name,
                                                          "input": json.loads(arg)}]})
        elif m["role"] == "user" and m["content"].startswith("tool_result"):
            res = conv["result"]
            out.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i - 1:02d}",
                                                     "content": [{"type": "text", "text": res["content"]}],
                                                     "is_error": res["is_error"]}]})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def run(engine: Engine, body: dict, seed: int) -> dict:
    """The reply's first content block: ``{"type": "tool_use", "name", "input"}`` or ``{"type": "text", "text"}``."""
    req = parse_request(body)
    block, text, partial = None, [], []
    for e in engine.stream(req, seed=seed, n_candidates=0):
        if e["type"] == "content_block_start" and block is None:
            block = dict(e["content_block"])
        elif e["type"] == "content_block_delta":
            d = e["delta"]
            (text if d["type"] == "text_delta" else partial).append(d.get("text") or d.get("partial_json", ""))
    if block["type"] == "tool_use":
        try:
            block["input"] = json.loads("".join(partial))
        except ValueError:
            block["input"] = None
    else:
        block["text"] = "".join(text)
    return block


def measure(engine: Engine, convs: list[dict], per_kind: int = 30, seeds=SEEDS, progress=None) -> dict:
    calls = [c for c in convs if c["kind"] == "call"][:per_kind]
    texts = [c for c in convs if c["kind"] == "text"][:per_kind]
    results = [c for c in convs if c["kind"] == "result" and "key" in c][:per_kind]
    hits: dict[str, list[bool]] = {k: [] for k in ("forced_argument", "any_argument", "auto_call", "auto_right_tool",
                                                   "auto_text", "result_fact")}
    samples: dict[str, list] = {k: [] for k in hits}

    def note(key, ok, conv, got):
        hits[key].append(bool(ok))
        if len(samples[key]) < 4:
            samples[key].append({"question": conv["messages"][0]["content"], "got": got, "ok": bool(ok)})
        if progress:
            progress(sum(len(v) for v in hits.values()))

    for seed in seeds:
        for c in calls:
            name, want = c["call"]["name"], c["call"]["input"]
            arg = next(iter(want))
            msgs = request_messages(c, 1)
            b = run(engine, _body(c, msgs, {"type": "tool", "name": name}, 60), seed)
            note("forced_argument", (b.get("input") or {}).get(arg) == want[arg], c, b.get("input"))
            b = run(engine, _body(c, msgs, {"type": "any"}, 60), seed)
            note("any_argument", b["name"] == name and (b.get("input") or {}).get(arg) == want[arg], c, [b["name"], b.get("input")])
            b = run(engine, _body(c, msgs, {"type": "auto"}, 60), seed)
            note("auto_call", b["type"] == "tool_use", c, b.get("name") or b.get("text"))
            hits["auto_right_tool"].append(b["type"] == "tool_use" and b["name"] == name)
        for c in texts:
            b = run(engine, _body(c, request_messages(c, 1), {"type": "auto"}, 12), seed)
            note("auto_text", b["type"] == "text", c, b.get("text") or b.get("name"))
        for c in results:
            b = run(engine, _body(c, request_messages(c, 3), {"type": "auto"}, 60), seed)
            ok = b["type"] == "text" and c["key"].lower() in b["text"].lower()
            note("result_fact", ok, c, b.get("text") or b.get("name"))
    figures = {k: round(sum(v) / len(v), 4) if v else None for k, v in hits.items()}
    return {"temperature": TEMPERATURE, "seeds": list(seeds), "counts": {k: len(v) for k, v in hits.items()},
            "figures": figures, "targets": TARGETS,
            "met": {k: figures[k] is not None and figures[k] >= t for k, t in TARGETS.items()},
            "article": article(engine), "samples": samples}


def article(engine: Engine, seed: int = 0) -> dict:
    """The article's example through the engine: the call under auto, then the answer to its result."""
    conv = {"tools": [ARTICLE_TOOL], "base": None}
    first = run(engine, _body(conv, [{"role": "user", "content": ARTICLE_QUESTION}], {"type": "auto"}, 60), seed)
    forced = run(engine, _body(conv, [{"role": "user", "content": ARTICLE_QUESTION}], {"type": "tool", "name": "get_dag_status"}, 60), seed)
    msgs = [{"role": "user", "content": ARTICLE_QUESTION},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_dag_status",
                                               "input": {"dag_id": "etl_pipeline"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                          "content": [{"type": "text", "text": ARTICLE_RESULT}]}]}]
    answer = run(engine, _body(conv, msgs, {"type": "auto"}, 60), seed)
    return {"auto": first, "forced": forced, "answer": answer}
