"""What a session of real Claude calls says: cost, context, caching, tool loops and latency, call by call.

Pure functions over plain dicts (no Django): each call is what the recorder stored, as
``CallRecord`` says. ``analyse(calls)`` returns, per call, the fields of ``/inspect/<id>/data``
and a list of findings, each one sentence a developer can act on.

The counting follows the rules the stages teach (``explainer.lifecycle``): cost from the usage
block and ``prices.json``; the cache key is the prefix tools → system → messages up to a
``cache_control`` breakpoint; usage says what was read and written. Claude's tokenizer is not
public, so where a split of the input tokens is needed (which block of the context took how many)
it is an estimate by each block's share of the characters, and is labelled as one.

The prefix a request's cache key is made of, and where two prefixes first differ, are ``prefix.py``'s.
"""
from __future__ import annotations

import json
import statistics
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

from explainer.inspect.jsonish import items, obj
from explainer.inspect.prefix import (
    TTL_SECONDS,
    Breakpoint,
    Difference,
    around_at,
    breakpoints,
    clip,
    common_chars,
    first_difference,
    leaves,
)
from explainer.lifecycle.pricing import cost, usd

MINIMUMS_PATH = Path(__file__).resolve().parent / "cache_minimums.json"
MAX_BREAKPOINTS = 4
LOOP_REPEATS = 3  # the same tool with the same input this many times in a row is a loop
MESSAGES_PATH = "/v1/messages"
COMPARED = 20  # a miss is compared with this many calls before it (a session's page stays quick with hundreds of calls)


class CallRecord(TypedDict, total=False):
    """One recorded call, as the analysis reads it."""

    index: int  # 1-based, in call order
    path: str  # "/v1/messages", "/v1/messages/count_tokens", "/v1/models"
    status: int
    started_at: float  # seconds since the epoch
    request: Any  # the body as recorded (images summarised); may be a note when it was not JSON
    response: Any  # the final message (a stream reassembled), or the error envelope
    timings_ms: dict[str, float | None]


class Finding(TypedDict):
    kind: str  # cost | context | cache | loop | tools | latency | error
    text: str


# ---- usage, cost and the context split ------------------------------------------------------------------------------


def _usage(call: CallRecord) -> dict[str, Any]:
    return clean_usage(obj(call.get("response")).get("usage"))


def _count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def clean_usage(usage: Any) -> dict[str, Any]:
    """A usage block whose token counts are whole numbers (anything else, as an imported file may hold, counts 0).

    Example:
        >>> clean_usage({"input_tokens": "many", "output_tokens": 4, "cache_creation": {"ephemeral_1h_input_tokens": None}})
        {'input_tokens': 0, 'output_tokens': 4, 'cache_creation': {'ephemeral_1h_input_tokens': 0}}
    """
    out: dict[str, Any] = {}
    for k, v in obj(usage).items():
        if k == "cache_creation":
            out[k] = {kk: _count(vv) for kk, vv in obj(v).items()}
        elif k.endswith("_tokens"):
            out[k] = _count(v)
        else:
            out[k] = v
    return out


def _body(call: CallRecord) -> dict[str, Any]:
    body = call.get("request")
    return body if isinstance(body, dict) else {}


def total_input(usage: dict[str, Any]) -> int:
    """Every input token of a call: fresh, written to the cache, and read from it."""
    return sum(int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


def context_split(body: dict[str, Any], tokens: int) -> dict[str, int]:
    """``tokens`` (the call's whole input) split into tools, system, history and the new turn by each one's
    share of the characters: an estimate, since Claude's tokenizer is not public and the API reports only totals.

    The new turn is the messages after the last assistant turn; history is everything before it.

    Example:
        >>> context_split({"system": "abcd", "messages": [{"role": "user", "content": "ab"}]}, 100)  # "user" counts too
        {'tools': 0, 'system': 40, 'history': 0, 'new_turn': 60}
    """
    messages = items(body.get("messages"))
    last_assistant = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"), default=-1)
    chars = {
        "tools": _chars(body.get("tools")),
        "system": _chars(body.get("system")),
        "history": _chars(messages[:last_assistant + 1]),
        "new_turn": _chars(messages[last_assistant + 1:]),
    }
    whole = sum(chars.values())
    if not whole:
        return {k: 0 for k in chars}
    split = {k: int(tokens * v / whole) for k, v in chars.items()}
    biggest = max(split, key=lambda k: chars[k])
    split[biggest] += tokens - sum(split.values())  # the rounding goes to the largest part, so the parts add up
    return split


def _chars(value: Any) -> int:
    return sum(len(t) for _, t in leaves({"messages": value})) if value else 0


def _cost(call: CallRecord) -> float | None:
    usage = _usage(call)
    if not usage or call.get("status") != 200:
        return None
    c = cost(str(_body(call).get("model") or _response_model(call)), usage)
    return None if c is None else c["total"]


def _response_model(call: CallRecord) -> str:
    resp = call.get("response")
    return str(resp.get("model", "")) if isinstance(resp, dict) else ""


@lru_cache(maxsize=1)
def _minimums() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MINIMUMS_PATH.read_text())
    return data


def minimum_cacheable(model: str) -> int:
    """The model's shortest cacheable prefix in tokens (``cache_minimums.json``).

    Example:
        >>> minimum_cacheable("claude-sonnet-4-5"), minimum_cacheable("claude-haiku-4-5-20251001")
        (1024, 4096)
    """
    data = _minimums()
    for prefix, n in data["rules"]:
        if model.startswith(prefix):
            return int(n)
    return int(data["default"])


# ---- caching --------------------------------------------------------------------------------------------------------


def outcome(usage: dict[str, Any], marks: list[Breakpoint]) -> str:
    """``hit`` (read, nothing written), ``partial`` (read and wrote), ``miss`` (a breakpoint, nothing read), ``none``."""
    read = int(usage.get("cache_read_input_tokens") or 0)
    wrote = int(usage.get("cache_creation_input_tokens") or 0)
    if read and wrote:
        return "partial"
    if read:
        return "hit"
    if wrote or marks:
        return "miss"
    return "none"


class _Seen(TypedDict):
    index: int
    model: str
    leaves: list[tuple[str, str]]
    marks: list[Breakpoint]
    started_at: float
    tool_names: list[str]


def _diagnose(call: CallRecord, now: _Seen, earlier: list[_Seen], tokens: int, out: str) -> tuple[str | None, Difference | None, int | None, str]:
    """Why a call missed the cache: (reason, first difference, the earlier call compared with, a sentence)."""
    i, marks, model = now["index"], now["marks"], now["model"]
    earlier = earlier[-COMPARED:]
    all_chars = sum(len(t) for _, t in now["leaves"]) or 1
    if len(marks) > MAX_BREAKPOINTS:
        return ("too_many_breakpoints", None, None,
                f"call {i} sets {len(marks)} cache_control breakpoints; the API allows {MAX_BREAKPOINTS}: keep the last "
                "one on the stable part (tools and system) and the one at the end of the conversation.")
    if out == "none":
        return _unmarked(now, earlier, tokens, all_chars)
    if out != "miss":
        return None, None, None, ""
    last = marks[-1] if marks else None
    prefix_tokens = int(tokens * sum(len(t) for _, t in now["leaves"][:last["leaves"]]) / all_chars) if last else 0
    minimum = minimum_cacheable(model)
    if last is not None and prefix_tokens < minimum:
        return ("under_minimum", None, None,
                f"call {i} marked a prefix of about {prefix_tokens:,} tokens for caching, under {model}'s minimum of "
                f"{minimum:,}: nothing is cached below it; move the breakpoint later or stop marking this prefix.")
    if not earlier:
        return ("first_write", None, None,
                f"call {i} wrote its prefix to the cache (first use); calls that repeat it unchanged within "
                f"{last['ttl'] if last else '5m'} read it at a tenth of the input price.")
    best = max(reversed(earlier), key=lambda e: common_chars(e["leaves"], now["leaves"]))  # ties: the latest
    diff = first_difference(best["leaves"], now["leaves"])
    k = best["index"]
    if best["model"] != model:
        return ("model_changed", None, k,
                f"call {i} missed the cache: its prefix matches call {k}'s, but call {k} ran on {best['model']} and this "
                f"one on {model}; each model has its own cache.")
    cached_end = best["marks"][-1]["leaves"] if best["marks"] else 0
    if cached_end and (diff is None or diff["leaf"] >= cached_end):
        ttl = best["marks"][-1]["ttl"]
        last_use = max(e["started_at"] for e in earlier if e["leaves"][:cached_end] == now["leaves"][:cached_end])
        gap = now["started_at"] - last_use
        if gap > TTL_SECONDS[ttl]:
            return ("ttl_expired", None, k,
                    f"call {i} missed the cache: its prefix is call {k}'s, but {gap / 60:.1f} minutes passed since that "
                    f"prefix was last used and its TTL is {ttl}; call more often, or set \"ttl\": \"1h\" on the breakpoint.")
        return ("unexplained", None, k,
                f"call {i} missed the cache although its prefix matches call {k}'s up to the breakpoint within the TTL; "
                "the upstream may have evicted it, or the calls went to different workspaces or keys.")
    if diff is None:
        return ("first_write", None, None,
                f"call {i} wrote a prefix no earlier call had; later calls that repeat it within its TTL read it cheaply.")
    if diff["path"].startswith("tools") and sorted(best["tool_names"]) == sorted(now["tool_names"]) and best["tool_names"] != now["tool_names"]:
        return ("tools_reordered", diff, k,
                f"call {i} missed the cache: it sends the same tools as call {k} in another order "
                f"({', '.join(best['tool_names'])} became {', '.join(now['tool_names'])}); send tools in a fixed order.")
    if cached_end and diff["leaf"] >= cached_end:
        return ("first_write", diff, k, f"call {i} wrote a new prefix to the cache; it departs from call {k}'s after that call's breakpoint.")
    return ("prefix_changed", diff, k,
            f"call {i} missed the cache: `{diff['path']}` changed at character {diff['offset']} against call {k}, "
            f"`{diff['was']}` became `{diff['now']}`; move what changes between calls after the last breakpoint "
            "(into the new turn), so the cached prefix stays byte for byte the same.")


def _unmarked(now: _Seen, earlier: list[_Seen], tokens: int, all_chars: int) -> tuple[str | None, Difference | None, int | None, str]:
    """A call with no breakpoint: worth a finding only when it resends a long prefix an earlier call also sent."""
    earlier = earlier[-COMPARED:]
    if not earlier:
        return "no_breakpoint", None, None, ""
    best = max(reversed(earlier), key=lambda e: common_chars(e["leaves"], now["leaves"]))  # ties: the latest
    shared = int(tokens * common_chars(best["leaves"], now["leaves"]) / all_chars)
    if shared < minimum_cacheable(now["model"]):
        return "no_breakpoint", None, None, ""
    return ("no_breakpoint", None, best["index"],
            f"call {now['index']} resent about {shared:,} tokens identical to call {best['index']} with no cache_control "
            "breakpoint; mark the end of the part that does not change (the last system block or the last turn) to "
            "pay a tenth of the input price for it.")


# ---- conversation: dropped and summarised messages ------------------------------------------------------------------


def _key(m: Any) -> str:
    return json.dumps(m, sort_keys=True, ensure_ascii=False)


def _message_text(m: Any) -> str:
    if not isinstance(m, dict):
        return ""
    c = m.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return " ".join(str(b.get("text", "")) for b in c if isinstance(b, dict) and b.get("type") == "text")
    return ""


def history_changes(before: list[Any], after: list[Any]) -> tuple[list[int], list[int]]:
    """(indexes in ``before`` missing from ``after``, indexes in ``after`` that are new and sit before a kept message).

    Only a message that is gone while a later one of the same conversation is still sent counts as dropped, and only
    a new message placed ahead of kept ones counts as a summary: a client that starts a new conversation drops nothing.

    Example:
        >>> history_changes([{"c": 1}, {"c": 2}, {"c": 3}], [{"c": 3}, {"c": 4}])
        ([0, 1], [])
        >>> history_changes([{"c": 1}, {"c": 2}, {"c": 3}], [{"c": "sum"}, {"c": 3}, {"c": 4}])
        ([0, 1], [0])
    """
    kept_after = {_key(m): j for j, m in enumerate(after)}
    kept = [i for i, m in enumerate(before) if _key(m) in kept_after]
    if not kept:
        return [], []
    last_kept = max(kept)
    dropped = [i for i in range(last_kept) if _key(before[i]) not in kept_after]
    if not dropped:
        return [], []
    before_keys = {_key(m) for m in before}
    first_kept_after = min(kept_after[_key(before[i])] for i in kept)
    summaries = [j for j in range(first_kept_after) if _key(after[j]) not in before_keys]
    return dropped, summaries


# ---- tools ----------------------------------------------------------------------------------------------------------


def _tool_uses(message: Any) -> list[tuple[str, str, str]]:
    """(id, name, input as canonical JSON) of a message's tool_use blocks."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return []
    return [(str(b.get("id", "")), str(b.get("name", "")), json.dumps(b.get("input"), sort_keys=True))
            for b in message["content"] if isinstance(b, dict) and b.get("type") == "tool_use"]


def _new_turn_errors(body: dict[str, Any]) -> list[str]:
    """tool_use ids of the tool_results marked is_error in the call's last user turn."""
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    if not messages or not isinstance(messages[-1], dict) or not isinstance(messages[-1].get("content"), list):
        return []
    return [str(b.get("tool_use_id", "")) for b in messages[-1]["content"]
            if isinstance(b, dict) and b.get("type") == "tool_result" and b.get("is_error")]


def _tool_name_of(body: dict[str, Any], tool_use_id: str) -> str:
    for m in body.get("messages") or []:
        for uid, name, _ in _tool_uses(m):
            if uid == tool_use_id:
                return name
    return "?"


# ---- the whole session ----------------------------------------------------------------------------------------------


def analyse(calls: list[CallRecord]) -> dict[str, Any]:
    """Per call: cost, context split, cache outcome and reason, findings; and the session's totals."""
    out: list[dict[str, Any]] = []
    seen: list[_Seen] = []
    cumulative = 0.0
    run: tuple[str, str] | None = None
    run_length = 0
    previous_messages: tuple[int, list[Any]] | None = None
    for call in calls:
        body, usage = _body(call), _usage(call)
        i = int(call.get("index", len(out) + 1))
        findings: list[Finding] = []
        c = _cost(call)
        cumulative += c or 0.0
        row: dict[str, Any] = {"cost_usd": c, "cumulative_usd": round(cumulative, 10), "context": None,
                               "cache": {"outcome": "none", "reason": None, "first_difference": None}, "findings": findings}
        out.append(row)
        if call.get("status") != 200:
            findings.extend(_error_findings(call, i))
            continue
        if call.get("path") != MESSAGES_PATH:
            continue
        tokens = total_input(usage)
        model = str(body.get("model") or _response_model(call))
        row["context"] = {"estimate": True, "input_tokens": tokens, **context_split(body, tokens)}
        now: _Seen = {"index": i, "model": model, "leaves": leaves(body), "marks": breakpoints(body),
                      "started_at": float(call.get("started_at") or 0.0),
                      "tool_names": [str(t.get("name", "")) for t in body.get("tools") or [] if isinstance(t, dict)]}
        res = outcome(usage, now["marks"])
        reason, diff, against, sentence = _diagnose(call, now, seen, tokens, res)
        row["cache"] = {"outcome": res, "reason": reason,
                        "first_difference": None if diff is None else {"call": against, "path": diff["path"], "offset": diff["offset"]},
                        "around": None if diff is None else {"before": diff["before"], "after": diff["after"], "was": diff["was"], "now": diff["now"],
                                                             "at": around_at(diff["before"], diff["offset"]) if diff["offset"] else 0}}
        if sentence:
            findings.append({"kind": "cache", "text": sentence})
        seen.append(now)

        messages = items(body.get("messages"))
        if previous_messages is not None:
            k, before = previous_messages
            dropped, summaries = history_changes(before, messages)
            if dropped:
                findings.append({"kind": "context", "text": _dropped_sentence(i, k, dropped, before)})
            if summaries:
                findings.append({"kind": "context", "text":
                                 f"call {i} replaced {len(dropped)} earlier message(s) with a new message at position "
                                 f"{summaries[0]} (a summary: “{clip(_message_text(messages[summaries[0]]), 60)}”); "
                                 "check it keeps the facts later turns rely on."})
        previous_messages = (i, messages)

        for uid in _new_turn_errors(body):
            findings.append({"kind": "tools", "text":
                             f"call {i} sent a tool_result with is_error for `{_tool_name_of(body, uid)}` ({uid}); "
                             "if the same call keeps failing, say why in the result so the model can change its input."})
        resp = obj(call.get("response"))
        uses = _tool_uses(resp)
        for _, name, args in uses[:1]:
            run_length = run_length + 1 if run == (name, args) else 1
            run = (name, args)
            if run_length >= LOOP_REPEATS:
                findings.append({"kind": "loop", "text":
                                 f"call {i} asked for `{name}` with the same input {clip(args, 60)} for the {_ordinal(run_length)} "
                                 "time in a row: the agent is looping; return what changed in the tool result, or stop "
                                 "after a repeat."})
        if not uses:
            run, run_length = None, 0
        if resp.get("stop_reason") == "max_tokens":
            findings.append(_cut_finding(i, body, resp, uses))
        findings.extend(_latency_findings(call, i, usage))
    _session_findings(calls, out)
    return {"calls": out, "total_usd": round(cumulative, 10)}


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _dropped_sentence(i: int, k: int, dropped: list[int], before: list[Any]) -> str:
    first = before[dropped[0]]
    role = first.get("role", "?") if isinstance(first, dict) else "?"
    text = clip(_message_text(first), 60)
    return (f"call {i} no longer sends {len(dropped)} message(s) that call {k} sent (from messages[{dropped[0]}], "
            f"{role}: “{text}”) while later ones are kept: that context is lost to the model; keep the turns "
            "the reply depends on, or summarise them.")


def _cut_finding(i: int, body: dict[str, Any], resp: dict[str, Any], uses: list[tuple[str, str, str]]) -> Finding:
    mt = body.get("max_tokens")
    last = resp.get("content", [])[-1] if resp.get("content") else {}
    if isinstance(last, dict) and last.get("type") == "tool_use":
        return {"kind": "tools", "text":
                f"call {i}'s tool call `{last.get('name', '?')}` was cut by max_tokens ({mt}): its input is incomplete and "
                "cannot be run; raise max_tokens for calls that may use tools."}
    return {"kind": "context", "text": f"call {i}'s reply was cut at max_tokens ({mt}); raise it, or ask for a shorter answer."}


def _error_findings(call: CallRecord, i: int) -> list[Finding]:
    status = call.get("status")
    resp = obj(call.get("response"))
    err = obj(resp.get("error"))
    message = clip(str(err.get("message", "")), 120)
    if status == 429:
        return [{"kind": "error", "text": f"call {i} was rate limited (429: {message}); wait for retry-after, or spread the calls."}]
    if status == 529:
        return [{"kind": "error", "text": f"call {i} met an overloaded upstream (529); retry with backoff (the SDK does, max_retries)."}]
    return [{"kind": "error", "text": f"call {i} failed with {status}: {message or 'no message'}."}]


def _latency_findings(call: CallRecord, i: int, usage: dict[str, Any]) -> list[Finding]:
    t = call.get("timings_ms") or {}
    total = t.get("total")
    if total is not None and total > 30_000 and not _body(call).get("stream"):
        return [{"kind": "latency", "text": f"call {i} took {total / 1000:.1f} s without streaming; stream it "
                 "(\"stream\": true) so the first words show as they arrive and long replies do not time out."}]
    return []


def _session_findings(calls: list[CallRecord], out: list[dict[str, Any]]) -> None:
    """Findings that need the whole session: the most expensive call, the slowest start, no end_turn."""
    priced = [(row["cost_usd"], n) for n, row in enumerate(out) if row["cost_usd"]]
    if len(priced) >= 2:
        top, n = max(priced)
        row, i = out[n], int(calls[n].get("index", n + 1))
        row["most_expensive"] = True
        grew = ""
        prev = next((out[m]["context"] for m in range(n - 1, -1, -1) if out[m]["context"]), None)
        now = row["context"]
        if prev and now:
            parts = {k: now[k] - prev[k] for k in ("tools", "system", "history", "new_turn")}
            part = max(parts, key=lambda k: parts[k])
            grew = (f"; its input was {now['input_tokens'] - prev['input_tokens']:+,} tokens on the call before, most of it "
                    f"{part.replace('_', ' ')} ({parts[part]:+,}, estimated)")
        out[n]["findings"].append({"kind": "cost", "text": f"call {i} was the most expensive ({usd(top)}){grew}: "
                                   "cache what repeats, and trim what the reply does not need."})
    ttft = [(calls[n].get("timings_ms") or {}).get("first_token") for n in range(len(calls))]
    known = [(v, n) for n, v in enumerate(ttft) if v is not None and calls[n].get("status") == 200]
    if len(known) >= 3:
        median = statistics.median(v for v, _ in known)
        slow, n = max(known)
        if median > 0 and slow > 3 * median:
            out[n]["findings"].append({"kind": "latency", "text":
                                       f"call {int(calls[n].get('index', n + 1))} took {slow / 1000:.2f} s to its first token, "
                                       f"{slow / median:.0f}× the session's median ({median / 1000:.2f} s); look at what it sent "
                                       "that the others did not (a longer prompt, no cache hit, a larger model)."})
    answered = [n for n, c in enumerate(calls) if c.get("path") == MESSAGES_PATH and c.get("status") == 200]
    stops = [(calls[n].get("response") or {}).get("stop_reason") for n in answered]
    open_run = 0  # the last calls, none of which ended its turn
    while open_run < len(stops) and stops[-1 - open_run] != "end_turn":
        open_run += 1
    if open_run >= LOOP_REPEATS and stops[-1] in ("tool_use", "max_tokens", "pause_turn"):
        first = int(calls[answered[-open_run]].get("index", answered[-open_run] + 1))
        out[answered[-1]]["findings"].append({"kind": "loop", "text":
                                              f"the last {open_run} calls (from call {first}) never reached end_turn; the last "
                                              f"stopped with {stops[-1]}: check that the client sends the tool results back and "
                                              "that the agent's loop has an exit."})
