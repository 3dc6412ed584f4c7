"""Caching: mark cache breakpoints, send the same request twice, and see what the second one reuses.

The page opens on a cache hit: when the request's own system prompt is too short to cache (the default
scenario has none), ``system=long`` (the default) puts a long one, as a real app's would be, in its place;
``system=own`` keeps the request exactly as it is, so the minimum-length rule can be seen too.

The breakpoints are view options of this page: ``bp`` lists the turns that carry a
``cache_control`` marker (``system``, ``m0``, ``m1``… for the scenario's messages, each with an
optional ``:5m`` or ``:1h``), ``ttl`` is the time-to-live of those without one, and ``clock`` is
how many simulated minutes pass between the two requests. The page adds the markers to the
scenario's request body, validates it exactly as ``/v1/messages`` does (a combination the API
refuses shows the API's own 400 body), and runs it through the engine twice with a private
:class:`PromptCache` whose clock the page controls: the first request at t = 0 writes the
prefix's keys and values, the second at t = ``clock`` minutes reads them back (or finds them
expired) and computes only the rest. Usage, prefill timings and breakpoint outcomes are the
engine's own; costs are the requested model's list prices.

The first request does not depend on the clock, so its result and the keys and values it
stored are kept per (scenario, breakpoints); moving the clock runs only the second request,
on a fresh cache that holds exactly what the first request left in it.

The token counts are the page's headline: they are exact, and the same on every visit. The prefill
times are its footnote, and are measured the same way for both requests (:func:`measure_prefills`):
request 1 ran on a cold engine and request 2 right after it, so their own single timings swung from 6× to
21× between two visits of one link.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TypedDict

from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import MAX_BREAKPOINTS, parse_request
from explainer.lifecycle.pricing import cost, price_of, table, usd
from explainer.lifecycle.prompt_cache import MIN_CACHEABLE_TOKENS, TTL_SECONDS
from explainer.lifecycle.scenario import ScenarioError
from explainer.stages.options import ChoiceOption, IntOption, OptionError
from explainer.stages.pages.caching_pair import N_MAX, PREFILL_RUNS, _r, break_even, run_twice
from explainer.stages.runs import run_of

CLOCK_MAX = 120  # minutes: past the 1-hour TTL, so both expiries can be seen
TTL_MINUTES = {ttl: int(s // 60) for ttl, s in TTL_SECONDS.items()}

# The real minimums, for comparison (they differ by model and change: the page says "about").
# Source: Anthropic's prompt-caching documentation (platform.claude.com/docs/en/build-with-claude/prompt-caching).
CLAUDE_MINIMUMS = (
    ("Claude Sonnet models", "about 1,024 tokens"),
    ("Claude Opus models", "about 1,024 tokens; 4,096 on Opus 4.5 and 4.6"),
    ("Claude Haiku models", "2,048 tokens or more; 4,096 on Haiku 4.5"),
)
MINIMUMS_SOURCE = "Anthropic's prompt-caching documentation (minimum cacheable prompt length), checked 2026-11"

# A system prompt long enough to cache on the bundled model (about 200 tokens), as a real app's would be.
LONG_SYSTEM = (
    "You are the support assistant of Northwind Data, a small company that runs Apache Airflow and PostgreSQL "
    "for its customers. Engineers ask you about scheduling DAGs, retries, sensors, connections, backups and slow queries. "
    "Answer in three parts: first the answer in one or two sentences, then the command or the configuration that does it, "
    "then one thing to check afterwards. Use the names that the official documentation uses. "
    "When a question depends on a version that you do not know, say so and name the setting to look up. "
    "Never invent a command-line option. When the user pastes a log or a traceback, quote the line that matters "
    "before you explain it. Questions about billing or accounts go to the support portal: do not answer them here."
)

PREVIEW_CHARS = 280
_ITEM = re.compile(r"(system|m(0|[1-9]\d{0,4}))(?::(5m|1h))?")


# ---- view options --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BreakpointsOption:
    """``bp``: the turns that carry ``cache_control``, e.g. ``system`` or ``m0,m2:1h``; ``none`` for none.

    Absent, the page picks one (the system prompt, else the last message). The parsed value is the
    list written back in prompt order, so permalinks stay readable.
    """

    default: str = ""
    max_items: int = 12  # more than the API's 4, so that the API's own refusal can be shown

    def parse(self, name: str, raw: str | None) -> str:
        if raw is None or raw == "":
            return self.default
        if raw == "none":
            return raw
        if len(raw) > 160:
            raise OptionError(f"“{name}” is too long.")
        items = raw.split(",")
        if len(items) > self.max_items:
            raise OptionError(f"“{name}” lists {len(items)} turns; a request has at most {MAX_BREAKPOINTS} breakpoints.")
        seen: dict[str, str | None] = {}
        for item in items:
            m = _ITEM.fullmatch(item)
            if not m:
                raise OptionError(f"“{name}” lists turns as system, m0, m1, … each with an optional :5m or :1h; “{item[:24]}” is not one.")
            if m.group(1) in seen:
                raise OptionError(f"“{name}” names {m.group(1)} twice: a turn carries at most one breakpoint here.")
            seen[m.group(1)] = m.group(3)
        return format_marks([(turn, ttl) for turn, ttl in sorted(seen.items(), key=lambda kv: _order(kv[0]))])


def _order(turn: str) -> int:
    return -1 if turn == "system" else int(turn[1:])


def parse_marks(value: str) -> list[tuple[str, str | None]]:
    """The canonical ``bp`` value as (turn, ttl or None) pairs."""
    if not value or value == "none":
        return []
    out = []
    for item in value.split(","):
        turn, _, ttl = item.partition(":")
        out.append((turn, ttl or None))
    return out


def format_marks(marks: list[tuple[str, str | None]]) -> str:
    return ",".join(turn + (f":{ttl}" if ttl else "") for turn, ttl in marks) or "none"


DATA = {"caching-data": "data"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS = {
    "bp": BreakpointsOption(),
    "ttl": ChoiceOption("5m", tuple(TTL_SECONDS)),
    "clock": IntOption(1, 0, CLOCK_MAX, "simulated minutes between the two requests"),
    # long: a long system prompt in place of one too short to cache; own: the request exactly as it is
    "system": ChoiceOption("long", ("long", "own")),
}
DEFAULTS = {"clock": OPTIONS["clock"].default, "ttl": OPTIONS["ttl"].default}  # for the page's script


# ---- the request with its breakpoints ------------------------------------------------------------

def message_text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))


def cache_control(ttl: str) -> dict:
    return {"type": "ephemeral", "ttl": ttl}


def cached_body(scenario, marks: list[tuple[str, str]]) -> dict:
    """The scenario's request body with ``cache_control`` on the marked blocks (the whole turn is one text block)."""
    body = scenario.request_body()
    for turn, ttl in marks:
        cc = cache_control(ttl)
        if turn == "system":
            body["system"] = [{"type": "text", "text": scenario.system, "cache_control": cc}]
            continue
        msg = body["messages"][int(turn[1:])]
        content = msg["content"]
        if isinstance(content, str):
            msg["content"] = [{"type": "text", "text": content, "cache_control": cc}]
        elif content and isinstance(content[-1], dict):
            msg["content"] = [*content[:-1], {**content[-1], "cache_control": cc}]
    # keep the body's field order readable: model, max_tokens, system, messages, …
    return body


def default_marks(scenario) -> str:
    if scenario.system:
        return "system"
    return f"m{len(scenario.messages) - 1}"


def merged_turns(messages: list[dict]) -> list[int]:
    """For each scenario message, the index of the turn it becomes (consecutive turns of one role merge)."""
    out, turn, prev = [], -1, None
    for m in messages:
        if m.get("role") != prev:
            turn += 1
            prev = m.get("role")
        out.append(turn)
    return out


# ---- the page ------------------------------------------------------------------------------------

def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS].rstrip() + " …"


def _turn_rows(eng, s, req, marks: dict[str, str], default_ttl: str) -> tuple[list[dict], int]:
    """One row per markable block: the system prompt and every message, with its prefix length."""
    ids, ends = eng.prompt_segments(req)
    merged = merged_turns(s.messages)
    rows, prev = [], 0
    if s.system:
        n = ends["system"]
        rows.append({"key": "system", "label": "system prompt", "role": "system", "text": _preview(s.system),
                     "tokens": n, "prefix": n})
        prev = n
    for i, m in enumerate(s.messages):
        end = ends[f"messages.{merged[i]}"]
        shares = i + 1 < len(merged) and merged[i + 1] == merged[i]
        rows.append({"key": f"m{i}", "label": f"message {i}", "role": m["role"], "text": _preview(message_text(m["content"])),
                     "tokens": end - prev, "prefix": end, "merged_with_next": shares})
        prev = end
    for r in rows:
        r["marked"] = r["key"] in marks
        r["ttl"] = marks.get(r["key"]) or default_ttl
        r["cacheable"] = r["prefix"] >= MIN_CACHEABLE_TOKENS
    return rows, len(ids)


def system_tokens(eng, req) -> int:
    """Tokens of the request's system turn (tool definitions included: the bundled model reads them there)."""
    _, ends = eng.prompt_segments(req)
    return ends.get("system", 0)


def _long_tokens(eng, s) -> int | None:
    """Tokens of the system turn with the long system prompt in place of the request's own."""
    try:
        return system_tokens(eng, parse_request(s.replace(system=LONG_SYSTEM).request_body()))
    except (APIError, ScenarioError):
        return None


def effective(page):
    """(scenario, run, own system tokens, swapped): the request the page caches.

    With ``system=long`` a system prompt too short to cache (or none) gives way to ``LONG_SYSTEM``, so
    the page opens on a prefix that is cached; ``system=own`` keeps the request as it is.
    """
    s, run = page.scenario, page.run
    if run.error is not None or run.request is None:
        return s, run, None, False
    own = system_tokens(page.engine, run.request)
    if page.opts["system"] != "long" or own >= MIN_CACHEABLE_TOKENS:
        return s, run, own, False
    try:
        long = s.replace(system=LONG_SYSTEM)
        lrun = run_of(long)
    except ScenarioError:
        return s, run, own, False
    if lrun.error is not None or lrun.request is None:  # the long prompt would not fit beside this history
        return s, run, own, False
    return long, lrun, own, True


def _status(r: dict, index: int) -> tuple[str, str]:
    """(kind, words) for a request's cache outcome."""
    c = r["cache"]
    if c is None:
        return "none", "no breakpoints"
    if c["read"] and c["written"]:
        return "partial", f"read {c['read']} tokens, wrote {c['written']} more"
    if c["read"]:
        return "hit", f"cache hit: read {c['read']} tokens"
    if c["written"]:
        return ("write", f"cache write: {c['written']} tokens") if index == 0 else ("miss", f"miss: wrote {c['written']} tokens again")
    return "short", "not cached: shorter than the minimum"


class Breakpoint(TypedDict):
    length: int
    ttl: str
    outcome: str


class RequestView(TypedDict):
    """One of the two requests, as its row in the main visual and its card below show it (and the script binds)."""
    index: int
    minutes: int
    kind: str  # write, hit, miss, partial, short, none
    status: str
    total: int
    read: int
    written: int
    input: int
    computed: int
    prefill_tokens: int
    prefill_ms: float
    prefill_ms_text: str
    usage_json: str
    breakpoints: list[Breakpoint]
    cost_text: dict | None  # input, cache_write, cache_read, output, total: the model's list price, or None


class Results(TypedDict):
    """What the two requests did: everything on the page that a change of breakpoints, TTL or clock changes.
    The template renders it once; the page's script binds a new one from /data in place (no HTML is fetched)."""
    api_error: str  # the API's 400 body for breakpoints it refuses, or ""
    api_status: int | None
    body_json: str
    long_url: str
    own_url: str
    requests: list[RequestView]
    slowest_ms: float  # the prefill bars' scale
    headline: str
    timing_note: str
    nothing_cached: bool
    n_marks: int
    longest_mark: int
    same_text: bool
    plain_cost: str | None
    plain_input_text: str | None
    break_even: dict


def _request_view(r: dict, index: int, model: str, minutes: int, prefill_ms: float) -> RequestView:
    u, c = r["usage"], r["cache"]
    read = u.get("cache_read_input_tokens") or 0
    written = u.get("cache_creation_input_tokens") or 0
    kind, words = _status(r, index)
    money = cost(model, u)
    return {
        "index": index + 1, "minutes": minutes, "kind": kind, "status": words, "total": r["prompt_tokens"],
        "read": read, "written": written, "input": u["input_tokens"], "computed": written + u["input_tokens"],
        "prefill_tokens": r["timings"]["prefill_tokens"], "prefill_ms": prefill_ms, "prefill_ms_text": f"{prefill_ms:.1f}",
        "usage_json": _json(u),
        "breakpoints": [{k: b[k] for k in ("length", "ttl", "outcome")} for b in (c or {}).get("breakpoints", [])],
        "cost_text": {k: usd(v) for k, v in money.items()} if money else None,
    }


def _json(d) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False)


def _prompt_links(page) -> dict:
    """The two versions of the request: with the long system prompt (the default) and exactly as it is."""
    keep = {"ttl": _nondefault("ttl", page.opts["ttl"]), "clock": _nondefault("clock", page.opts["clock"])}
    return {"long_url": page.url(**keep), "own_url": page.url(system="own", **keep)}


def _nondefault(name: str, value):
    return None if value == OPTIONS[name].default else value


def _ttl_words(m: int) -> str:
    return "1-hour" if m == 60 else f"{m}-minute"


def _fate(ttl_min: int, minutes: int, outcome2: str) -> tuple[str, str]:
    """(fate, words) of an entry request 1 wrote, by request 2 ``minutes`` later (``outcome2``: what request 2 did with it)."""
    if minutes >= ttl_min:
        return "expired", f"expired at {ttl_min} min, before request 2; request 2 writes it again"
    if outcome2.startswith("hit"):
        return "refreshed", f"read by request 2, which restarts its {_ttl_words(ttl_min)} timer"
    return "kept", f"still there, inside the longer prefix that request 2 read; not refreshed, it expires at {ttl_min} min"


def _expiry_caption(entries: list[dict], minutes: int) -> str:
    when = "right after request 1" if minutes == 0 else f"{minutes} minute{'s' if minutes != 1 else ''} later"
    gone = sorted({e["ttl_min"] for e in entries if e["fate"] == "expired"})
    if not entries:
        return "Request 1 stored nothing, so there is nothing to expire: both requests compute the whole prompt."
    if len(gone) and all(e["fate"] == "expired" for e in entries):
        return f"Request 2 comes {when}, after the cache expired: it misses, computes everything and pays for the write again."
    if gone:
        return (f"Request 2 comes {when}: the {' and '.join(_ttl_words(m) for m in gone)} entry has expired, "
                "the longer-lived one is still there and is read.")
    return f"Request 2 comes {when}, within the TTL: it reads the prefix and its timer starts again."


def _expiry(first: dict, second: dict, minutes: int) -> dict:
    """The cache entries request 1 wrote, and what became of each by request 2."""
    outcome2 = {(b["length"], b["ttl"]): b["outcome"] for b in (second["cache"] or {}).get("breakpoints", [])}
    entries = []
    for b in (first["cache"] or {}).get("breakpoints", []):
        if not b["outcome"].startswith("miss"):  # request 1 wrote only these
            continue
        ttl_min = TTL_MINUTES[b["ttl"]]
        fate, words = _fate(ttl_min, minutes, outcome2.get((b["length"], b["ttl"]), ""))
        entries.append({"length": b["length"], "ttl": b["ttl"], "ttl_min": ttl_min, "fate": fate, "words": words})
    return {"entries": entries, "caption": _expiry_caption(entries, minutes)}


def _times(x: float) -> str:
    """A ratio in words: 10.1× (one decimal)."""
    return f"{x:.1f}×"


def headline(r1: dict, r2: dict, n_marks: int, longest: int) -> str:
    """What the two requests' usage says, in one or two sentences, from the token counts: exact, and the same on
    every visit (the measured times are the footnote's, :func:`timing_note`)."""
    t1, t2 = r1["prefill_tokens"], r2["prefill_tokens"]
    if r2["read"]:
        fewer = f"{_times(t1 / t2)} fewer than request 1" if t2 else "none at all"
        return (f"Request 2 read {r2['read']} of its {r2['total']} prompt tokens from the cache and computed only {t2}: "
                f"{fewer}.")
    if r1["written"] and r2["written"]:
        return (f"Request 1 wrote {r1['written']} tokens to the cache, but they expired before request 2, which computed all "
                f"{t2} prompt tokens again and wrote them again.")
    if n_marks == 0:
        return f"No block carries a breakpoint, so nothing is cached: both requests computed all {t1} prompt tokens."
    if not r1["written"]:
        return (f"The longest marked prefix is {longest} tokens, under the {MIN_CACHEABLE_TOKENS}-token minimum, so nothing was cached: "
                f"both requests computed all {t1} prompt tokens.")
    return f"Request 1 computed {t1} prompt tokens and request 2 {t2}."


def timing_note(r1: dict, r2: dict) -> str:
    """The measured prefill times, as a footnote to the token counts (the bars beside each request show the
    milliseconds): short, so that the picture stays on a phone's first screen."""
    ms1, ms2 = r1["prefill_ms"], r2["prefill_ms"]
    how = f"median of {PREFILL_RUNS} warm runs each"
    if r1["prefill_tokens"] == r2["prefill_tokens"]:
        return f"Measured: {ms1:.1f} ms and {ms2:.1f} ms for the same {r1['prefill_tokens']} tokens ({how})."
    if ms2 > 0 and ms1 > ms2:
        return f"Measured: {_times(ms1 / ms2)} faster ({how}; the token ratio is the exact one)."
    return f"Measured: {ms1:.1f} ms for request 1, {ms2:.1f} ms for request 2 ({how})."


def _base(page, s, own_tokens: int | None, swapped: bool) -> dict:
    """What the page shows whatever the breakpoints: the rules, the minimums, the prices, the system prompt's choice."""
    opts, eng = page.opts, page.engine
    price, prices = price_of(s.model), table()
    base = {
        "min_tokens": MIN_CACHEABLE_TOKENS, "claude_minimums": CLAUDE_MINIMUMS, "minimums_source": MINIMUMS_SOURCE,
        "max_breakpoints": MAX_BREAKPOINTS, "clock": opts["clock"], "clock_max": CLOCK_MAX, "ttl": opts["ttl"],
        "served_by": eng.name, "local": not eng.loaded.bundled, "model": s.model, "has_tools": bool(s.tools),
        "price": price, "price_checked": prices.get("checked"),
        "multipliers": prices["cache_multipliers"], "n_max": N_MAX, "prefill_runs": PREFILL_RUNS,
        # the system prompt the page uses: the request's own, or the long one in its place
        "system_mode": opts["system"], "swapped": swapped, "own_system_tokens": own_tokens,
        "can_swap": own_tokens is not None and own_tokens < MIN_CACHEABLE_TOKENS,
        **_prompt_links(page),  # for the teaching text; the picture's and the results' links are the view's
    }
    if base["can_swap"]:
        base["long_system_tokens"] = _long_tokens(eng, page.scenario)
    if price is not None:
        m = prices["cache_multipliers"]
        base["price_row"] = {k: f"${v:,.2f}" for k, v in (
            ("input", price["input"]), ("output", price["output"]), ("write_5m", price["input"] * m["write_5m"]),
            ("write_1h", price["input"] * m["write_1h"]), ("read", price["input"] * m["read"]))}
    return base


def _marks(page, s) -> tuple[str, list[tuple[str, str | None]]]:
    """(the ``bp`` option or the breakpoints chosen for this request, each turn with its own TTL or None)."""
    bp = page.opts["bp"] or default_marks(s)
    chosen = parse_marks(bp)
    for turn, _ in chosen:
        if turn == "system" and not s.system:
            raise OptionError("“bp” names system, but this request has no system prompt.")
        if turn != "system" and int(turn[1:]) >= len(s.messages):
            last = len(s.messages) - 1
            raise OptionError(f"“bp” names {turn}, but this request's messages are m0{f' to m{last}' if last else ''}.")
    return bp, chosen


def _unit_costs(s, u1: dict, total: int) -> tuple[str, float, float, float]:
    """(unit, a request without caching, request 1 (the write), a hit): dollars at the model's list price, or when
    its price is unknown, base input tokens at the API's cache rates (output is the same on every line: left out)."""
    written = u1.get("cache_creation_input_tokens") or 0
    if price_of(s.model) is not None:
        hit = {"input_tokens": u1["input_tokens"], "cache_read_input_tokens": written, "cache_creation_input_tokens": 0,
               "output_tokens": u1["output_tokens"]}
        plain = {"input_tokens": total, "output_tokens": u1["output_tokens"]}
        return "usd", cost(s.model, plain)["total"], cost(s.model, u1)["total"], cost(s.model, hit)["total"]
    m = table()["cache_multipliers"]
    w1h = (u1.get("cache_creation") or {}).get("ephemeral_1h_input_tokens", 0)
    first = u1["input_tokens"] + (written - w1h) * m["write_5m"] + w1h * m["write_1h"]
    return "tokens", float(total), first, u1["input_tokens"] + written * m["read"]


def _break_even(unit: str, c_plain: float, c_first: float, c_hit: float) -> dict:
    be = break_even(c_plain, c_first, c_hit)
    fmt = usd if unit == "usd" else (lambda x: f"the price of {x:,.0f} input tokens")
    return be | {"plain_text": fmt(be["plain_total"]), "cached_text": fmt(be["cached_total"]), "miss_text": fmt(be["miss_total"]),
                 "saving_pct": round((1 - be["cached_total"] / be["plain_total"]) * 100) if be["plain_total"] else 0}


def _refused(page, exc: APIError, body: dict, n_marks: int) -> Results:
    """Breakpoints the API refuses: its answer, as it would send it; no request ran."""
    return {"api_error": _json(exc.body()), "api_status": exc.status, "body_json": _json(body), **_prompt_links(page),
            "requests": [], "slowest_ms": 1.0, "headline": "", "timing_note": "", "nothing_cached": False,
            "n_marks": n_marks, "longest_mark": 0, "same_text": False, "plain_cost": None, "plain_input_text": None,
            "break_even": {}}


def _results(page, s, pair: dict, body: dict, n_marks: int, total: int, unit_costs: tuple) -> Results:
    first, second = pair["first"], pair["second"]
    # both measured the same way (the engine's own: one cold run each)
    r1 = _request_view(first, 0, s.model, 0, pair["prefill_ms"][0])
    r2 = _request_view(second, 1, s.model, page.opts["clock"], pair["prefill_ms"][1])
    longest = max((b["length"] for b in r1["breakpoints"]), default=0)
    plain_usage = {"input_tokens": total, "output_tokens": first["usage"]["output_tokens"]}
    plain = cost(s.model, plain_usage) if price_of(s.model) else None
    return {
        "api_error": "", "api_status": None, "body_json": _json(body), **_prompt_links(page),
        "requests": [r1, r2], "slowest_ms": max(r1["prefill_ms"], r2["prefill_ms"]) or 1.0,
        "headline": headline(r1, r2, n_marks, longest), "timing_note": timing_note(r1, r2),
        "nothing_cached": r1["written"] == 0, "n_marks": n_marks, "longest_mark": longest,
        "same_text": first["text"] == second["text"],
        "plain_cost": usd(plain["total"]) if plain else None, "plain_input_text": usd(plain["input"]) if plain else None,
        "break_even": _break_even(*unit_costs),
    }


def _not_run(opts, view: Results | None = None) -> dict:
    """The script's data when no pair of requests ran (the request cannot run, or the API refuses its breakpoints)."""
    return {"ok": False, "clock": opts["clock"], "defaults": DEFAULTS} | ({"view": view} if view else {})


def context(page) -> dict:
    opts, eng = page.opts, page.engine
    s, run, own_tokens, swapped = effective(page)
    base = _base(page, s, own_tokens, swapped)
    bp, chosen = _marks(page, s)  # which turns carry a breakpoint
    marks = [(turn, ttl or opts["ttl"]) for turn, ttl in chosen]
    base |= {"bp": bp, "bp_explicit": bool(opts["bp"]), "n_marks": len(marks)}
    if run.error is not None or run.request is None:  # the request cannot run at all (the card above shows the API's error)
        return base | {"ok": False, "runnable": False, "data": _not_run(opts)}

    rows, total = _turn_rows(eng, s, run.request, dict(chosen), opts["ttl"])
    body = cached_body(s, marks)
    base |= {"rows": rows, "prompt_tokens": total,
             "system_tokens": rows[0]["tokens"] if s.system else 0,
             "short_system": not s.system or rows[0]["tokens"] < MIN_CACHEABLE_TOKENS}
    try:
        req = parse_request(body)
        pair = run_twice(eng, s, body, req, bp + "|" + opts["ttl"], opts["clock"])
    except APIError as exc:  # a combination the API refuses: show its answer, as it would send it
        view = _refused(page, exc, body, len(marks))
        return base | {"ok": False, "runnable": True, "view": view, "data": _not_run(opts, view)}

    unit_costs = _unit_costs(s, pair["first"]["usage"], total)
    view = _results(page, s, pair, body, len(marks), total, unit_costs)
    expiry = _expiry(pair["first"], pair["second"], opts["clock"])
    unit, c_plain, c_first, c_hit = unit_costs
    r1, r2 = view["requests"]
    return base | {
        "ok": True, "runnable": True, "view": view, "unit": unit, "expiry": expiry,
        # for the page's tests: the same values the template shows from the view
        "requests": [r1, r2], "first": r1, "second": r2, "headline": view["headline"], "timing_note": view["timing_note"],
        "data": {
            "ok": True, "clock": opts["clock"], "clock_max": CLOCK_MAX, "n_max": N_MAX, "unit": unit,
            "defaults": DEFAULTS,
            "costs": {"plain": _r(c_plain), "first": _r(c_first), "hit": _r(c_hit)},
            "break_even": {k: view["break_even"][k] for k in ("cheaper_from", "crossing")},
            "entries": [{k: e[k] for k in ("length", "ttl", "ttl_min", "fate", "words")} for e in expiry["entries"]],
            "caption": expiry["caption"],
            "view": view,
        },
    }
