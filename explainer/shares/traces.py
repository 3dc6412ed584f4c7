"""Recording a trace of each /v1/ call: what arrived, what the gateway decided, what the engine did."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.utils import timezone

from explainer.lifecycle.pricing import cost
from explainer.shares.models import Trace, new_trace_id

log = logging.getLogger(__name__)
KEPT_HEADERS = ("anthropic-version", "anthropic-beta", "content-type", "user-agent", "x-stainless-lang", "x-stainless-package-version")
MAX_STORED_BODY = 256 * 1024


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
        self.id = new_trace_id()
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

    def set_body(self, body) -> None:
        import json

        text = json.dumps(body, ensure_ascii=False)
        self.request["body"] = body if len(text) <= MAX_STORED_BODY else {"truncated": text[:MAX_STORED_BODY]}
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            self.model = body["model"][:100]

    def mark(self, name: str) -> None:
        self.timings[name] = round((time.perf_counter() - self.started) * 1000, 2)

    def feed(self, event: dict) -> None:
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

    def save(self, status: int, response: dict | None) -> Trace:
        usage = (self.done or {}).get("usage") or {}
        timings = {**self.timings, **((self.done or {}).get("timings") or {})}
        timings["http_total_ms"] = round((time.perf_counter() - self.started) * 1000, 2)
        now = timezone.now()
        Trace.objects.filter(expires_at__lt=now).delete()
        return Trace.objects.create(
            id=self.id, expires_at=now + timedelta(hours=settings.EXPLAINER_TRACE_TTL_HOURS), endpoint=self.endpoint,
            status=status, model=self.model, request=self.request, gateway=self.gateway, prompt_ids=self.prompt_ids,
            steps=self.steps, attention={}, events=self.events, response=response, usage=usage,
            cost=cost(self.model, usage) if usage else None, timings=timings,
        )
