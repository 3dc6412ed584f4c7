"""The recording proxy: a developer's own call relayed to the upstream API, answered unchanged, and recorded.

``POST /inspect/<id>/v1/messages`` (and ``count_tokens``, ``GET /v1/models``) goes to
``settings.EXPLAINER_UPSTREAM_URL`` plus the same API path and query string; nothing in a request can
change where it goes. Of the caller's headers only the key (``x-api-key`` or ``authorization``),
``anthropic-version``, ``anthropic-beta`` and ``content-type`` travel; the key is used for this one
request and then forgotten: it is never stored, logged or shown. The upstream's status, its headers
that matter (``request-id``, ``anthropic-ratelimit-*``, ``retry-after``, content type) and its body
come back unchanged; a stream is relayed chunk by chunk as it arrives (an async HTTP client on the
event loop; nothing is buffered), and read on the side to record the message it builds.

When the upstream cannot be reached, times out or drops the connection, the caller gets the API's
error envelope with a sentence naming the upstream (502, or 504 for a timeout); a stream cut mid-way
ends with an SSE ``error`` event.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx2
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone

from explainer.inspect import record
from explainer.inspect.models import Call, Session
from explainer.inspect.sse import StreamRecord
from explainer.lifecycle.errors import APIError

log = logging.getLogger(__name__)

FORWARDED = ("x-api-key", "authorization", "anthropic-version", "anthropic-beta", "content-type")
RECORDED_HEADERS = ("anthropic-version", "anthropic-beta", "content-type")  # the key is forwarded, never recorded
RETURNED = ("request-id", "retry-after", "retry-after-ms", "x-should-retry", "content-type")
RETURNED_PREFIX = "anthropic-ratelimit-"
CONNECT_TIMEOUT_S = 10.0
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = weakref.WeakKeyDictionary()


def upstream() -> str:
    return str(settings.EXPLAINER_UPSTREAM_URL).rstrip("/")


def client() -> httpx2.AsyncClient:
    """One client per event loop (its connections belong to the loop), reused so calls keep their connections.

    ``trust_env=False``: the upstream is the setting, not whatever proxy variables the environment holds."""
    loop = asyncio.get_running_loop()
    c = _clients.get(loop)
    if c is None or c.is_closed:
        wait = float(settings.EXPLAINER_UPSTREAM_TIMEOUT_S)
        c = httpx2.AsyncClient(timeout=httpx2.Timeout(wait, connect=min(CONNECT_TIMEOUT_S, wait)), trust_env=False,
                               follow_redirects=False, limits=httpx2.Limits(max_connections=200, max_keepalive_connections=20))
        _clients[loop] = c
    return c


def local_request_id() -> str:
    """Our own request id, for an answer the upstream did not give (the session is unknown, the upstream is down)."""
    return "req_inspector_" + secrets.token_hex(12)


def error_response(exc: APIError, rid: str | None = None) -> HttpResponse:
    rid = rid or local_request_id()
    resp = HttpResponse(json.dumps(exc.body(rid)), status=exc.status, content_type="application/json")
    resp["request-id"] = rid
    for k, v in exc.headers.items():
        resp[k] = v
    return resp


def upstream_failure(exc: Exception) -> APIError:
    """The envelope for an upstream that did not answer: one sentence that names it."""
    where = upstream()
    if isinstance(exc, httpx2.TimeoutException):
        phase = "to accept the connection" if isinstance(exc, httpx2.ConnectTimeout) else "to answer"
        return APIError("timeout_error", f"The upstream {where} took longer than {_seconds()} s {phase}; "
                        "nothing was recorded past that. Try again, or raise EXPLAINER_UPSTREAM_TIMEOUT_S.", status=504)
    if isinstance(exc, httpx2.ConnectError):
        why = str(exc) or type(exc).__name__
        kind = "its TLS handshake failed" if "SSL" in why or "certificate" in why.lower() else "the connection failed"
        return APIError("api_error", f"The upstream {where} could not be reached: {kind} ({_clip(why)}).", status=502)
    return APIError("api_error", f"The upstream {where} closed the connection before its answer was complete "
                    f"({type(exc).__name__}).", status=502)


def _seconds() -> str:
    return f"{float(settings.EXPLAINER_UPSTREAM_TIMEOUT_S):g}"


def _clip(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[:n] + "…"


def returned_headers(headers: httpx2.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in RETURNED or k.lower().startswith(RETURNED_PREFIX)}


async def live_session(session_id: str) -> Session | None:
    return await Session.objects.filter(id=session_id[:32], expires_at__gt=timezone.now()).afirst()


class Recording:
    """What one relayed call leaves behind; written once the call has answered (``save``)."""

    def __init__(self, session: Session, request, path: str, body: bytes) -> None:
        self.session_id = session.id
        self.started_at = datetime.now(UTC)
        self.t0 = time.perf_counter()
        self.path = path
        self.method = request.method
        self.query = request.META.get("QUERY_STRING", "")[:512]
        self.headers = {k: request.headers[k] for k in RECORDED_HEADERS if k in request.headers}
        self.notes: list[str] = []
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = {"not_json": body[:1024].decode("utf-8", "replace")}
                self.notes.append("The request body was not JSON; its first 1,024 bytes are kept.")
        self.body, notes = record.summarise(parsed)
        self.notes += notes
        self.model = str(parsed.get("model", ""))[:200] if isinstance(parsed, dict) else ""
        self.stream = bool(parsed.get("stream")) if isinstance(parsed, dict) else False
        self.status = 0
        self.response: Any = None
        self.events: list[dict[str, Any]] = []
        self.request_id = ""
        self.ratelimit: dict[str, str] = {}
        self.timings: dict[str, float | None] = {}

    def ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def answered(self, resp: httpx2.Response) -> None:
        self.status = resp.status_code
        self.request_id = resp.headers.get("request-id", "")[:200]
        self.ratelimit = {k: v for k, v in resp.headers.items()
                          if k.lower().startswith(RETURNED_PREFIX) or k.lower() in ("retry-after", "retry-after-ms")}
        self.timings["upstream_headers"] = round(self.ms(), 3)

    def finish(self, first_byte: float | None, first_token: float | None) -> None:
        total = self.ms()
        self.timings.update({"first_byte": _round(first_byte), "first_token": _round(first_token), "total": round(total, 3)})
        usage = self.response.get("usage") if isinstance(self.response, dict) else None
        out = usage.get("output_tokens") if isinstance(usage, dict) else None
        start = first_token if first_token is not None else None
        span = (total - start) / 1000 if start is not None else None
        self.timings["output_tokens_per_s"] = round(out / span, 2) if isinstance(out, int) and span and span > 0 else None

    def save(self) -> None:
        Call.objects.create(
            session_id=self.session_id, started_at=self.started_at, method=self.method, path=self.path, query=self.query,
            status=self.status, model=self.model, stream=self.stream, request_headers=self.headers, request=self.body,
            response=self.response, events=self.events, request_id=self.request_id, ratelimit=self.ratelimit,
            timings=self.timings, notes=self.notes)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


async def _save(rec: Recording) -> None:
    try:
        await sync_to_async(rec.save)()
    except Exception:  # the caller has its answer already; say so in the log, never with the request's headers
        log.exception("inspector: could not record a call of session %s…", rec.session_id[:6])


def read_body(request) -> bytes:
    """The body, refused past ``EXPLAINER_API_MAX_BODY_BYTES`` as the API refuses it (413, before reading it when it says its length)."""
    limit = int(settings.EXPLAINER_API_MAX_BODY_BYTES)
    length = request.headers.get("content-length", "")
    too_large = APIError("request_too_large", f"Request exceeds the maximum allowed number of bytes ({limit:,}); "
                         "this inspector relays bodies up to EXPLAINER_API_MAX_BODY_BYTES.", status=413)
    if length.isdigit() and int(length) > limit:
        raise too_large
    try:
        body = request.body
    except RequestDataTooBig:
        raise too_large from None
    if len(body) > limit:
        raise too_large
    return body


async def relay(request, session: Session, path: str) -> HttpResponse:
    """Send the call upstream and answer with what came back, recording it on the way."""
    body = read_body(request) if request.method == "POST" else b""
    rec = Recording(session, request, path, body)
    headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
    headers["accept-encoding"] = "identity"  # the upstream's bytes pass unchanged, and a stream is never held by a decompressor
    url = httpx2.URL(upstream() + path)
    if rec.query:
        url = url.copy_with(query=request.META.get("QUERY_STRING", "").encode("latin-1", "replace"))
    http = client()
    try:
        up = await http.send(http.build_request(request.method, url, content=body or None, headers=headers), stream=True)
    except httpx2.HTTPError as exc:
        return await _failed(rec, exc)
    finally:
        del headers  # the key is not kept past the request it was sent with
    rec.answered(up)
    if up.headers.get("content-type", "").startswith("text/event-stream"):
        return _streamed(rec, up)
    try:
        content = await up.aread()
    except httpx2.HTTPError as exc:
        return await _failed(rec, exc)
    finally:
        await up.aclose()
    try:
        rec.response = json.loads(content) if content else None
    except ValueError:
        rec.response = {"not_json": content[:1024].decode("utf-8", "replace")}
    rec.finish(rec.timings["upstream_headers"], None)
    await _save(rec)
    resp = HttpResponse(content, status=up.status_code, content_type=up.headers.get("content-type", "application/json"))
    for k, v in returned_headers(up.headers).items():
        resp[k] = v
    return resp


async def _failed(rec: Recording, exc: Exception) -> HttpResponse:
    err = upstream_failure(exc)
    log.warning("inspector: upstream %s failed for a call of session %s…: %s", upstream(), rec.session_id[:6], type(exc).__name__)
    rid = local_request_id()
    rec.status, rec.response, rec.request_id = err.status, dict(err.body(rid)), rid
    rec.finish(None, None)
    await _save(rec)
    return error_response(err, rid)


def _streamed(rec: Recording, up: httpx2.Response) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        stream = StreamRecord()
        first_byte: float | None = None
        try:
            async for chunk in up.aiter_raw():
                at = rec.ms()
                yield chunk  # relayed first, read after: the caller never waits for the recording
                first_byte = at if first_byte is None else first_byte
                stream.feed(chunk, at)
        except httpx2.HTTPError as exc:
            err = upstream_failure(exc)
            cut = APIError("api_error", f"The upstream {upstream()} stopped the stream mid-way ({type(exc).__name__}); "
                           "the reply above is incomplete.", status=502)
            if isinstance(exc, httpx2.TimeoutException):
                cut = err
            event = dict(cut.body(rec.request_id or None))
            data = f"event: error\ndata: {json.dumps(event)}\n\n".encode()
            yield data
            stream.feed(data, rec.ms())
            rec.notes.append(f"The stream was cut: {cut.message}")
        finally:
            await up.aclose()
            message = stream.message()
            rec.response = message if stream.error is None or message is None else {**message, "stream_error": stream.error}
            if rec.response is None:
                rec.response = stream.error
            rec.events = stream.events
            if stream.events_dropped:
                rec.notes.append(f"{stream.events_dropped:,} later events' arrival times are not kept.")
            rec.finish(first_byte, stream.first_token_ms)
            await _save(rec)

    resp = StreamingHttpResponse(chunks(), status=up.status_code, content_type=up.headers.get("content-type"))
    for k, v in returned_headers(up.headers).items():
        resp[k] = v
    resp["cache-control"] = "no-cache"
    resp["x-accel-buffering"] = "no"
    return resp
