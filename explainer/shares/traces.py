"""Recording a trace of each /v1/ call: what arrived, what the gateway decided, what the engine did.

A trace is written after its call has answered, by one background thread, so the database
write is not part of any call's time. Until it lands, ``/traces/<id>/`` waits for it when the
write is pending in this process (``wait_until_written``), and says "being recorded" when the
id is only minutes old (another process may be writing it: ``recently_issued``).
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import lru_cache

import numpy as np
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from explainer.lifecycle.pricing import cost
from explainer.shares.models import Trace

log = logging.getLogger(__name__)
KEPT_HEADERS = ("anthropic-version", "anthropic-beta", "content-type", "user-agent", "x-stainless-lang", "x-stainless-package-version")
MAX_STORED_BODY = 256 * 1024
RECENT_SECONDS = 120  # an id this young that is not in the database yet may still be being written
ENGINE_STOP_WAIT = 60.0  # seconds a write waits for a cancelled run's thread to stop adding steps
SENT_WAIT = 1.0  # seconds a write waits for its response to be sent (a client that went away never gets it)
SWEEP_EVERY = 60.0  # seconds between deletions of expired traces (an expired trace is never shown anyway)

_STAMP = 8  # hex digits of the issue time (seconds since the epoch)
_pending: dict[str, threading.Event] = {}
_pending_lock = threading.Lock()
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


@lru_cache(maxsize=1)
def _writer() -> ThreadPoolExecutor:
    # Its thread is joined when the interpreter exits, so writes queued before a shutdown still land.
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-writer")


def redact(key: str | None) -> str:
    return (key[:7] + "…redacted") if key else ""


def attention_summary(prompt_ids: list[int]) -> dict:
    """Per layer and head, over the prompt: mean attention on the previous token and on the first token, and mean entropy."""
    from explainer.live.runner import get_engine

    model = get_engine().model
    if not prompt_ids or len(prompt_ids) > model.config.n_ctx:
        return {}
    trace = model.forward(prompt_ids, want=("block_*_attn_head_*_weights",)).trace
    out = {}
    T = len(prompt_ids)
    for name, w in trace.items():
        prev = float(np.mean([w[i, i - 1] for i in range(1, T)])) if T > 1 else 0.0
        first = float(w[:, 0].mean())
        ent = float(np.mean(-(w * np.log(w + 1e-12)).sum(axis=1)))
        out[name] = {"previous_token": round(prev, 4), "first_token": round(first, 4), "entropy": round(ent, 4)}
    return out


def ensure_attention(trace: Trace) -> dict:
    """The attention summary is computed from the stored token ids when the trace is first opened,
    keeping a forward pass out of the API call's own time."""
    if not trace.attention and trace.steps and trace.prompt_ids:
        try:
            trace.attention = attention_summary(trace.prompt_ids)
            Trace.objects.filter(pk=trace.pk).update(attention=trace.attention)
        except Exception:  # a summary is a nicety; never fail the page for it
            log.exception("attention summary failed")
    return trace.attention


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
        text = json.dumps(body, ensure_ascii=False)
        self.request["body"] = body if len(text) <= MAX_STORED_BODY else {"truncated": text[:MAX_STORED_BODY]}
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            self.model = body["model"][:100]

    def mark(self, name: str) -> None:
        self.timings[name] = round((time.perf_counter() - self.started) * 1000, 2)

    def feed(self, event: dict) -> None:
        """Record one engine event; runs in the engine's thread for a call's run (``runner.run_batches``'s observe)."""
        t = event["type"]
        if t == "explainer.prompt":
            self.prompt_ids = [x["id"] for x in event["tokens"]]
            if event.get("cache"):
                self.gateway["prompt_cache"] = event["cache"]
        elif t == "explainer.token":
            self.steps.append({"index": event["index"], "token": event["token"], "text": event["text"],
                               "candidates": event["candidates"][:5]})
        elif t == "explainer.done":
            self.done = event
        elif not t.startswith("explainer."):
            self.events.append(event)

    def save_later(self, status: int, response, after: threading.Event | None = None) -> None:
        """Write the trace from the background writer, once ``after`` is set (the response is sent);
        the call's answer does not wait for it."""
        self.mark("http_total_ms")
        done = threading.Event()
        with _pending_lock:
            _pending[self.id] = done
        try:
            _writer().submit(self._write, status, response, after, done)
        except RuntimeError:  # the interpreter is shutting down: write it here rather than lose it
            self._write(status, response, None, done)

    def _write(self, status: int, response, after: threading.Event | None, done: threading.Event) -> None:
        try:
            if after is not None:
                after.wait(SENT_WAIT)
            if self._engine_stopped is not None and not self._engine_stopped.wait(ENGINE_STOP_WAIT):
                log.warning("trace %s: the engine's thread had not stopped after %ss; writing what it recorded", self.id, ENGINE_STOP_WAIT)
            self.save(status, response)
        except Exception:  # the caller's answer matters more than its trace
            log.exception("saving trace %s failed", self.id)
        finally:
            with _pending_lock:
                _pending.pop(self.id, None)
                idle = not _pending
            if idle:  # between bursts the connection is handled as any request's (closed, with CONN_MAX_AGE 0)
                close_old_connections()
            done.set()

    def save(self, status: int, response: dict | None) -> Trace:
        usage = (self.done or {}).get("usage") or {}
        timings = {**self.timings, **((self.done or {}).get("timings") or {})}
        timings.setdefault("http_total_ms", round((time.perf_counter() - self.started) * 1000, 2))
        now = timezone.now()
        global _last_sweep
        if time.monotonic() - _last_sweep >= SWEEP_EVERY:
            _last_sweep = time.monotonic()
            Trace.objects.filter(expires_at__lt=now).delete()
        return Trace.objects.create(
            id=self.id, expires_at=now + timedelta(hours=settings.EXPLAINER_TRACE_TTL_HOURS), endpoint=self.endpoint,
            status=status, model=self.model, request=self.request, gateway=self.gateway, prompt_ids=self.prompt_ids,
            steps=self.steps, attention={}, events=self.events, response=response, usage=usage,
            cost=cost(self.model, usage) if usage else None, timings=timings,
        )
