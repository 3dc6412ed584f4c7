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

The core (``handle``) takes an ``Incoming`` call and gives an ``Outgoing`` answer, whatever serves it:
under Daphne the proxy paths are served by ``asgi_app`` ahead of Django (``explainer/asgi.py``), since
Django's request cycle (its signals and each middleware's hop to a worker thread and back) took several
milliseconds of every call's time to first token; Django's own views (``views.proxy_view``) serve the
same core to its test client and any other server.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http.request import split_domain_port, validate_host
from django.utils import timezone

from explainer.inspect import live, record
from explainer.inspect.models import Call, Session
from explainer.inspect.sse import StreamRecord
from explainer.lifecycle.errors import APIError

log = logging.getLogger(__name__)

FORWARDED = ("x-api-key", "authorization", "anthropic-version", "anthropic-beta", "content-type")
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


ROUTES = {"/v1/messages": ("POST",), "/v1/messages/count_tokens": ("POST",), "/v1/models": ("GET",)}
MODEL_PATH = re.compile(r"^/v1/models/[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")  # GET one model (never a path that climbs out)
PROXY_PATH = re.compile(r"^/inspect/(?P<session>[^/]+)(?P<api>/v1/.*)$")
SESSION_FRESH_S = 5.0  # a live session is looked up again after this; deleting one in this process forgets it at once
_sessions: dict[str, tuple[datetime, float]] = {}  # id -> (its expiry, when it was read)


@dataclass
class Incoming:
    """A call as it arrived: the API path under the session, its query string, headers (lower-case names) and body."""

    method: str
    api_path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Outgoing:
    """The answer: a status, headers, and a body given whole or as chunks to send as they come."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    content_type: str = "application/json"
    extra: dict[str, str] = field(default_factory=dict)


def local_request_id() -> str:
    """Our own request id, for an answer the upstream did not give (the session is unknown, the upstream is down)."""
    return "req_inspector_" + secrets.token_hex(12)


def error(exc: APIError, rid: str | None = None) -> Outgoing:
    rid = rid or local_request_id()
    return Outgoing(exc.status, {"request-id": rid, **exc.headers}, json.dumps(exc.body(rid)).encode())


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
    return {k.lower(): v for k, v in headers.items() if k.lower() in RETURNED or k.lower().startswith(RETURNED_PREFIX)}


def _read_session(session_id: str) -> datetime | None:
    close_old_connections()  # what Django's request cycle does around a view; this path may run outside it
    found = Session.objects.filter(id=session_id, expires_at__gt=timezone.now()).values_list("expires_at", flat=True).first()
    return found


async def live_session(session_id: str) -> bool:
    """Whether the session exists and has not expired, read from the database at most every ``SESSION_FRESH_S``."""
    session_id = session_id[:32]
    now = time.monotonic()
    known = _sessions.get(session_id)
    if known is not None and now - known[1] < SESSION_FRESH_S and known[0] > timezone.now():
        return True
    expires = await sync_to_async(_read_session)(session_id)
    if expires is None:
        _sessions.pop(session_id, None)
        return False
    if len(_sessions) > 10_000:
        _sessions.clear()
    _sessions[session_id] = (expires, now)
    return True


def forget_session(session_id: str) -> None:
    _sessions.pop(session_id[:32], None)


def too_large() -> APIError:
    limit = int(settings.EXPLAINER_API_MAX_BODY_BYTES)
    return APIError("request_too_large", f"Request exceeds the maximum allowed number of bytes ({limit:,}); "
                    "this inspector relays bodies up to EXPLAINER_API_MAX_BODY_BYTES.", status=413)


class Recording:
    """What one relayed call leaves behind; written once the call has answered (``save``)."""

    def __init__(self, session_id: str, call: Incoming) -> None:
        self.session_id = session_id
        self.started_at = datetime.now(UTC)
        self.t0 = time.perf_counter()
        self.path = call.api_path
        self.method = call.method
        self.query = call.query[:512]
        self.headers = record.request_headers(call.headers)  # the key is forwarded, never recorded
        self.notes: list[str] = []
        self.status = 0
        self.response: Any = None
        self.events: list[dict[str, Any]] = []
        self.request_id = ""
        self.ratelimit: dict[str, str] = {}
        self.timings: dict[str, float | None] = {}
        self.raw = call.body  # read into ``body`` after the call is relayed, off its path

    def read_body(self) -> None:
        parsed: Any = None
        if self.raw:
            try:
                parsed = json.loads(self.raw)
            except ValueError:
                parsed = {"not_json": self.raw[:1024].decode("utf-8", "replace")}
                self.notes.append("The request body was not JSON; its first 1,024 bytes are kept.")
        self.body, notes = record.summarise(parsed)
        self.notes += notes
        self.model = str(parsed.get("model", ""))[:200] if isinstance(parsed, dict) else ""
        self.stream = bool(parsed.get("stream")) if isinstance(parsed, dict) else False

    def ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def answered(self, resp: httpx2.Response) -> None:
        self.status = resp.status_code
        self.request_id = resp.headers.get("request-id", "")[:200]
        self.ratelimit = record.rate_limit_headers(resp.headers)
        self.timings["upstream_headers"] = round(self.ms(), 3)

    def finish(self, first_byte: float | None, first_token: float | None) -> None:
        total = self.ms()
        self.timings.update({"first_byte": _round(first_byte), "first_token": _round(first_token), "total": round(total, 3)})
        usage = self.response.get("usage") if isinstance(self.response, dict) else None
        out = usage.get("output_tokens") if isinstance(usage, dict) else None
        span = (total - first_token) / 1000 if first_token is not None else None
        self.timings["output_tokens_per_s"] = round(out / span, 2) if isinstance(out, int) and span and span > 0 else None

    def save(self) -> None:
        close_old_connections()
        self.read_body()  # parsing and summarising a large body is work for this thread, not the event loop
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
        return
    live.announce_soon(rec.session_id)  # the session's open pages add the call (inspect/live.py)


async def handle(session_id: str, call: Incoming) -> Outgoing:
    """The proxy's one entry: every failure is the API's envelope, never a page or a traceback."""
    try:
        methods = ROUTES.get(call.api_path) or (("GET",) if MODEL_PATH.match(call.api_path) and ".." not in call.api_path else None)
        if methods is None:
            raise APIError("not_found_error", f"Not found: {call.method} /inspect/…{call.api_path}; the inspector relays "
                           "/v1/messages, /v1/messages/count_tokens, /v1/models and /v1/models/<id>.")
        if call.method not in methods:
            raise APIError("invalid_request_error", f"Method {call.method} is not allowed on {call.api_path}; use {' or '.join(methods)}.", status=405)
        if len(call.body) > int(settings.EXPLAINER_API_MAX_BODY_BYTES):
            raise too_large()
        if not await live_session(session_id):
            raise APIError("not_found_error", "No such inspector session: it does not exist, has expired, or was deleted; "
                           "start one at /inspect/ and use its base URL.")
        return await relay(session_id[:32], call)
    except APIError as exc:
        return error(exc)
    except Exception:
        log.exception("inspector: a relayed call failed")  # the call (and its key) is not in the message
        return error(APIError("api_error", "Internal error in the inspector's proxy; the call was not relayed."))


async def relay(session_id: str, call: Incoming) -> Outgoing:
    """Send the call upstream and answer with what came back, recording it on the way."""
    rec = Recording(session_id, call)
    headers = {k: call.headers[k] for k in FORWARDED if k in call.headers}
    headers["accept-encoding"] = "identity"  # the upstream's bytes pass unchanged, and a stream is never held by a decompressor
    url = httpx2.URL(upstream() + call.api_path)
    if call.query:
        url = url.copy_with(query=call.query.encode("latin-1", "replace"))
    http = client()
    try:
        up = await http.send(http.build_request(call.method, url, content=call.body or None, headers=headers), stream=True)
    except httpx2.HTTPError as exc:
        return await _failed(rec, exc)
    finally:
        del headers  # the key is not kept past the request it was sent with
    rec.answered(up)
    kind = up.headers.get("content-type", "application/json")
    if kind.startswith("text/event-stream"):
        return Outgoing(up.status_code, {**returned_headers(up.headers), "cache-control": "no-cache", "x-accel-buffering": "no"},
                        chunks=_relayed(rec, up), content_type=kind)
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
    return Outgoing(up.status_code, returned_headers(up.headers), content, content_type=kind)


async def _failed(rec: Recording, exc: Exception) -> Outgoing:
    err = upstream_failure(exc)
    log.warning("inspector: upstream %s failed for a call of session %s…: %s", upstream(), rec.session_id[:6], type(exc).__name__)
    rid = local_request_id()
    rec.status, rec.response, rec.request_id = err.status, dict(err.body(rid)), rid
    rec.finish(None, None)
    await _save(rec)
    return error(err, rid)


async def _relayed(rec: Recording, up: httpx2.Response) -> AsyncIterator[bytes]:
    stream = StreamRecord()
    first_byte: float | None = None
    try:
        async for chunk in up.aiter_raw():
            at = rec.ms()
            yield chunk  # relayed first, read after: the caller never waits for the recording
            first_byte = at if first_byte is None else first_byte
            stream.feed(chunk, at)
    except (asyncio.CancelledError, GeneratorExit):
        rec.notes.append(f"The caller went away {rec.ms():,.0f} ms after the call arrived; the upstream's stream was closed then.")
        raise
    except httpx2.HTTPError as exc:
        cut = APIError("api_error", f"The upstream {upstream()} stopped the stream mid-way ({type(exc).__name__}); "
                       "the reply above is incomplete.", status=502)
        if isinstance(exc, httpx2.TimeoutException):
            cut = upstream_failure(exc)
        data = f"event: error\ndata: {json.dumps(dict(cut.body(rec.request_id or None)))}\n\n".encode()
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


# ---- served straight from ASGI, ahead of Django -------------------------------------------------------------------

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


def asgi_app(django_app: ASGIApp) -> ASGIApp:
    """``/inspect/<id>/v1/…`` served by the proxy's core; everything else by ``django_app``.

    What Django's cycle gave these paths is done here: the host is checked against ALLOWED_HOSTS,
    the body is refused past its limit while it arrives, and database connections are handled
    where they are used (``close_old_connections``)."""
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        match = PROXY_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            return await django_app(scope, receive, send)
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)
        try:
            await _serve(match, scope, receive, tracked)
        except Exception:
            log.exception("inspector: a relayed call failed")  # never with its headers
            if not started:
                await _send(send, error(APIError("api_error", "Internal error in the inspector's proxy; the call was not relayed.")), receive)
    return app


async def _serve(match: re.Match[str], scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """One proxied call: the host checked, the body read within its limit, the core's answer sent."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    domain, _ = split_domain_port(headers.get("host", ""))
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return await _send(send, error(APIError("invalid_request_error", "This host is not served here (ALLOWED_HOSTS).")), receive)
    body, over = bytearray(), False
    limit = int(settings.EXPLAINER_API_MAX_BODY_BYTES)
    length = headers.get("content-length", "")
    over = length.isdigit() and int(length) > limit
    while not over:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        over = len(body) > limit
        if not message.get("more_body"):
            break
    if over:
        return await _send(send, error(too_large()), receive)
    call = Incoming(scope["method"], match["api"], scope.get("query_string", b"").decode("latin-1"), headers, bytes(body))
    del headers
    return await _send(send, await handle(match["session"], call), receive)


async def _gone(receive: Receive) -> None:
    """Return when the caller has gone away (its connection closed): the relay then stops at once."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send(send: Send, out: Outgoing, receive: Receive) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in {"content-type": out.content_type, **out.headers}.items()]
    headers += [(b"x-content-type-options", b"nosniff")]
    if out.chunks is None:
        headers.append((b"content-length", str(len(out.body)).encode()))
        await send({"type": "http.response.start", "status": out.status, "headers": headers})
        await send({"type": "http.response.body", "body": out.body})
        return
    await send({"type": "http.response.start", "status": out.status, "headers": headers})
    chunks = out.chunks

    async def relay() -> None:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body"})

    # A caller that leaves mid-stream stops the upstream's stream too (it is generating, and billing, for no one).
    streaming, watching = asyncio.ensure_future(relay()), asyncio.ensure_future(_gone(receive))
    try:
        await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not streaming.done():
            streaming.cancel()
            out.extra["gone"] = "1"
        await asyncio.gather(streaming, watching, return_exceptions=True)
        await chunks.aclose()  # type: ignore[attr-defined]
    if streaming.done() and not streaming.cancelled() and streaming.exception() is not None:
        raise streaming.exception()  # type: ignore[misc]
