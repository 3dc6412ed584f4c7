"""Serving: the explained request shares the model's decode steps with every other request being served.

The page runs a real case on the engine that serves the scenario: ``extra`` other requests (the page's own,
fixed questions) are started in threads and let decode a few tokens, then the scenario's request is sent
beside them; when all have ended, the model's batch scheduler gives its record of that window
(``explainer.llm.batching.Scheduler.record``): every decode step with the requests that had a row in it,
and every request's arrival, admission, first step and departure. The page shows that record as it is;
requests in the window that are not the page's (other people using this server at that moment) are
anonymous rows, their labels dropped.

The figures (each request's tokens per second, the server's aggregate, KV-cache bytes) are computed here,
once, from the record; the page and ``/learn/serving/data`` show the same numbers. The case with no extra
request is the request alone, the baseline the others are compared with. Cases are kept per (scenario,
extra) in a small LRU: a permalink shows the record it first made, and the explained request's tokens are
the same whatever ran beside it (``explainer.llm.layers.Dense.rows``), which the page checks against the
scenario's own run.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import TypedDict

from django.conf import settings

from explainer.lifecycle import frames as fr
from explainer.lifecycle import lru
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request
from explainer.llm import budget
from explainer.stages.options import IntOption
from explainer.web.runner import lane_for

EXTRA_MAX = 16
EXTRA_CHOICES = (0, 4, 16)  # what the page offers; a link may carry any number from 0 to EXTRA_MAX
OPTIONS = {"extra": IntOption(4, 0, EXTRA_MAX, "other requests sent alongside the explained one")}
DATA = {"serving-data": "data"}  # element id -> context key: embedded once by _stage.html, served by /learn/serving/data

HEAD_START = 6  # tokens each extra request decodes before the explained one is sent: they are "already running"
EXTRA_MAX_TOKENS = 160
# What the page's extra requests ask: questions an engineer might send (their text is not shown, as anyone's).
EXTRA_QUESTIONS = (
    "What is a KV cache?", "How do I read a file in Python?", "Explain database indexes.",
    "How does TCP open a connection?", "What is a hash table?", "Why use virtual environments?",
    "What is a B-tree?", "How does HTTPS keep a secret?", "What does a load balancer do?",
    "How do I write a unit test?", "What is a race condition?", "Explain garbage collection.",
    "How does DNS find a server?", "What is a message queue?", "Why is SQL injection dangerous?",
    "What does git rebase do?",
)
YOU, EXTRA, OTHER = "this request", "extra", "someone else"

_CASES = lru.LRU("serving page: recorded cases")
_serial = itertools.count(1)  # each case's labels are its own


# ---- running the case ----------------------------------------------------------------------------------

@dataclass
class Extra:
    """One extra request, run in its own thread: it says when it has decoded ``HEAD_START`` tokens (or ended)."""

    index: int
    body: dict
    label: str
    going: threading.Event = field(default_factory=threading.Event)
    tokens: int = 0
    error: str | None = None

    def run(self, engine, b: budget.Budget | None, lane) -> None:
        try:
            with budget.running(b):
                req = parse_request(self.body)
                for event in engine.stream(req, seed=self.index, label=self.label):
                    if event["type"] == fr.TOKEN:
                        self.tokens += 1
                        if self.tokens >= HEAD_START:
                            self.going.set()
        except (APIError, budget.Interrupted) as exc:
            self.error = str(exc)
        finally:
            self.going.set()
            lane.leave()


def extra_body(model: str, i: int) -> dict:
    return {"model": model, "max_tokens": EXTRA_MAX_TOKENS, "temperature": 0.7,
            "messages": [{"role": "user", "content": EXTRA_QUESTIONS[i % len(EXTRA_QUESTIONS)]}]}


def _wait(event: threading.Event) -> None:
    """Wait for ``event``, stopping if the page's own budget (its deadline, its client) runs out."""
    while not event.wait(0.05):
        budget.check()


def record_case(engine, scenario, extra: int) -> dict:
    """Run the case (``extra`` requests already decoding, then the scenario's request) and return the scheduler's
    record of its window, with which request was which."""
    sched = engine.scheduler
    tag = f"serving-{next(_serial)}"  # this case's labels: no other run has them
    lane = lane_for(scenario.model)
    b = budget.current()
    since = sched.now()
    extras: list[tuple[Extra, threading.Thread]] = []
    for i in range(extra):
        if not lane.enter():  # the server's lane is full: fewer extras run, and the page says so
            break
        x = Extra(i + 1, extra_body(scenario.model, i), f"{tag}:{EXTRA}:{i + 1}")
        t = threading.Thread(target=x.run, args=(engine, b, lane), name=f"serving-extra-{i + 1}", daemon=True)
        extras.append((x, t))
        t.start()
    for x, _ in extras:
        _wait(x.going)
    req = parse_request(scenario.request_body())
    tokens = [e["token"] for e in engine.stream(req, seed=scenario.seed, label=f"{tag}:{YOU}") if e["type"] == fr.TOKEN]
    for _, t in extras:  # each extra ends on its own (its answer's end or max_tokens): wait for the last
        while t.is_alive():
            t.join(0.05)
            budget.check()
    return {"record": sched.record(since=since), "tag": tag, "since": since, "until": sched.now(), "tokens": tokens,
            "asked": extra, "ran": len(extras), "errors": [x.error for x, _ in extras if x.error]}


def case_of(page, extra: int) -> dict:
    eng = page.engine
    key = (page.scenario.key(), eng.loaded.fingerprint, extra)
    return _CASES.get_or_compute(key, lambda: record_case(eng, page.scenario, extra))


# ---- the record, in figures ----------------------------------------------------------------------------

class RequestRow(TypedDict):
    id: int
    name: str
    kind: str  # "you", "extra" or "other"
    prompt_tokens: int
    tokens: int  # decode steps it had a row in
    tokens_per_s: float | None  # its rows over the time from its first step's start to its last's end
    wait_ms: float | None  # queued -> admitted: waiting for a place in the KV budget
    prefill_ms: float | None  # admitted -> first step
    mean_batch: float | None  # rows of the steps it was in, on average
    largest_batch: int  # rows of the fullest step it was in
    kv_bytes: int
    kv_mb: str
    left: bool
    reason: str | None


def mb(n: int | None) -> str | None:
    """Bytes as the page writes them (MB of 2**20 bytes, as EXPLAINER_KV_MB counts them)."""
    return None if n is None else f"{n / 2**20:.1f} MB"


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 1) if a and b else None


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((b - a) * 1000, 1)


def _rate(n: int, steps: list[dict]) -> float | None:
    if len(steps) < 2:
        return None
    return round(n / (steps[-1]["end"] - steps[0]["start"]), 1)


def name_of(label: str, tag: str) -> tuple[str, str]:
    """(kind, display name) of a request in the window: the page's own by their label, anyone else's anonymous."""
    if label == f"{tag}:{YOU}":
        return "you", YOU
    if label.startswith(f"{tag}:{EXTRA}:"):
        return "extra", f"{EXTRA} {label.rsplit(':', 1)[1]}"
    return "other", OTHER


def rows_of(case: dict) -> list[RequestRow]:
    rec = case["record"]
    by: dict[int, list[dict]] = {}
    for st in rec["steps"]:
        for rid in st["rows"]:
            by.setdefault(rid, []).append(st)
    rows = []
    for r in rec["requests"]:
        kind, name = name_of(r["label"], case["tag"])
        mine = by.get(r["id"], [])
        rows.append(RequestRow(
            id=r["id"], name=name, kind=kind, prompt_tokens=r["prompt_tokens"], tokens=len(mine),
            tokens_per_s=_rate(len(mine), mine), wait_ms=_ms(r["queued"], r["admitted"]),
            prefill_ms=_ms(r["admitted"], r["first_step"]),
            mean_batch=round(sum(len(s["rows"]) for s in mine) / len(mine), 1) if mine else None,
            largest_batch=max((len(s["rows"]) for s in mine), default=0),
            kv_bytes=r["kv_reserved"], kv_mb=mb(r["kv_reserved"]) or "", left=r["left"] is not None, reason=r["reason"]))
    order = {"you": 0, "extra": 1, "other": 2}
    return sorted(rows, key=lambda x: (order[x["kind"]], x["id"]))


def timeline_of(case: dict, rows: list[RequestRow]) -> dict:
    """The record as the timeline module draws it (static/js/stages/serving-timeline.js): the scheduler's steps
    and requests (anyone else's label dropped), ``highlight``, ``names`` and the window."""
    rec = case["record"]
    names = {str(r["id"]): r["name"] for r in rows}
    mine = {r["id"] for r in rows if r["kind"] != "other"}
    requests = [r | {"label": names[str(r["id"])] if r["id"] in mine else ""} for r in rec["requests"]]
    you = [r["id"] for r in rows if r["kind"] == "you"]
    return {"steps": rec["steps"], "requests": requests, "highlight": you[0] if you else None, "names": names,
            "window": [round(case["since"], 6), round(case["until"], 6)]}


def figures_of(case: dict, rows: list[RequestRow]) -> dict:
    rec = case["record"]
    steps = rec["steps"]
    total = sum(len(s["rows"]) for s in steps)
    sizes = [len(s["rows"]) for s in steps]
    you = next((r for r in rows if r["kind"] == "you"), None)
    return {
        "steps": len(steps),
        "tokens": total,  # rows in every step of the window: tokens the model produced for everyone
        "aggregate_tokens_per_s": round(total / (steps[-1]["end"] - steps[0]["start"]), 1) if len(steps) > 1 else None,
        "largest_batch": max(sizes, default=0),
        "window_ms": round((case["until"] - case["since"]) * 1000, 1),
        "you": you,
        "requests": len(rows),
        "others": sum(r["kind"] == "other" for r in rows),
        "kv_budget_bytes": rec["kv_budget_bytes"],
        "kv_peak_bytes": max((s["kv_bytes"] for s in steps), default=0),  # the admitted requests' KV, at its most
        "kv_reserved_bytes": sum(r["kv_bytes"] for r in rows),
        "kv_budget_mb": mb(rec["kv_budget_bytes"]),
        "kv_peak_mb": mb(max((s["kv_bytes"] for s in steps), default=0)),
        "kv_reserved_mb": mb(sum(r["kv_bytes"] for r in rows)),
        "max_batch": rec["max_batch"],
        "queued_now": rec["queued"],  # requests still waiting for a KV place when the record was taken
        "longest_wait_ms": max((r["wait_ms"] for r in rows if r["wait_ms"] is not None), default=None),
    }


def story_of(case: dict, you: RequestRow | None) -> dict | None:
    """The explained request's life in the record, in milliseconds from the window's start: when it arrived, how long
    it waited and prefilled, the batch it joined and the one it left."""
    rec = next((r for r in case["record"]["requests"] if you and r["id"] == you["id"]), None)
    if rec is None or you is None:
        return None
    steps = [st for st in case["record"]["steps"] if rec["id"] in st["rows"]]

    def at(t: float | None) -> float | None:
        return None if t is None else round((t - case["since"]) * 1000, 1)

    return {"arrived_ms": at(rec["queued"]), "wait_ms": you["wait_ms"], "prefill_ms": you["prefill_ms"],
            "joined_ms": at(steps[0]["start"]) if steps else None, "first_batch": len(steps[0]["rows"]) if steps else None,
            "steps": len(steps), "mean_batch": you["mean_batch"], "last_batch": len(steps[-1]["rows"]) if steps else None,
            "left_ms": at(rec["left"]), "reason": rec["reason"]}


def lane_figures(scenario, you: RequestRow | None, kv_budget: int | None) -> dict:
    """The server's real bounds: the lane's workers and queue (past them, 529), the KV budget and how many
    requests like this one it holds at once."""
    lane = lane_for(scenario.model)
    per = you["kv_bytes"] if you else 0
    return {"workers": lane.n_workers, "queue": lane.queue, "capacity": lane.capacity(),
            "bundled": lane.name == "bundled", "kv_mb": settings.EXPLAINER_KV_MB, "batch_max": settings.EXPLAINER_BATCH_MAX,
            "like_this_fit": (kv_budget // per) if kv_budget and per else None}


def summary(page, extra: int) -> tuple[dict, list[RequestRow], dict]:
    case = case_of(page, extra)
    rows = rows_of(case)
    return case, rows, figures_of(case, rows)


def context(page) -> dict:
    extra = page.opts["extra"]
    base = {"extra": extra, "extra_choices": [{"n": n, "url": page.url(extra=n), "current": n == extra} for n in EXTRA_CHOICES],
            "extra_max": EXTRA_MAX}
    run = page.run
    if run.error is not None or page.engine.scheduler is None:
        return base | {"runnable": False, "no_scheduler": run.error is None, "data": {"runnable": False, "extra": extra}}
    case, rows, figures = summary(page, extra)
    alone = figures if extra == 0 else summary(page, 0)[2]  # the request alone: the baseline
    you = figures["you"]
    alone_tps = (alone["you"] or {}).get("tokens_per_s")
    data = {
        "runnable": True, "extra": extra, "asked": case["asked"], "ran": case["ran"],
        "timeline": timeline_of(case, rows), "rows": rows, "figures": figures, "story": story_of(case, you),
        "alone_tokens_per_s": alone_tps,
        # the server's output against the request alone, and this request's stream against itself alone
        "aggregate_gain": _ratio(figures["aggregate_tokens_per_s"], alone_tps),
        "you_slower": _ratio(alone_tps, (you or {}).get("tokens_per_s")),
        "same_tokens": case["tokens"] == [s["token"] for s in run.steps],
        "reply_tokens": len(case["tokens"]),
        "lane": lane_figures(page.scenario, you, figures["kv_budget_bytes"]),
    }
    return base | {"runnable": True, "data": data, "view": data}


