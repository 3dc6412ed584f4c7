"""Conversation: the API keeps no history, so every turn resends all of it.

The scenario's messages are the conversation. Each user turn was sent as one request carrying
everything before it; the page re-runs each of those requests (the shared run cache makes this
free when the learner got here by pressing Send, since each one was the page's own run before)
to get its real usage, counts its input tokens exactly as ``/v1/messages/count_tokens`` does,
and prices it at the requested model's list price. It shows the context window filling up, the
real 400 that the engine answers when the prompt no longer fits, and three client-side
strategies (from ``explainer.lifecycle.conversation``) side by side, the summary one written by
the model that serves the scenario. A local model has no list price: its costs say so.

A conversation of one question opens fast-forwarded: ``ff`` (default ``DEMO_REQUESTS``) is the number of
requests the page plays out first, each one the history so far, the model's real reply and the next of
``CANNED_TURNS``, exactly what pressing Send with those messages builds. It stops before a request that
the API would refuse, so the window is close to full but the last request still fits; ``ff=1`` starts
from the question alone.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import TypedDict

from explainer.lifecycle import conversation as cv
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.figures import body_figures
from explainer.lifecycle.pricing import cost, price_of, table, usd
from explainer.lifecycle.scenario import ScenarioError
from explainer.stages.options import ChoiceOption, IntOption, OptionError
from explainer.stages.pages.conversation_summary import SUMMARY_MAX_TOKENS, counter, summarise_with_model
from explainer.stages.registry import BY_SLUG
from explainer.stages.runs import run_of

CLAUDE_WINDOWS = {"200k": 200_000, "1m": 1_000_000}
MAX_N = 20
DEMO_REQUESTS = 4  # a one-question conversation opens on this many requests (fewer if the window fills first)
_BLANK_RUN = re.compile(r"(\n{3,})")
NO_PRICE = "no per-token price"  # what a local model's cost cells say: it runs on this server

DATA = {"conversation-data": "conversation_data"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS = {
    "n": IntOption(2, 1, MAX_N, "exchanges the sliding window keeps"),
    "strategy": ChoiceOption("drop_oldest", cv.STRATEGIES),
    "turn": IntOption(0, 0, None, "the request shown in full (0: the last one)"),
    "scale": ChoiceOption("200k", tuple(CLAUDE_WINDOWS)),
}

STRATEGY_TEXT = {
    "drop_oldest": ("Drop the oldest turns",
                    "Remove the oldest exchange (your message and its reply) until the rest fits. Simple; the model forgets the start."),
    "keep_last_n": ("Keep the last N exchanges",
                    "A sliding window: always send only the newest N exchanges, whether or not more would fit."),
    "summarise": ("Summarise older turns",
                  "Ask a model to summarise the older turns, and send that summary as one user turn instead of them."),
}

# Follow-up turns for "fast-forward": long, as real ones often are (people paste logs and code),
# and general enough to follow any first question.
CANNED_TURNS = (
    "Thanks. Here is the log from last night's run, can you tell me what went wrong?\n\n"
    "02:00:01 INFO  starting nightly job (batch size 500)\n"
    "02:00:03 INFO  connected to db-primary:5432\n"
    "02:14:47 WARN  query took 812 s: SELECT * FROM events WHERE created_at > $1\n"
    "02:14:48 ERROR worker 3 killed: out of memory (rss 7.8 GB)\n"
    "02:14:48 INFO  retrying batch 7 (attempt 2 of 3)",
    "I tried the fix from the documentation and now I get this traceback instead:\n\n"
    "Traceback (most recent call last):\n"
    "  File \"jobs/nightly.py\", line 42, in run\n"
    "    rows = client.fetch(batch_id, timeout=30)\n"
    "  File \"jobs/client.py\", line 118, in fetch\n"
    "    raise TimeoutError(f\"batch {batch_id} timed out\")\n"
    "TimeoutError: batch 7 timed out\n\n"
    "Should I raise the timeout, or retry?",
    "Here is the function that calls it. Can you rewrite it so that it retries three times, "
    "waiting longer each time, and logs every attempt?\n\n"
    "def run(batch_id):\n"
    "    client = Client(os.environ[\"API_URL\"])\n"
    "    rows = client.fetch(batch_id, timeout=30)\n"
    "    save(rows)\n"
    "    return len(rows)",
    "How should I test this? We use pytest, and the client talks to a real server in staging. "
    "I would like tests that run offline in under a second and that check the retries really happen, "
    "including the waits between them, without the tests actually sleeping.",
    "Last thing: please turn everything we discussed into a short checklist that I can paste into "
    "our team's wiki, with the log lines, the fix, the retry code and the tests.",
)
OPTIONS["ff"] = IntOption(DEMO_REQUESTS, 1, 1 + len(CANNED_TURNS), "requests a one-question conversation opens on (1: the question alone)")


# ---- formatting ------------------------------------------------------------------------------



def body_json(body: dict) -> str:
    """A request body as readable JSON: one line per field and one per message (as the page's script shows it)."""
    items = list(body.items())
    lines = ["{"]
    for j, (key, value) in enumerate(items):
        comma = "," if j < len(items) - 1 else ""
        if key == "messages":
            lines.append('  "messages": [')
            lines += [f"    {json.dumps(m, ensure_ascii=False)}{',' if i < len(value) - 1 else ''}" for i, m in enumerate(value)]
            lines.append("  ]" + comma)
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines)


def pieces(text: str | None) -> list[dict]:
    """Text for the chat bubbles, with long runs of line breaks shown as one mark ("↵ ×7")
    instead of a screenful of blank lines (the tiny model writes many)."""
    if text is None:
        return []
    out = []
    for i, part in enumerate(_BLANK_RUN.split(text)):
        if i % 2:
            out.append({"newlines": len(part)})
        elif part:
            out.append({"text": part})
    return out


def compact_bytes(body: dict) -> int:
    """A request's size as every page counts it (figures.body_figures: the compact JSON the SDKs send)."""
    return body_figures(body)["bytes"]


# ---- the page --------------------------------------------------------------------------------

class View:
    """The page as this module reads it: the conversation shown (the fast-forwarded one in place of a
    lone question) and its run; links still keep the scenario the learner came with."""

    def __init__(self, page, scenario, run):
        self._page, self.scenario, self.run = page, scenario, run
        self.engine, self.opts = page.engine, page.opts

    def url(self, *args, **kwargs) -> str:
        return self._page.url(*args, **kwargs)


def fast_forward(page) -> tuple[object, object, int]:
    """(scenario, run, requests played out): a one-question scenario grown by ``ff`` − 1 canned turns.

    Each step is what Send builds (the history, the model's reply, the next canned message), run by
    the engine through the shared run cache; it stops before a request the API would refuse.
    """
    s, run = page.scenario, page.run
    target = page.opts["ff"]
    if target <= 1 or run.error is not None or len(s.messages) != 1 or s.messages[0].get("role") != "user":
        return s, run, 0
    msgs = [dict(m) for m in s.messages]
    for k in range(target - 1):
        if not run.text.strip():  # nothing to resend as the reply (an empty turn is refused)
            break
        nxt = msgs + [cv.assistant(run.text), cv.user(CANNED_TURNS[k])]
        try:
            nrun = run_of(s.replace(messages=nxt))
        except ScenarioError:
            break
        if nrun.error is not None:  # the next request would not fit: stop before the limit
            break
        msgs, run = nxt, nrun
    if len(msgs) == 1:
        return s, page.run, 0
    return s.replace(messages=msgs), run, len(cv.request_ends(msgs))


def growth_words(inputs: list[int]) -> str:
    """How the input per request grew, in words computed from the numbers."""
    steps = [b - a for a, b in zip(inputs, inputs[1:])]
    if not steps:
        return ""
    if all(d > 0 for d in steps):
        lo, hi = min(steps), max(steps)
        return f"growing by {lo:,} to {hi:,} tokens a request" if lo != hi else f"growing by {lo:,} tokens a request"
    if all(d < 0 for d in steps):
        return "shrinking at every request (the history was trimmed)"
    return f"changing by {', '.join(f'{d:+,}' for d in steps)} tokens from one request to the next"


def headline(turns: list[dict], max_prompt: int, refused: bool) -> str:
    """The caption under the per-request chart, from its numbers."""
    first, last = turns[0], turns[-1]
    if len(turns) == 1 and refused:  # no reply came back, so there is nothing to follow up
        return (f"One request so far: {first['input_tokens']:,} input tokens, over the {max_prompt:,}-token limit, so the API "
                "refuses it: no reply came back, so there is nothing to follow up, and nothing was billed. The client has to send less.")
    if len(turns) == 1:
        return (f"One request so far: {first['input_tokens']:,} input tokens. Send a follow-up, and the next request carries "
                "this one and its reply as well.")
    inputs = [t["input_tokens"] for t in turns]
    text = (f"From {first['input_tokens']:,} input tokens in request 1 to {last['input_tokens']:,} in request {last['turn']}: "
            f"each request resends the history (pale) and adds the last reply and a new message (strong), {growth_words(inputs)}.")
    if refused:
        return text + f" Request {last['turn']} is over the {max_prompt:,}-token limit, so the API refuses it."
    return text + f" {max(0, max_prompt - last['input_tokens']):,} tokens are left below the {max_prompt:,}-token limit."


def _segments(engine, system: str | None, history: list[dict]) -> tuple[int, list[int], int]:
    """Tokens of the system prompt and of each message inside the prompt (what the chat template writes
    around each included), and of the template's opening of the reply (0 after a prefill)."""
    ids, ends = engine.tokenizer.encode_chat_segments(system, [(m["role"], m["content"]) for m in history])
    sys_n = ends.get("system", 0)
    sizes, prev = [], sys_n
    for i in range(len(history)):
        sizes.append(ends[f"messages.{i}"] - prev)
        prev = ends[f"messages.{i}"]
    return sys_n, sizes, len(ids) - prev


def _reply_opening(engine) -> int:
    """How many tokens the chat template writes to open the assistant's reply."""
    ids, ends = engine.tokenizer.encode_chat_segments(None, [("user", "x")])
    return len(ids) - ends["messages.0"]


def _turn_runs(page, history: list[dict], ends: list[int]) -> list:
    """The run of every request of the conversation: earlier ones from the shared run cache."""
    s = page.scenario
    runs = []
    for k, end in enumerate(ends):
        if k == len(ends) - 1:
            runs.append(page.run)
        else:
            runs.append(run_of(s.replace(messages=[dict(m) for m in history[:end]])))
    return runs


def _link(page, messages: list[dict], **opts) -> str | None:
    try:
        return page.url(scenario=page.scenario.replace(messages=messages), **opts)
    except ScenarioError:
        return None


class Segment(TypedDict, total=False):
    """One part of a request's bar: the system prompt, a message, or the template's opening of the reply."""
    kind: str
    tokens: int
    index: int
    new: bool


class TurnView(TypedDict):
    """One request of the conversation, as its row, its bubbles and its costs show it."""
    turn: int
    user: str
    start: int
    end: int
    user_pieces: list[dict]
    reply_pieces: list[dict]
    reply: str | None
    stored_reply: str | None
    edited: bool
    error: dict | None
    stop_reason: str | None
    input_tokens: int
    new_tokens: int
    output_tokens: int | None
    cumulative_input: int
    cost: str
    cumulative_cost: str
    cost_value: float | None
    cumulative_cost_value: float | None
    bytes: int
    messages: int
    segments: list[Segment]
    over: bool
    over_budget: bool


class Projection(TypedDict):
    key: str
    window: int
    turns: int
    last_input: int
    total_input: int
    cost: str
    cost_value: float | None


@dataclass
class Setting:
    """What every step of the page reads: the conversation shown, its history and how to count and price it."""
    page: View
    history: list[dict]
    system: str | None
    count: object  # count(system, messages) -> prompt tokens, as count_tokens counts them
    money: object  # money(dollars) -> the text a cost cell shows
    window: int
    max_prompt: int
    budget: int  # the most a prompt may use and still leave the requested reply room

    @property
    def scenario(self):
        return self.page.scenario

    @property
    def engine(self):
        return self.page.engine


def _strategy_view(page, t: cv.Trimmed, history: list[dict], summary_info: dict | None) -> dict:
    s = page.scenario
    title, what = STRATEGY_TEXT[t.strategy]
    body = s.replace(messages=t.messages).request_body()
    unchanged = t.messages == history
    view = {
        "key": t.strategy, "title": title, "what": what, "tokens": t.tokens, "budget": t.budget, "fits": t.fits,
        "kept": t.kept, "dropped": t.dropped, "summarised": t.summarised, "notes": t.notes, "unchanged": unchanged,
        "messages": [{"role": m["role"], "content": m["content"],
                      "summary": t.summary is not None and i == 0} for i, m in enumerate(t.messages)],
        "body_json": body_json(body),
        "bytes": compact_bytes(body),
        "continue_url": None if unchanged or not t.fits else _link(page, t.messages),
    }
    if t.strategy == "summarise" and summary_info is not None:
        view["summary_run"] = summary_info
    return view


def _base(page, played: int) -> dict:
    """What the page shows whether or not the conversation could be counted."""
    eng = page.engine
    return {
        "played": played, "ff": page.opts["ff"], "demo_requests": DEMO_REQUESTS,
        "wide": False, "own_error_card": True, "window": eng.context_window, "max_prompt": eng.max_prompt_tokens,
        "served_by": eng.name, "local": not eng.loaded.bundled,
        "claude_windows": CLAUDE_WINDOWS,
        "caching_url": page.url("caching") if BY_SLUG["caching"].built else None, "compose_url": page.url("compose"),
        "n_choices": range(1, MAX_N + 1),
    }


def _refusal(page, count, system, history: list[dict]) -> dict | None:
    """Why the conversation cannot be shown request by request (``ok`` False), or None when it can."""
    run, eng = page.run, page.engine
    if run.request is None:  # refused for another reason than its length: the error card above says why
        return {"ok": False}
    try:
        n_prompt = count(system, history)
    except APIError as exc:
        # refused before it is counted: text too long for the window however it is cut (the engine's first check),
        # or text the tokenizer cannot encode (a lone surrogate), which is not about its length
        try:
            eng.check_size(system, [(m["role"], m["content"]) for m in history])
        except APIError:
            return {"ok": False, "too_long": True, "refusal": exc.message}
        return {"ok": False}
    if run.error is not None and n_prompt <= eng.max_prompt_tokens:
        return {"ok": False}
    return None


def _selected(page, n_turns: int) -> int:
    """The request shown in full (the ``turn`` option; 0 is the last)."""
    turn = page.opts["turn"]
    if turn > n_turns:
        raise OptionError(f"“turn” must be from 0 to {n_turns}: this conversation has {n_turns} request{'s' if n_turns != 1 else ''}.")
    return turn or n_turns


def _bar(history: list[dict], ends: list[int], k: int, sys_n: int, sizes: list[int], reply_opening: int, opening: int) -> list[Segment]:
    """Request ``k``'s bar: the system prompt, each message (strong when new in this request), the reply's opening."""
    end = ends[k]
    segs: list[Segment] = [{"kind": "system", "tokens": sys_n}] if sys_n else []
    sent_before = ends[k - 1] if k else 0  # what the previous request carried; its reply is new here
    segs += [{"kind": history[i]["role"], "tokens": sizes[i], "index": i, "new": i >= sent_before} for i in range(end)]
    if reply_opening or k < len(ends) - 1:  # the template's opening of the reply: the model's reply starts here
        segs.append({"kind": "reply-marker", "tokens": reply_opening or opening})
    return segs


def _turn_view(st: Setting, stat, r, end: int, prev_in: int, segs: list[Segment]) -> TurnView:
    history = st.history
    start = end - 1 if history[end - 1]["role"] == "user" else end - 2  # this turn's user message
    stored = history[end]["content"] if end < len(history) and history[end]["role"] == "assistant" else None
    body = st.scenario.replace(messages=[dict(m) for m in history[:end]]).request_body()
    reply = r.text if r.error is None else None
    return {
        "turn": stat.turn, "user": history[start]["content"], "start": start, "end": end,
        "user_pieces": pieces(history[start]["content"]),
        "reply_pieces": pieces(stored if stored is not None else reply),
        "reply": reply,
        "stored_reply": stored, "edited": stored is not None and reply is not None and stored != reply,
        "error": r.error, "stop_reason": (r.done or {}).get("stop_reason"),
        "input_tokens": stat.input_tokens, "new_tokens": stat.input_tokens - prev_in,
        "output_tokens": stat.output_tokens, "cumulative_input": stat.cumulative_input,
        "cost": st.money(stat.cost) if stat.output_tokens is not None else "not billed",
        "cumulative_cost": st.money(stat.cumulative_cost), "cost_value": stat.cost,
        "cumulative_cost_value": stat.cumulative_cost,
        "bytes": compact_bytes(body), "messages": end, "segments": segs,
        "over": stat.input_tokens > st.max_prompt, "over_budget": stat.input_tokens > st.budget,
    }


def _turn_views(st: Setting, ends: list[int]) -> list[TurnView]:
    """Every request of the conversation: its real run, its usage and cost, and its bar's segments."""
    runs = _turn_runs(st.page, st.history, ends)
    outputs = [None if r.error else r.done["usage"]["output_tokens"] for r in runs]
    stats = cv.per_turn(st.system, st.history, st.count, outputs, model=st.scenario.model)
    sys_n, sizes, reply_opening = _segments(st.engine, st.system, st.history)
    opening = reply_opening or _reply_opening(st.engine)  # an earlier request's, when this one ends on a prefill
    turns: list[TurnView] = []
    for k, (stat, r, end) in enumerate(zip(stats, runs, ends)):
        segs = _bar(st.history, ends, k, sys_n, sizes, reply_opening, opening)
        turns.append(_turn_view(st, stat, r, end, turns[-1]["input_tokens"] if turns else 0, segs))
    return turns


def _strategies(st: Setting) -> list[dict]:
    """What a client could send instead of the whole history, by each strategy, the summary one by the model."""
    summary_info = None

    def summarise_fn(older):
        nonlocal summary_info
        summary_info = summarise_with_model(st.engine, st.scenario.model, older)
        return summary_info["text"]

    system, history, count, budget = st.system, st.history, st.count, st.budget
    results = {
        "drop_oldest": cv.drop_oldest(system, history, count, budget),
        "keep_last_n": cv.keep_last_n(system, history, count, budget, st.page.opts["n"]),
        "summarise": cv.summarise(system, history, count, budget, summarise_fn, reserve=SUMMARY_MAX_TOKENS + 16),
    }
    if summary_info is not None:
        summary_info = summary_info | {"cost": st.money(_cost(st.scenario.model, summary_info))}
    return [_strategy_view(st.page, results[k], history, summary_info if k == "summarise" else None) for k in cv.STRATEGIES]


def _projections(st: Setting, turns: list[TurnView]) -> tuple[float | None, list[Projection], str | None]:
    """(growth a request, how many requests each Claude window holds at that pace, the two compared in words)."""
    n_turns = len(turns)
    growth = (turns[-1]["input_tokens"] - turns[0]["input_tokens"]) / (n_turns - 1) if n_turns > 1 else None
    projections: list[Projection] = []
    for key, w in CLAUDE_WINDOWS.items() if growth and growth > 0 else ():
        p = cv.project(turns[0]["input_tokens"], growth, w, model=st.scenario.model)
        if p:
            projections.append({"key": key, "window": w, "turns": p.turns, "last_input": p.last_input,
                                "total_input": p.total_input, "cost": st.money(p.input_cost), "cost_value": p.input_cost})
    if len(projections) != 2:
        return growth, projections, None
    small, big = projections
    words = (f"A window {big['window'] / small['window']:g} times larger holds {big['turns'] / small['turns']:.1f} times as many "
             f"requests at this pace, and bills {big['total_input'] / small['total_input']:.1f} times as much input to fill.")
    return growth, projections, words


def _next_history(run, history: list[dict]) -> list[dict] | None:
    """What "Send" builds on: the history plus this run's reply (None when the request was refused)."""
    if run.error is not None:
        return None
    if history[-1]["role"] == "assistant":  # a prefill: the reply continues it
        return history[:-1] + [cv.assistant(history[-1]["content"] + run.text)]
    return history + [cv.assistant(run.text)]


def _script_data(st: Setting, ends: list[int], selected: int, turns: list[TurnView],
                 growth: float | None, projections: list[Projection]) -> dict:
    """The page script's data (``conversation-data``, also served by /learn/conversation/data)."""
    s, run = st.scenario, st.page.run
    body = s.request_body()
    keys = list(body)
    at = keys.index("messages")
    fields = asdict(s)
    fields.pop("messages")
    return {
        "window": st.window, "max_prompt": st.max_prompt, "budget": st.budget, "refused": run.error is not None,
        "selected": selected, "strategy": st.page.opts["strategy"], "scale": st.page.opts["scale"],
        "head": {k: body[k] for k in keys[:at]}, "tail": {k: body[k] for k in keys[at + 1:]},
        "history": st.history, "next_history": _next_history(run, st.history), "fields": fields,
        "ends": ends, "price_known": price_of(s.model) is not None,
        "turns": [{"turn": t["turn"], "input": t["input_tokens"], "new": t["new_tokens"], "output": t["output_tokens"],
                   "cum_input": t["cumulative_input"], "cost": _round(t["cost_value"]), "cum_cost": _round(t["cumulative_cost_value"]),
                   "refused": t["error"] is not None, "bytes": t["bytes"]} for t in turns],
        "projections": [{k: p[k] for k in ("key", "window", "turns", "last_input", "total_input")} | {"cost": _round(p["cost_value"])}
                        for p in projections],
        "first": turns[0]["input_tokens"], "growth": growth,
        "canned": list(CANNED_TURNS),
    }


def _restart_links(page, history: list[dict], n_turns: int) -> dict:
    """Back to the question alone (a conversation of several requests), or (a lone question) to the fast-forwarded opening."""
    s = page.scenario
    lone = n_turns == 1 and page.opts["ff"] == 1 and len(s.messages) == 1
    return {"start_over_url": _link(page, [history[0]], ff=1) if n_turns > 1 else None,
            "ff_url": page.url(scenario=s) if lone else None}


def context(page) -> dict:
    s, run, played = fast_forward(page)
    page = View(page, s, run)
    eng = page.engine
    base = _base(page, played)
    history = cv.normalise([(m.role, m.text) for m in run.request.messages]) if run.request is not None else []
    system = run.request.system if run.request is not None else None
    count = counter(eng, s.model)
    refusal = _refusal(page, count, system, history)
    if refusal is not None:
        return base | refusal
    st = Setting(page, history, system, count, money=(lambda x: NO_PRICE) if base["local"] else usd,
                 window=eng.context_window, max_prompt=eng.max_prompt_tokens,
                 budget=cv.reply_budget(eng.context_window, eng.max_prompt_tokens, s.max_tokens))
    ends = cv.request_ends(history)
    n_turns = len(ends)
    selected = _selected(page, n_turns)
    turns = _turn_views(st, ends)
    last, refused = turns[-1], run.error is not None
    growth, projections, scale_words = _projections(st, turns)
    selected_body = s.replace(messages=[dict(m) for m in history[:ends[selected - 1]]]).request_body()
    return base | {
        "ok": True,
        "system": system, "turns": turns, "n_turns": n_turns, "selected": selected,
        "last": last, "refused": refused, "budget": st.budget, "reserve": st.window - st.budget,
        "reserve_capped": s.max_tokens >= st.window,
        "stop_reason": (run.done or {}).get("stop_reason"),
        "strategies": _strategies(st), "strategy": page.opts["strategy"], "n": page.opts["n"],
        "over_budget": last["input_tokens"] > st.budget,
        "growth": round(growth, 1) if growth else None, "projections": projections, "scale": page.opts["scale"],
        "price": price_of(s.model), "price_checked": table().get("checked"), "model": s.model,
        "total_cost": last["cumulative_cost"], "total_input": last["cumulative_input"],
        # the bars' scale: the window, or the longest request when one is over it (widths are the template's CSS)
        "scale_max": max(st.window, max(t["input_tokens"] for t in turns)),
        "selected_json": body_json(selected_body),
        **_restart_links(page, history, n_turns),
        "headline": headline(turns, st.max_prompt, refused), "scale_words": scale_words,
        "cumulative_words": " → ".join(f"{t['cumulative_input']:,}" for t in turns),
        "limit_error_json": json.dumps(run.error, indent=2, ensure_ascii=False) if run.error else "",
        "left": max(0, st.max_prompt - last["input_tokens"]),
        "conversation_data": _script_data(st, ends, selected, turns, growth, projections),
    }


def _cost(model: str, info: dict) -> float | None:
    c = cost(model, {"input_tokens": info["input_tokens"], "output_tokens": info["output_tokens"]})
    return c["total"] if c else None


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")
