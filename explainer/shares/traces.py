"""Recording a trace of each /v1/ call: what arrived, what the gateway decided, what the engine did.

A trace is written after its call has answered, by one background thread, so the database
write is not part of any call's time. Until it lands, ``/traces/<id>/`` waits for it when the
write is pending in this process (``wait_until_written``), and says "being recorded" when the
id is only minutes old (another process may be writing it: ``recently_issued``).

What is stored is what any database can hold (``Cleaner``): lone UTF-16 surrogates and NUL
characters become U+FFFD, numbers that are not finite become null, and each trace says what
was changed (``Trace.notes``). Its size is capped: a request body that would take over
``MAX_STORED_BODY`` bytes (``MAX_STORED_BODY_COUNT_TOKENS`` for count_tokens) is kept as the
beginning of its JSON text, as much as that holds, marked ``body_truncated``; in a whole trace
over ``MAX_TRACE_BYTES`` the lists (steps, events) lose their tails, and it says so. A write
that fails anyway leaves an outline row saying why (or, if even that fails, a note in this
process), which the trace page shows.
"""
from __future__ import annotations

import json
import logging
import math
import re
import secrets
import threading
import time
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from explainer.lifecycle import frames as fr
from explainer.lifecycle.pricing import cost
from explainer.llm.budget import Interrupted
from explainer.llm.catalog import BUNDLED_NAME
from explainer.shares.models import Trace
from explainer.stages.pages.transformer import attention_rows, head_names
from explainer.web import services
from explainer.web.runner import engine_for, get_engine, is_local_model, stopping, submit

log = logging.getLogger(__name__)
KEPT_HEADERS = ("anthropic-version", "anthropic-beta", "content-type", "user-agent", "x-stainless-lang", "x-stainless-package-version")
MAX_STORED_BODY = 256 * 1024  # bytes a request body may take in a trace (as stored); a larger one is stored truncated
MAX_STORED_BODY_COUNT_TOKENS = 16 * 1024  # count_tokens calls are frequent and small: so are their traces
MAX_TRACE_BYTES = 1024 * 1024  # a whole stored trace (a 500-token reply's steps are about 450 KB)
MAX_STORED_DEPTH = 64  # deeper parts of a stored value are kept as "…"
MAX_FAILURES_KEPT = 1000  # ids of traces whose write failed, remembered in this process to say why
RECENT_SECONDS = 120  # an id this young that is not in the database yet may still be being written
ENGINE_STOP_WAIT = 60.0  # seconds a write waits for a cancelled run's thread to stop adding steps
STOPPING_ENGINE_WAIT = 0.5  # the same while the server stops: the writes queued behind this one must land before it exits
SENT_WAIT = 1.0  # seconds a write waits for its response to be sent (a client that went away never gets it)
SWEEP_EVERY = 60.0  # seconds between deletions of expired traces (an expired trace is never shown anyway)

_STAMP = 8  # hex digits of the issue time (seconds since the epoch)
_pending: dict[str, threading.Event] = {}
_pending_lock = threading.Lock()
_failures: dict[str, str] = {}  # trace id -> why its write failed (insertion order: oldest first)
_last_sweep = float("-inf")


def issue_id(now: float | None = None) -> str:
    """128 random bits (the link is the only key), then the issue time, so a young id can be told from a wrong one."""
    return f"{secrets.token_urlsafe(16)}-{int(now if now is not None else time.time()):0{_STAMP}x}"


def recently_issued(trace_id: str, now: float | None = None) -> bool:
    """Whether ``trace_id`` has the shape ``issue_id`` gives it, with an issue time in the last few minutes."""
    if len(trace_id) != 22 + 1 + _STAMP or trace_id[22] != "-":
        return False
    try:
        issued = int(trace_id[23:], 16)
    except ValueError:
        return False
    age = (now if now is not None else time.time()) - issued
    return -5 <= age <= RECENT_SECONDS


def wait_until_written(trace_id: str, timeout: float = 5.0) -> bool:
    """Wait for this process's pending write of ``trace_id``; False if there is none or it is still running."""
    with _pending_lock:
        ev = _pending.get(trace_id)
    return ev is not None and ev.wait(timeout)


def wait_for_writes(timeout: float = 5.0) -> None:
    """Wait for the writes this process has pending now (not for ones queued later)."""
    with _pending_lock:
        events = list(_pending.values())
    deadline = time.monotonic() + timeout
    for ev in events:
        if not ev.wait(max(0.0, deadline - time.monotonic())):
            return


def is_pending(trace_id: str) -> bool:
    with _pending_lock:
        return trace_id in _pending


def failure(trace_id: str) -> str | None:
    """Why this process could not save ``trace_id`` at all (not even its outline), or None."""
    with _pending_lock:
        return _failures.get(trace_id)


def _remember_failure(trace_id: str, why: str) -> None:
    with _pending_lock:
        _failures[trace_id] = why
        while len(_failures) > MAX_FAILURES_KEPT:
            _failures.pop(next(iter(_failures)))


_SURROGATE = re.compile("[\ud800-\udfff]")
CLEANING_NOTES = {
    "surrogate": "Lone UTF-16 surrogates (such as \\ud800), which no database text can hold, are stored as U+FFFD (�).",
    "nul": "NUL characters (\\u0000), which PostgreSQL text cannot hold, are stored as U+FFFD (�).",
    "non_finite": "Numbers that were not finite (NaN, Infinity) are stored as null.",
    "deep": f"Parts nested more than {MAX_STORED_DEPTH} levels deep are stored as “…”.",
}


TRACE_CANDIDATES = 5  # candidate rows a trace keeps per token (the API asks the engine for no more)


class Cleaner:
    """Makes a JSON-like value storable in SQLite and PostgreSQL (text and jsonb) alike; ``found`` says what it changed."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def text(self, s: str) -> str:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:  # only lone surrogates fail: json.loads joins a valid \ud83d\ude00 pair
            s = _SURROGATE.sub("\ufffd", s)
            self.found.add("surrogate")
        if "\x00" in s:
            s = s.replace("\x00", "\ufffd")
            self.found.add("nul")
        return s

    def clean(self, v, depth: int = 0):
        if v is None or isinstance(v, (bool, int)):
            return v
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, float):
            if math.isfinite(v):
                return float(v)
            self.found.add("non_finite")
            return None
        if isinstance(v, np.generic):
            return self.clean(v.item(), depth)
        if isinstance(v, (dict, list, tuple)) and depth >= MAX_STORED_DEPTH:
            self.found.add("deep")
            return "…"
        if isinstance(v, dict):
            return {self.text(str(k)): self.clean(x, depth + 1) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.clean(x, depth + 1) for x in v]
        return self.text(str(v))

    def notes(self) -> list[str]:
        return [CLEANING_NOTES[k] for k in CLEANING_NOTES if k in self.found]


def _json_size(v) -> int:
    """Bytes ``v`` takes in the database: Django's JSONField stores ``json.dumps(v)``, non-ASCII as \\u escapes."""
    return len(json.dumps(v))


def _capped_body(body, limit: int) -> tuple[object, dict | None]:
    """The body as stored, or None and the ``body_truncated`` marker when it would take over ``limit`` bytes:
    the beginning of its JSON text, as much as ``limit`` bytes hold."""
    if _json_size(body) <= limit:
        return body, None
    text = json.dumps(body, ensure_ascii=False)
    lo, hi = 0, min(len(text), limit)  # the longest prefix whose stored form fits: a binary search
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _json_size(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return None, {"bytes": len(text.encode("utf-8")), "kept_characters": lo, "of_characters": len(text), "text": text[:lo]}


def _cap_trace(fields: dict, notes: list[str]) -> None:
    """Keep a whole trace under MAX_TRACE_BYTES: its lists (steps, events, prompt ids) lose their tails, each in proportion."""
    sizes = {k: _json_size(v) for k, v in fields.items()}
    total = sum(sizes.values())
    if total <= MAX_TRACE_BYTES:
        return
    lists = [k for k in ("steps", "events", "prompt_ids") if fields[k]]
    rest = total - sum(sizes[k] for k in lists)
    if rest > MAX_TRACE_BYTES and fields["response"] is not None:  # cannot happen with the body capped; a last resort
        rest -= sizes["response"] - _json_size(None)
        fields["response"] = None
        notes.append(f"The response is not stored: a trace keeps at most {MAX_TRACE_BYTES:,} bytes.")
    share = max(0, MAX_TRACE_BYTES - rest) / max(1, sum(sizes[k] for k in lists))
    for name in lists:
        value, budget, kept = fields[name], int(sizes[name] * share) - 2, []
        for item in value:
            budget -= _json_size(item) + 2  # and its ", "
            if budget < 0:
                break
            kept.append(item)
        if len(kept) < len(value):
            fields[name] = kept
            notes.append(f"Only the first {len(kept)} of {len(value)} {name.replace('_', ' ')} are stored: "
                         f"a trace keeps at most {MAX_TRACE_BYTES:,} bytes.")


def redact(key: str | None) -> str:
    return (key[:7] + "…redacted") if key else ""


def attention_summary(prompt_ids: list[int], model=None) -> dict:
    """Per layer and head, over the prompt: mean attention on the previous token and on the first token, and mean entropy.

    ``model`` is the one that read the prompt (the bundled one by default). The weights are read a chunk of
    query rows at a time, so a 30 x 9-head model on a 2,048-token prompt never holds every head's full map.
    """
    model = model or get_engine().model
    c = model.config
    T = len(prompt_ids)
    if not prompt_ids or T > c.n_ctx:
        return {}
    names = head_names(c.n_layer, c.n_head)
    prev, first, ent = (dict.fromkeys(names, 0.0) for _ in range(3))
    for q0, trace in attention_rows(model, list(prompt_ids)):
        for name in names:
            w = trace[name]  # [rows, keys]: queries q0 .. q0 + rows - 1
            q = np.arange(max(q0, 1), q0 + len(w))
            prev[name] += float(w[q - q0, q - 1].sum(dtype=np.float64))
            first[name] += float(w[:, 0].sum(dtype=np.float64))
            ent[name] += float((-(w * np.log(w + 1e-12)).sum(axis=1)).sum(dtype=np.float64))
    return {name: {"previous_token": round(prev[name] / (T - 1), 4) if T > 1 else 0.0,
                   "first_token": round(first[name] / T, 4), "entropy": round(ent[name] / T, 4)} for name in names}


def ensure_attention(trace: Trace) -> dict:
    """The attention summary is computed from the stored token ids when the trace is first opened,
    keeping a forward pass out of the API call's own time.

    A local model's summary (a pass over up to its whole window, on an untrusted folder) is computed
    in the local models' workers, not here, where every synchronous page is served: this visit shows
    none, a later one shows it once it is stored."""
    name = trace.model or ""
    answered_here = name.startswith("claude-") or name == BUNDLED_NAME or is_local_model(name)
    if not trace.attention and trace.steps and trace.prompt_ids and answered_here:  # a removed local model: nothing to run
        if is_local_model(name):
            with _pending_lock:
                starting = trace.pk not in _summarising
                _summarising.add(trace.pk)
            if starting and not submit(name, _summarise, trace.pk, list(trace.prompt_ids), name):
                with _pending_lock:
                    _summarising.discard(trace.pk)
            return trace.attention
        try:
            trace.attention = attention_summary(trace.prompt_ids, engine_for(trace.model).model)  # the model that answered
            Trace.objects.filter(pk=trace.pk).update(attention=trace.attention)
        except Exception:  # a summary is a nicety; never fail the page for it
            log.exception("attention summary failed")
    return trace.attention


def _engine_stops(stopped: threading.Event) -> bool:
    """Wait for a run's engine to stop: up to ENGINE_STOP_WAIT, or STOPPING_ENGINE_WAIT once the server is stopping
    (every run is cancelled then; one that does not stop is stuck, and the process will not wait for it)."""
    start = time.monotonic()
    while not stopped.wait(0.1):
        waited = time.monotonic() - start
        if waited >= ENGINE_STOP_WAIT or (stopping() and waited >= STOPPING_ENGINE_WAIT):
            return False
    return True


_summarising: set[str] = set()  # traces whose local model's attention summary is being computed


def _summarise(trace_id: str, prompt_ids: list[int], model: str) -> None:
    """A local model's attention summary, stored (in a worker of the local models' lane, under a budget)."""
    try:
        attention = attention_summary(prompt_ids, engine_for(model).model)
        Trace.objects.filter(pk=trace_id).update(attention=attention)
    except Interrupted:
        raise
    except Exception:  # a summary is a nicety
        log.exception("attention summary failed")
    finally:
        with _pending_lock:
            _summarising.discard(trace_id)
        close_old_connections()


class TraceRecorder:
    def __init__(self, request, endpoint: str):
        self.id = issue_id()
        self.endpoint = endpoint
        self.started = time.perf_counter()
        headers = {k: request.headers[k] for k in KEPT_HEADERS if k in request.headers}
        if "x-api-key" in request.headers:
            headers["x-api-key"] = redact(request.headers["x-api-key"])
        if "authorization" in request.headers:
            headers["authorization"] = "Bearer " + redact(request.headers["authorization"][7:].strip())
        self.request = {"method": request.method, "path": request.path, "headers": headers, "body": None}
        self.gateway: dict = {}
        self.prompt_ids: list[int] = []
        self.steps: list[dict] = []
        self.events: list[dict] = []
        self.done: dict | None = None
        self.model = ""
        self.timings: dict = {}
        self._engine_stopped: threading.Event | None = None

    def engine_started(self) -> None:
        """The engine is about to run for this call: its thread feeds steps until ``engine_stopped``."""
        self._engine_stopped = threading.Event()

    def engine_stopped(self) -> None:
        if self._engine_stopped is not None:
            self._engine_stopped.set()

    def set_body(self, body) -> None:
        """Keep the decoded body; it is made storable and capped by the writer (``save``), off the call's path."""
        self.request["body"] = body
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            self.model = body["model"][:100]

    def mark(self, name: str) -> None:
        self.timings[name] = round((time.perf_counter() - self.started) * 1000, 2)

    def feed(self, event: dict) -> None:
        """Record one engine event; runs in the engine's thread for a call's run (``runner.run_batches``'s observe)."""
        t = event["type"]
        if t == fr.PROMPT:
            self.prompt_ids = [x["id"] for x in event["tokens"]]
            if event.get("cache"):
                self.gateway["prompt_cache"] = event["cache"]
        elif t == fr.TOKEN:
            self.steps.append({"index": event["index"], "token": event["token"], "text": event["text"],
                               "candidates": event["candidates"][:TRACE_CANDIDATES]})
        elif t == fr.DONE:
            self.done = event
        elif not fr.is_explainer(event):
            self.events.append(event)

    def save_later(self, status: int, response, after: threading.Event | None = None) -> None:
        """Write the trace from the background writer, once ``after`` is set (the response is sent);
        the call's answer does not wait for it."""
        self.mark("http_total_ms")
        done = threading.Event()
        with _pending_lock:
            _pending[self.id] = done
        try:
            services.current().traces.submit(self._write, status, response, after, done)
        except RuntimeError:  # the interpreter is shutting down: write it here rather than lose it
            self._write(status, response, None, done)

    def _write(self, status: int, response, after: threading.Event | None, done: threading.Event) -> None:
        try:
            if after is not None:
                after.wait(SENT_WAIT)
            if self._engine_stopped is not None and not _engine_stops(self._engine_stopped):
                log.warning("trace %s: the engine's thread had not stopped; writing what it recorded", self.id)
            self.save(status, response)
        except Exception as exc:  # the caller's answer matters more than its trace
            log.exception("saving trace %s failed", self.id)
            self._save_outline(status, exc)
        finally:
            with _pending_lock:
                _pending.pop(self.id, None)
                idle = not _pending
            if idle:  # between bursts the connection is handled as any request's (closed, with CONN_MAX_AGE 0)
                close_old_connections()
            done.set()

    def stored_fields(self, status: int, response) -> dict:
        """Everything the row holds, made storable (``Cleaner``) and capped; ``notes`` says what was changed."""
        usage = (self.done or {}).get("usage") or {}
        timings = {**self.timings, **((self.done or {}).get("timings") or {})}
        timings.setdefault("http_total_ms", round((time.perf_counter() - self.started) * 1000, 2))
        notes: list[str] = []
        request = dict(self.request)
        limit = MAX_STORED_BODY_COUNT_TOKENS if self.endpoint == "count_tokens" else MAX_STORED_BODY
        body_cleaner = Cleaner()
        request["body"] = body_cleaner.clean(request.get("body"))
        if body_cleaner.found:
            request["body_altered"] = True  # not the body as sent: the walk-through does not replay it
        request["body"], truncated = _capped_body(request["body"], limit)
        if truncated is not None:
            request["body_truncated"] = truncated
            notes.append(f"The request body was {truncated['bytes']:,} bytes of JSON; a {self.endpoint} trace keeps at most "
                         f"{limit:,} bytes of it, so only its first {truncated['kept_characters']:,} characters are stored, "
                         "as text (body_truncated).")
        cleaner = Cleaner()
        cleaner.found = body_cleaner.found
        fields = {
            "request": cleaner.clean(request), "gateway": cleaner.clean(self.gateway), "prompt_ids": cleaner.clean(self.prompt_ids),
            "steps": cleaner.clean(self.steps), "events": cleaner.clean(self.events), "response": cleaner.clean(response),
            "usage": cleaner.clean(usage), "timings": cleaner.clean(timings),
        }
        model = cleaner.text(self.model)
        notes[:0] = cleaner.notes()
        _cap_trace(fields, notes)
        return {**fields, "model": model, "cost": cleaner.clean(cost(model, fields["usage"])) if fields["usage"] else None,
                "notes": notes}

    def save(self, status: int, response: dict | None) -> Trace:
        fields = self.stored_fields(status, response)
        now = timezone.now()
        global _last_sweep
        if time.monotonic() - _last_sweep >= SWEEP_EVERY:
            _last_sweep = time.monotonic()
            Trace.objects.filter(expires_at__lt=now).delete()
        return Trace.objects.create(
            id=self.id, expires_at=now + timedelta(hours=settings.EXPLAINER_TRACE_TTL_HOURS), endpoint=self.endpoint,
            status=status, attention={}, **fields,
        )

    def _save_outline(self, status: int, exc: Exception) -> None:
        """The trace could not be saved: store what says why (endpoint, status, the reason), or remember it here."""
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        why = Cleaner().text(why)
        try:
            Trace.objects.create(
                id=self.id, expires_at=timezone.now() + timedelta(hours=settings.EXPLAINER_TRACE_TTL_HOURS),
                endpoint=self.endpoint, status=status, model=Cleaner().text(self.model),
                request={"method": self.request["method"], "path": Cleaner().text(self.request["path"]), "headers": {}, "body": None},
                notes=[f"This call's trace could not be saved ({why}); only this outline of it was kept."],
            )
        except Exception:
            log.exception("saving the outline of trace %s failed too", self.id)
            _remember_failure(self.id, why)
