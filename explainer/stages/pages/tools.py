"""Tools: one demo tool, a tool_choice, and the five-step tool-use loop run for real.

The page builds the first request from the scenario (its system prompt, messages, model,
temperature and seed) plus ONE of the engine's demo tools and the chosen ``tool_choice``, and runs
it through ``run_request``. With ``any`` or ``tool`` the engine decodes the call under the tool's
JSON Schema (every step masked to the tokens that keep the JSON valid); the page then runs the
tool for real with ``run_tool`` and sends the second request: the history, the assistant's
``tool_use`` block and a user turn with the ``tool_result``. With ``auto`` or ``none`` the model
answers in text (the bundled one was never trained to call tools, and this app describes tools to a
local model in its own words), so the loop stops after step 2.

Only one tool goes in a request: each definition costs 170–380 input tokens of the bundled model's
512-token window.
The second request leaves ``tools`` out for the same reason (the history alone must fit).
Results are kept per (scenario, tool, choice) in a small LRU.

With ``tool=own`` the tool is the learner's: the first of the scenario's own ``tools`` (defined with the
form on the page). The server cannot run it, so step 3 is a stand-in result the page writes itself,
clearly labelled; steps 4–5 send that stand-in back as the ``tool_result``.

A scenario that still asks the default question (which names no DAG, no sum, no time zone) asks a demo
tool the question written for it instead (``DEMO_QUESTIONS``), so the page opens on a call that fits its
question; ``ask=request`` keeps the request's own question. The page opens on the article's example
(``tool=article``, the default): "Did my etl_pipeline DAG run today?" with the article's ``get_dag_status``,
whose ``dag_id`` is any string, run by a stand-in for the article's Airflow that knows that one DAG. Beside
the call, ``tools_attention`` measures where the model looked while it wrote the argument.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import TypedDict

from explainer.lifecycle import frames as fr
from explainer.lifecycle import lru
from explainer.lifecycle.demo_tools import DEMO_TOOLS, Tool, ToolError, run_tool
from explainer.lifecycle.engine import Run, run_request
from explainer.lifecycle.scenario import Scenario
from explainer.lifecycle.tool_format import tools_system_prompt
from explainer.llm.constrained import UnsupportedSchema
from explainer.llm.interface import TokenizerError
from explainer.stages.options import ChoiceOption, IntOption, OptionError
from explainer.stages.pages import tools_attention
from explainer.stages.runs import compact
from explainer.stages.words import token_label, token_row

ARTICLE = "article"  # the article's example: its get_dag_status, whose dag_id is any string
ARTICLE_DAGS = {"etl_pipeline": {"dag_id": "etl_pipeline", "last_run_state": "success", "last_run": "6 hours ago"}}


def _article_dag(args: dict, clock) -> dict:
    row = ARTICLE_DAGS.get(args["dag_id"])
    if row is None:
        raise ToolError(f"unknown DAG {args['dag_id']!r}; the article's deployment has one DAG: {', '.join(ARTICLE_DAGS)}")
    return row


# The same definition as ``evaluate --tools`` measures the article's example with (a test keeps them equal).
ARTICLE_TOOL = Tool("get_dag_status", "Get the status of an Airflow DAG: its last run and when it ran.",
                    {"type": "object", "properties": {"dag_id": {"type": "string", "description": "The DAG's id."}},
                     "required": ["dag_id"]}, _article_dag)
TOOL_NAMES = (ARTICLE,) + tuple(DEMO_TOOLS)
OWN = "own"  # the learner's own tool: the scenario's tools[0]
OWN_EXAMPLE = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                                                      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                     "required": ["city"]},
}
CHOICES = ("tool", "any", "auto", "none")
MAX_TOKENS = 80
TOP = 6  # candidate rows drawn per step, before and after the mask

# The question a demo tool is asked when the request still asks the default one: the article's own, and for the
# demo table's get_dag_status (whose dag_id is an enum of its invented DAGs) the same question with one of them.
DEMO_QUESTIONS = {
    ARTICLE: "Did my etl_pipeline DAG run today?",
    "get_dag_status": "Did my snail_mail_tracking DAG run today?",
    "calculator": "What is 17 * 23?",
    "get_time": "What time is it in UTC?",
}
# What a call copies from each of those questions (the attention picture measures the model's look at it).
DEMO_IDENTIFIERS = {ARTICLE: "etl_pipeline", "get_dag_status": "snail_mail_tracking", "calculator": "17 * 23", "get_time": "UTC"}

DATA = {"tools-data": "tools_data", "own-data": "own_data", "tools-attention": "attention"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS = {
    "tool": ChoiceOption(ARTICLE, TOOL_NAMES + (OWN,)),
    "choice": ChoiceOption("tool", CHOICES),
    "step": IntOption(0, 0, None),
    # demo: a demo tool is asked its own question when the request asks the default one; request: the request's own
    "ask": ChoiceOption("demo", ("demo", "request")),
}

_CACHE = lru.LRU("tools page")  # both runs of the loop per scenario and options, bounded by bytes


def _json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def tool_choice(choice: str, tool) -> dict:
    return {"type": "tool", "name": tool} if choice == "tool" else {"type": choice}


def definition_of(scenario, tool: str):
    """The tool definition sent: a demo tool's, or the learner's own exactly as written (the API validates it)."""
    if tool == OWN:
        return scenario.tools[0]
    return ARTICLE_TOOL.definition() if tool == ARTICLE else DEMO_TOOLS[tool].definition()


def name_of(definition) -> str | None:
    return definition.get("name") if isinstance(definition, dict) else None


def stand_in(name) -> str:
    """Step 3 for the learner's own tool: the server cannot run it, so the page writes this result itself."""
    return json.dumps({"note": f"your code would run {name} here"}, ensure_ascii=False)


def _refused(body: dict, model: str, message: str) -> Run:
    """A 400 Run for a schema the constrained decoder cannot handle, should the engine ever raise instead of refusing."""
    error = {"type": "error", "error": {"type": "invalid_request_error",
                                        "message": f"tools.0.input_schema: {model} cannot decode this schema: {message}"}}
    return Run(body, None, error, [], [], [], [], None)


def _run(engine, body: dict, seed: int) -> Run:
    try:
        return compact(run_request(engine, body, seed=seed), keep_logits=False)  # this page never reads logits
    except UnsupportedSchema as exc:
        return _refused(body, engine.name, str(exc))


def first_body(scenario, tool: str, choice: str) -> dict:
    body: dict = {"model": scenario.model, "max_tokens": MAX_TOKENS}
    if scenario.system:
        body["system"] = scenario.system
    body["messages"] = [dict(m) for m in scenario.messages]
    definition = definition_of(scenario, tool)
    body["tools"] = [definition]
    body["tool_choice"] = tool_choice(choice, name_of(definition))
    body["temperature"] = scenario.temperature
    if scenario.top_p is not None:
        body["top_p"] = scenario.top_p
    if scenario.top_k is not None:
        body["top_k"] = scenario.top_k
    return body


def tool_use_block(run) -> dict | None:
    """The tool_use content block as the SDK assembles it: content_block_start + every input_json_delta."""
    block, parts = None, []
    for ev in run.events:
        if ev["type"] == fr.CONTENT_BLOCK_START and ev["content_block"]["type"] == fr.TOOL_USE:
            block = dict(ev["content_block"])
        elif ev["type"] == fr.CONTENT_BLOCK_DELTA and ev["delta"]["type"] == fr.INPUT_JSON_DELTA:
            parts.append(ev["delta"]["partial_json"])
    if block is None:
        return None
    raw = "".join(parts)
    try:
        block["input"] = json.loads(raw) if raw else {}
    except ValueError:
        block["input"] = None
    block["raw"] = raw
    return block


def text_of(run) -> str:
    return "".join(ev["delta"]["text"] for ev in run.events
                   if ev["type"] == fr.CONTENT_BLOCK_DELTA and ev["delta"]["type"] == fr.TEXT_DELTA)


def _shown(opts) -> dict:
    """The tool and the tool_choice of this view, left out where they are the defaults (a shorter link)."""
    return {k: opts[k] for k in ("tool", "choice") if opts[k] != OPTIONS[k].default}


def _ask(opts) -> str | None:
    return None if opts["ask"] == OPTIONS["ask"].default else opts["ask"]


def _question(scenario) -> str:
    """The text of the request's last user turn (the question the loop answers)."""
    for m in reversed(scenario.messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            return "".join(b.get("text", "") for b in c if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def _usage(run) -> dict | None:
    return dict(run.done["usage"]) if run.done else None


def compute(engine, scenario, tool: str, choice: str) -> dict:
    """Both requests of the loop, run through the engine (cached per scenario and options)."""
    key = (engine.loaded.fingerprint, scenario.key(), tool, choice)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    body1 = first_body(scenario, tool, choice)
    run1 = _run(engine, body1, scenario.seed)
    out: dict = {"body1": body1, "run1": run1, "block": None, "result": None, "body2": None, "run2": None,
                 "attention": {"reason": "The API refused the request: nothing ran."}}
    if run1.error is None:
        block = tool_use_block(run1)
        out["block"] = block
        out["attention"] = attention(engine, scenario, tool, choice, run1, block)
        if block is not None and run1.done["stop_reason"] == "tool_use" and block["input"] is not None:
            if tool == OWN:
                content, is_error = stand_in(block["name"]), False
            else:
                content, is_error = run_tool(block["name"], block["input"],
                                             tools={ARTICLE_TOOL.name: ARTICLE_TOOL} if tool == ARTICLE else None)
            out["result"] = {"content": content, "is_error": is_error, "stand_in": tool == OWN}
            call = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": block["input"]}
            result = {"type": "tool_result", "tool_use_id": block["id"], "content": content}
            if is_error:
                result["is_error"] = True
            body2 = {k: v for k, v in body1.items() if k not in ("tools", "tool_choice")}
            body2["messages"] = body1["messages"] + [{"role": "assistant", "content": [call]},
                                                     {"role": "user", "content": [result]}]
            out["body2"] = body2
            out["run2"] = _run(engine, body2, scenario.seed)
    _CACHE.put(key, out)
    return out


def identifier_of(question: str, tool: str, block: dict | None) -> str | None:
    """The identifier the question names: the one a demo question was written around, else found in its text."""
    if DEMO_QUESTIONS.get(tool) == question:
        return DEMO_IDENTIFIERS[tool]
    return tools_attention.find_identifier(question, block["input"] if block else None)


def attention(engine, scenario, tool: str, choice: str, run1, block: dict | None) -> dict:
    """The attention picture's data for request 1's call (``reason`` says why there is none)."""
    if block is None:
        return {"reason": f"With tool_choice {choice} the model answered in text: there is no argument to trace."}
    question = _question(scenario)
    return tools_attention.measure(engine, run1, choice=choice, name=block["name"], question=question,
                                   identifier=identifier_of(question, tool, block))


def step_rows(run, block_name: str | None, choice: str, tokenizer) -> list[dict]:
    """What the mask panel draws for every generated token (rounded, top rows only). A token's text comes
    from its bytes (words.token_text: a byte of a cut character is ‹E4›), and ``joins`` is the character a
    run of such tokens makes, on its last one."""
    rows, name_text = [], ""
    naming = choice == "any"
    label = lambda t: token_label(tokenizer, t)  # noqa: E731
    texts = token_row(tokenizer, [s["token"] for s in run.steps])
    for i, s in enumerate(run.steps):
        phase = "text"
        if s.get("constrained"):
            phase = "input"
            if naming:
                phase = "name"
                name_text += s["piece"]
                if block_name is not None and name_text == block_name + "\n":
                    naming = False
        before = s.get("unconstrained", s["candidates"])
        # masking keeps the order of the allowed tokens, so an allowed token of before's top rows is among after's
        allowed = {c["token"] for c in s["candidates"] if c["logit"] is not None and c["final_probability"] > 0}
        rows.append({
            "i": i, "text": texts[i]["text"], "part": texts[i]["part"], "joins": texts[i]["joins"],
            "phase": phase, "constrained": bool(s.get("constrained")),
            "n_allowed": s.get("n_allowed"), "mass_removed": s.get("mass_removed", 0.0),
            "before": [{"t": label(c["token"]), "p": round(c["probability"], 4), "ok": c["token"] in allowed or not s.get("constrained")}
                       for c in before[:TOP]],
            "after": [{"t": label(c["token"]), "p": round(c["final_probability"], 4)} for c in s["candidates"][:TOP]
                      if c["final_probability"] > 0],
        })
    return rows


def tools_tokens(engine, system: str | None, definition) -> int:
    """What the tool definition adds to the prompt, in tokens: the system turn as the engine writes it with the
    tool (its definition and the lines that introduce it) against the same turn without. The turns that follow
    are cut apart from it, so this is exactly what leaving the tools out of a request saves."""
    tok = engine.tokenizer
    try:
        with_tools = tok.encode_chat_segments(tools_system_prompt(system, [definition]), [])[0]
        return len(with_tools) - len(tok.encode_chat_segments(system, [])[0])
    except (KeyError, TypeError, AttributeError, TokenizerError):  # a definition the API refuses: its own text, roughly
        d = definition if isinstance(definition, dict) else {}
        return len(tok.encode("\n".join([f"- {d.get('name', '')}: {d.get('description', '')}",
                                         "  input schema: " + json.dumps(d.get("input_schema"), ensure_ascii=False, separators=(",", ":"))])))


def second_request_sizes(run1, run2, tools: int) -> dict | None:
    """Why request 2's size differs from request 1's, in the engine's own token counts: request 2 leaves the
    tools out (−``tools``) and adds the ``tool_use`` turn and its ``tool_result`` (+``added``). None until both ran."""
    if run1.done is None or run2 is None or run2.done is None:
        return None
    n1, n2 = run1.done["usage"]["input_tokens"], run2.done["usage"]["input_tokens"]
    return {"first": n1, "second": n2, "tools": tools, "added": n2 - (n1 - tools), "fewer": n1 - n2}


def asks_default(scenario) -> bool:
    """The request still asks the default question (the learner has written none of their own)."""
    return scenario.messages == Scenario().messages


def asked(scenario, tool: str, ask: str):
    """The scenario the loop runs: with the demo tool's own question in place of the default one."""
    if tool == OWN or ask != "demo" or not asks_default(scenario):
        return scenario
    return scenario.replace(messages=[{"role": "user", "content": DEMO_QUESTIONS[tool]}])


def enum_choices(definition) -> int | None:
    """How many values the tool's input lists for its largest enum (None without one): the names a masked call
    chooses among."""
    props = definition.get("input_schema", {}).get("properties") if isinstance(definition, dict) else None
    if not isinstance(props, dict):
        return None
    sizes = [len(p["enum"]) for p in props.values() if isinstance(p, dict) and isinstance(p.get("enum"), list)]
    return max(sizes) if sizes else None


def compact_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def headline(*, question: str, run1, stop1, block, result, run2, stop2, choice: str, max_tokens: int,
             identifier: str | None = None) -> str:
    """What the loop did, in words computed from its runs."""
    if run1.error is not None:
        return f"The API refuses request 1 with a 400 ({run1.error['error']['message'][:120]}): nothing runs."
    if block is None:
        return (f"With tool_choice {choice}, the model answered in text (stop_reason \"{stop1}\"): one request, "
                "no tool call, and the loop is over.")
    if stop1 != "tool_use" or block["input"] is None:
        return f"The call was cut off by max_tokens ({max_tokens}) before its input was complete, so there is nothing to run."
    named = [s for s in _strings(block["input"]) if len(s) >= 3 and s in question]
    shown = compact_json(block["input"])
    call = f"The model asked for {block['name']} with {shown if len(shown) <= 80 else shown[:78] + '…'}"
    if named:
        call += ", which the question names"
    elif identifier:
        call += f", not the question's {identifier}"
    if result["is_error"]:
        ran = "the tool refused that input, and request 2 carried the error back with is_error: true"
    elif result["stand_in"]:
        ran = "this page stood in for your code, and request 2 carried that result back"
    else:
        ran = "your code ran it, and request 2 carried the result back"
    if run2 is None or run2.error is not None:
        return f"{call}; {ran}, but the API refused request 2."
    return f"{call}; {ran}."


class Shown(TypedDict):
    """One request of the loop as the page shows it (keys suffixed 1 or 2 in the template's context)."""
    run: Run | None
    error_json: str
    usage: dict | None
    usage_json: str
    stop: str | None
    text: str


def _shown_request(run: Run | None) -> Shown:
    ran = run is not None and run.error is None
    done = run.done if run is not None else None
    return {"run": run, "error_json": _json(run.error) if run is not None and run.error else "",
            "usage": _usage(run) if run is not None else None, "usage_json": _json(_usage(run)) if done else "",
            "stop": done["stop_reason"] if done else None, "text": text_of(run) if ran else ""}


def _tool_checked(page) -> str:
    tool = page.opts["tool"]
    if tool == OWN and not page.scenario.tools:
        raise OptionError("“tool=own” needs a scenario that carries a tool of your own, and this one has no tools. "
                          "Define one with the “Your own tool” form on the Tools page.")
    return tool


def _steps(page, run1, block, choice: str) -> list[dict]:
    """Request 1's generated tokens, one row a step (the ``step`` option picks one)."""
    step = page.opts["step"]
    steps = step_rows(run1, block["name"] if block else None, choice, page.engine.tokenizer) if run1.error is None else []
    if steps and step >= len(steps):
        raise OptionError(f"“step” must be from 0 to {len(steps) - 1} for this request; got {step}.")
    if not steps and step != 0:
        raise OptionError("“step” must be 0: this request generated no tokens.")
    return steps


def _controls(page, tool: str, choice: str, definition: dict) -> dict:
    """The pickers (tool, tool_choice, question) and the form for a tool of one's own."""
    o, own_tools = page.opts, page.scenario.tools
    own_name = name_of(definition) if tool == OWN else None
    # the form starts from the learner's tool when there is one, else from a small example
    start = own_tools[0] if own_tools and isinstance(own_tools[0], dict) else OWN_EXAMPLE
    text = lambda key: start.get(key) if isinstance(start.get(key), str) else ""  # noqa: E731
    return {
        "own": tool == OWN, "example_name": OWN_EXAMPLE["name"],
        "tool_name": (own_name if isinstance(own_name, str) else "") if tool == OWN else name_of(definition),
        "tools_links": [{"name": n, "label": "" if n == OWN else name_of(definition_of(page.scenario, n)),
                         "url": page.url(tool=n, choice=choice, ask=_ask(o)), "current": n == tool}
                        for n in TOOL_NAMES + ((OWN,) if own_tools else ())],
        "own_form": {"name": text("name"), "description": text("description"),
                     "schema": _json(start.get("input_schema", OWN_EXAMPLE["input_schema"]))},
        "choice_links": [{"name": c, "url": page.url(tool=tool, choice=c, ask=_ask(o)), "current": c == choice} for c in CHOICES],
        "can_demo": tool != OWN and asks_default(page.scenario),
        "ask_links": {"demo": page.url(**_shown(o)), "request": page.url(**_shown(o), ask="request")},
    }


def _call(block: dict | None) -> dict:
    """The model's tool_use block, as the API returns it and as it was generated."""
    shown = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": block["input"]} if block else None
    if block is None:
        call_input = ""
    else:
        call_input = compact_json(block["input"]) if block["input"] is not None else block["raw"]
    return {"call": shown, "block_json": _json(shown) if shown else "", "block_raw": block["raw"] if block else "",
            "call_input": call_input}


def _progress(data: dict, steps: list[dict]) -> dict:
    """How far the loop got (its five boxes), and how much the schema constrained the call's tokens."""
    run1, run2 = data["run1"], data["run2"]
    constrained = [s for s in steps if s["constrained"]]
    filled = [run1.error is None, run1.done is not None, data["result"] is not None,
              run2 is not None and run2.error is None, run2 is not None and run2.done is not None]
    return {"filled": filled, "n_filled": sum(filled), "n_constrained": len(constrained),
            "mean_allowed": round(sum(s["n_allowed"] for s in constrained) / len(constrained)) if constrained else None}


def context(page) -> dict:
    o, engine = page.opts, page.engine
    tool, choice = _tool_checked(page), o["choice"]
    scenario = asked(page.scenario, tool, o["ask"])
    data = compute(engine, scenario, tool, choice)
    run1, run2 = data["run1"], data["run2"]
    steps = _steps(page, run1, data["block"], choice)
    vocab = engine.model.config.vocab_size
    definition = definition_of(scenario, tool)
    def_tokens = tools_tokens(engine, scenario.system or None, definition)
    one, two = _shown_request(run1), _shown_request(run2)
    return {
        "wide": True,
        "own_error_card": True,
        "tool": tool, "choice": choice, "step": o["step"],
        **_controls(page, tool, choice, definition),
        # the question asked, and the other one a link away
        "question": _question(scenario), "demo": scenario is not page.scenario,
        "result_text": data["result"]["content"] if data["result"] else "",
        "headline": headline(question=_question(scenario), run1=run1, stop1=one["stop"], block=data["block"],
                             result=data["result"], run2=run2, stop2=two["stop"], choice=choice, max_tokens=MAX_TOKENS,
                             identifier=data["attention"].get("identifier")),
        "definition_json": _json(definition),
        "enum_choices": enum_choices(definition),
        "def_tokens": def_tokens,
        "window": engine.context_window,
        "vocab": vocab,
        "max_tokens": MAX_TOKENS,
        "body1_json": _json(data["body1"]),
        "run1": run1, "run1_error_json": one["error_json"], "usage1": one["usage"], "usage1_json": one["usage_json"],
        "stop1": one["stop"], "text1": one["text"],
        **_call(data["block"]),
        "result": data["result"],
        "body2_json": _json(data["body2"]) if data["body2"] else "",
        "run2": run2, "run2_error_json": two["error_json"], "usage2": two["usage"], "usage2_json": two["usage_json"],
        "stop2": two["stop"], "text2": two["text"],
        "sizes": second_request_sizes(run1, run2, def_tokens),
        **_progress(data, steps),
        "attention": data["attention"],
        "tools_data": {"steps": steps, "step": o["step"], "vocab": vocab, "choice": choice},
        "own_data": {"fields": asdict(scenario), "choice": choice},
    }
