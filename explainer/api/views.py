"""The Messages API on the explainer's engine: POST /v1/messages, POST /v1/messages/count_tokens, GET /v1/models.

Wire format as the public API: the error envelope, ``request-id`` on every response,
Server-Sent Events for ``stream: true``. Every failure is an envelope, never an HTML page.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from functools import wraps

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError

from explainer.api import keys, ratelimits
from explainer.lifecycle import frames as fr
from explainer.lifecycle.engine import BUNDLED_MODEL_NAME
from explainer.lifecycle.errors import APIError, invalid
from explainer.lifecycle.gateway import (
    INVALID_KEY_MESSAGE,
    MISSING_KEY_MESSAGE,
    FailureLimiter,
    Ticket,
    body_too_large,
    check_body_size,
    key_from_headers,
    rate_limit_error,
    ratelimit_headers,
    too_many,
)
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.pricing import known_models
from explainer.llm import jsonlimits
from explainer.llm.interface import ModelLoadError
from explainer.shares.traces import TRACE_CANDIDATES, TraceRecorder
from explainer.web import services
from explainer.web.middleware import database_unavailable
from explainer.web.runner import call, catalog, engine_for, is_local_model, request_budget, run_batches

log = logging.getLogger(__name__)

# The names the SDK knows (anthropic/types/model_param.py), from the one list in prices.json; any other
# "claude-*" name is accepted too.
KNOWN_MODELS = known_models()
MODELS_CREATED_AT = "2026-11-24T00:00:00Z"


def request_id() -> str:
    return "req_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


class _Sent:
    """``sent`` is set once the server has the whole response: Django calls ``close()`` then.

    A call's trace is written after that, so the write does not compete with the answer's last bytes.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = threading.Event()

    def close(self):
        try:
            super().close()
        finally:
            self.sent.set()


class ApiJsonResponse(_Sent, JsonResponse):
    pass


class EventStreamResponse(_Sent, StreamingHttpResponse):
    pass


def error_response(exc: APIError, rid: str) -> JsonResponse:
    """The error envelope, with the top-level ``request_id`` the live API sends (the ``request-id`` header's value)."""
    resp = ApiJsonResponse(exc.body(rid), status=exc.status)
    for k, v in exc.headers.items():
        resp[k] = v
    return resp


def api_view(methods: tuple[str, ...], trace: str | None = None):
    """Envelope every failure, check the method, stamp ``request-id``, and record a trace when asked."""
    def deco(fn):
        @csrf_exempt
        @wraps(fn)
        async def wrapper(request, *args, **kwargs):
            rid = request_id()
            request.request_id = rid
            request.trace = TraceRecorder(request, trace) if trace else None
            try:
                if request.method not in methods:
                    raise APIError("invalid_request_error", f"Method {request.method} is not allowed on {request.path}; use {' or '.join(methods)}.", status=405)
                resp = await fn(request, *args, **kwargs)
            except APIError as exc:
                resp = error_response(exc, rid)
            except Exception as exc:
                if database_unavailable(exc):  # busy or unreachable: trying again soon works, so a 503
                    log.warning("API request %s: the database is unavailable (%s)", rid, exc)
                    resp = error_response(unavailable("The database is busy or cannot be reached right now."), rid)
                else:
                    log.exception("API request %s failed", rid)
                    resp = error_response(APIError("api_error", "Internal server error."), rid)
            resp["request-id"] = rid
            # A call that did not authenticate (401, or 429 for too many wrong keys, 405 before the key check)
            # leaves nothing behind: no trace, no link. Any other traced call's trace is saved (below, or
            # when its stream ends) before its link is given out.
            if request.trace is not None and getattr(request, "api_key", None) is not None:
                if not resp.streaming:  # a stream's trace is written when the stream ends
                    request.trace.save_later(resp.status_code, _trace_body(resp), after=getattr(resp, "sent", None))
                resp["x-explainer-trace"] = request.build_absolute_uri(f"/traces/{request.trace.id}/")
            return resp
        return wrapper
    return deco


def _trace_body(resp):
    """What a plain response's trace keeps of its body: the message itself when the view left it, else the parsed bytes."""
    body = getattr(resp, "trace_body", None)
    if body is not None:
        return body
    try:
        return json.loads(resp.content or b"null")
    except ValueError:
        return {"not_json": resp.content[:1024].decode("utf-8", "replace")}


def _model_name_ok(name: str) -> bool:
    return name.startswith("claude-") or name == BUNDLED_MODEL_NAME or is_local_model(name)


def _engine(name: str):
    """The engine that answers ``name``; a local model whose folder cannot be opened is a clear 400."""
    try:
        return engine_for(name)
    except ModelLoadError as exc:
        raise APIError("invalid_request_error", f"model: {name} is installed but cannot be opened: {exc}") from None


def client_address(request) -> str:
    return request.META.get("REMOTE_ADDR") or "?"


def key_failures() -> FailureLimiter:
    """Wrong or missing keys, per client address and per key prefix (``EXPLAINER_AUTH_FAILURES_PER_MINUTE``;
    built with the app's services): a burst of twice the per-minute allowance, then a wrong key is a 429
    without any lookup. A right key is never refused for them: ``_authenticate`` recognises it by the live
    keys' digests (``keys.live``) before asking the limiter.

    Per process, also with ``REDIS_URL`` (the per-key rate limits live in Redis, these counts do not):
    with several processes, each counts its own share of a client's failures."""
    return services.current().key_failures


KEY_PREFIX_CHARS = 12  # failures are also counted per key prefix: what ``manage.py apikeys`` lists of a key


def _throttled(ticket: Ticket) -> APIError:
    return too_many("Too many requests with a missing or wrong API key from this address; "
                    f"try again in {ticket.retry_after} seconds.", ticket.retry_after)


async def _authenticate(request) -> None:
    """The gateway's key check (as ``lifecycle.gateway.check_key`` runs it on the gateway page), with
    failures limited per address and per key prefix without ever refusing a right key
    (``key_failures``), and a 503 when the key store cannot be reached."""
    gw = request.trace.gateway if getattr(request, "trace", None) else {}
    limiter, addr = key_failures(), client_address(request)
    key = key_from_headers(request.headers)
    if key is None:
        ticket = limiter.failure(addr)
        gw["key"] = "throttled" if ticket.over_budget else "missing"
        raise _throttled(ticket) if ticket.over_budget else APIError("authentication_error", MISSING_KEY_MESSAGE)
    proof = keys.digest(key) if len(key) <= 200 else None
    known = proof is not None and keys.live.contains(proof, refresh=False)
    # Reserved here, before the first await: concurrent requests cannot all pass one look at the budget.
    # A key this process knows to be live reserves nothing: it is confirmed below without touching
    # anyone's failure budget, so a right key passes whatever the failures from its address or prefix.
    ticket = None if known else limiter.reserve(addr, key[:KEY_PREFIX_CHARS])
    try:
        if ticket is not None and not ticket.allowed:
            if proof is None or not await sync_to_async(keys.live.contains)(proof):
                gw["key"] = "throttled"
                raise _throttled(ticket)
            ticket = None  # a key created since this process last read the table: checked like a known one
        found = await sync_to_async(keys.check)(key)
    except DatabaseError:
        if ticket is not None:
            limiter.refund(ticket)  # nothing was learned: the caller's budget is not charged for our outage
        log.warning("API key check: the database is unreachable", exc_info=True)
        raise unavailable("The API key store (the database) cannot be reached right now.") from None
    # (A request cancelled while its key is checked keeps its failure counted: cancelling is no free check.)
    if ticket is not None:
        limiter.settle(ticket, ok=found is not None)
    elif found is None:  # known a moment ago, revoked since: a failure like any other
        ticket = limiter.failure(addr, key[:KEY_PREFIX_CHARS])
    if found is None:
        gw["key"] = "throttled" if ticket.over_budget else "wrong"
        raise _throttled(ticket) if ticket.over_budget else APIError("authentication_error", INVALID_KEY_MESSAGE)
    gw["key"] = "valid"
    gw["key_name"] = found.name
    request.api_key = found


def unavailable(message: str, retry_after: int = 5) -> APIError:
    """A 503 in the API's envelope: a service the gateway needs (database, Redis) is down. Clients retry it."""
    return APIError("api_error", f"{message} Try again in a few seconds.", status=503,
                    headers={"retry-after": str(retry_after)})


def _prepare(request, counting: bool):
    """Read, validate and tokenize the body: the work that grows with the request's size.

    It runs in a worker thread (``_off_the_loop``), so a megabyte body never holds the event
    loop that serves every other client; the engine refuses text that cannot fit before BPE.
    A local model's body is only read here: ids and engine are None, ``_prepared`` does the rest.
    """
    body = _json_body(request)
    request.trace.set_body(body)
    req = parse_request(body, counting=counting)
    _check_model(req.model)
    if is_local_model(req.model):
        return req, None, None
    return _tokenized(req)


def _tokenized(req):
    engine = _engine(req.model)  # in a worker thread: opening a local model takes seconds
    return req, engine.prompt_ids(req), engine


async def _prepared(request, counting: bool):
    """(request, prompt ids, engine) for the call, under the request's budget (``request.budget``, its
    deadline from here to the end of its run). A local model is opened, and its tokenizer (an untrusted
    folder's) run, in the local models' own workers (``runner.call``), never where Claude names are served:
    a busy lane is a 529, a run past the deadline a 504."""
    request.budget = request_budget()
    req, ids, engine = await _off_the_loop(_prepare, request, counting)
    if engine is None:
        req, ids, engine = await call(req.model, _tokenized, req, budget=request.budget)
    return req, ids, engine


async def _off_the_loop(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(services.current().tokenize, fn, *args)


def _json_body(request) -> object:
    limit = settings.EXPLAINER_API_MAX_BODY_BYTES
    length = request.headers.get("content-length")
    if length and length.isdigit():
        check_body_size(int(length), limit)  # the gateway's own check: refused before the body is read
    try:
        body = request.body
    except RequestDataTooBig:
        raise body_too_large(limit) from None
    check_body_size(len(body), limit)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("The request body is not valid UTF-8.") from None
    try:
        return jsonlimits.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except jsonlimits.TooDeep as exc:
        raise invalid(f"The request body is nested too deeply: {exc}.") from None
    except _NonFinite as exc:
        raise invalid(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise invalid("The request body is nested too deeply.") from None
    except ValueError as exc:
        raise invalid(f"The request body is not valid JSON: {exc}") from None


class _NonFinite(ValueError):
    """A number JSON cannot carry: NaN, Infinity, or one too large for a double (Python's json accepts them)."""


def _no_constant(name: str):
    raise _NonFinite(f"{name} is not a JSON number (NaN, Infinity and -Infinity are refused).")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NonFinite(f"the number {text[:40]} is too large: it overflows to infinity.")
    return value


def _check_model(name: str) -> None:
    if not _model_name_ok(name):
        raise APIError("not_found_error", f"model: {name}")


def stream_hold_seconds() -> float:
    """How long a stream's events may wait to travel together (EXPLAINER_API_STREAM_HOLD_MS, 10 by default).

    Each batch wakes the event loop, which shares the interpreter lock with the engine's thread,
    and is one write that the client must wake up to read. Sent one token at a time, a 64-token
    reply took about 12 points more of bench/api.py's ratio (1.30 against 1.18). Holding events
    for up to 10 ms (less than a 60 Hz frame) sends a few tokens per write; the first token and
    the end of the reply are never held. 0 sends every event as soon as the event loop can.
    """
    return max(0.0, float(getattr(settings, "EXPLAINER_API_STREAM_HOLD_MS", 10))) / 1000


NON_STREAMING_HOLD = 60.0  # seconds; only the start, the first text, an error and the end wake the loop


_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _sse(event: dict) -> str:
    return f"event: {event['type']}\ndata: {_compact(event)}\n\n"


def _sse_chunk(events: list[dict]) -> bytes:
    """The events that were ready together, as one write (one chunk of the HTTP response)."""
    return "".join(map(_sse, events)).encode()


def _for_the_api(event: dict) -> bool:
    """The explainer's own frames (prompt tokens, candidates, timings) stay in the engine's thread, for the trace."""
    return not fr.is_explainer(event)


@api_view(("POST",), trace="messages")
async def messages(request):
    rec: TraceRecorder = request.trace
    await _authenticate(request)
    try:
        req, ids, engine = await _prepared(request, False)
        engine.check_fits(ids)
    except APIError as exc:
        if exc.status < 500:  # a refused request still costs a request from the key's bucket
            _charge_request(request)
        raise
    # Output can never outgrow the context window, so that is all a large max_tokens reserves.
    reserve = min(req.max_tokens, engine.context_window - len(ids))
    headers = _admit(request, len(ids), reserve)
    rec.mark("gateway_ms")
    try:
        resp = await _run_messages(request, req, rec, reserve)
    except BaseException:
        _settle(request, reserve, 0)
        raise
    for k, v in headers.items():
        resp[k] = v
    return resp


def _store_call(fn, *args):
    try:
        return fn(*args)
    except RedisError:
        log.warning("rate-limit store: Redis is unreachable", exc_info=True)
        raise unavailable("The rate-limit store (Redis) cannot be reached right now.") from None


def _charge_request(request) -> dict:
    """Take one request (and no tokens) from the key's bucket: for count_tokens, and for refused requests."""
    key = str(request.api_key.pk)
    now = ratelimits.now()
    decision, snap = _store_call(ratelimits.store().admit, key, 0, 0, now)
    lim = ratelimits.limits()
    headers = ratelimit_headers(lim, snap, now, retry_after=None if decision.allowed else (decision.retry_after or 60.0))
    if not decision.allowed:
        raise rate_limit_error(decision.limited_by, lim, need=decision.needs[decision.limited_by], headers=headers)
    return headers


def _admit(request, input_tokens: int, max_tokens: int) -> dict:
    """Take this request's share of the key's buckets, or refuse it with a 429 and ``retry-after``."""
    key = str(request.api_key.pk)
    now = ratelimits.now()
    decision, snap = _store_call(ratelimits.store().admit, key, input_tokens, max_tokens, now)
    lim = ratelimits.limits()
    gw = request.trace.gateway
    gw["rate_limit"] = {"decision": "allowed" if decision.allowed else f"refused ({decision.limited_by})",
                        "needs": decision.needs, "remaining": {d: v[0] for d, v in snap.items()}}
    headers = ratelimit_headers(lim, snap, now, retry_after=None if decision.allowed else (decision.retry_after or 60.0))
    if not decision.allowed:
        raise rate_limit_error(decision.limited_by, lim, need=decision.needs[decision.limited_by], headers=headers)
    return headers


def _settle(request, reserved: int, used: int) -> None:
    try:
        ratelimits.store().settle(str(request.api_key.pk), reserved, used, ratelimits.now())
    except RedisError:  # the reply is already on its way; the bucket refills on its own
        log.warning("rate-limit store: could not give back %d reserved tokens", reserved - used, exc_info=True)


async def _run_messages(request, req, rec, reserve: int):
    budget = getattr(request, "budget", None) or request_budget()  # the deadline counts from _prepared
    cancel = budget.cancel
    # The trace is fed in the engine's thread; only the API's own events cross to the event loop.
    # A plain answer is sent whole at the end: its events need not cross before then.
    rec.engine_started()
    batches = run_batches(req, seed=0, cancel=cancel, observe=rec.feed, keep=_for_the_api, finished=rec.engine_stopped,
                          hold=stream_hold_seconds() if req.stream else NON_STREAMING_HOLD, budget=budget,
                          n_candidates=TRACE_CANDIDATES)
    first = await anext(batches)  # message_start, or an error envelope (prompt too long, overloaded)
    if first[0]["type"] == fr.ERROR:
        await batches.aclose()
        err = first[0]["error"]
        raise APIError(err["type"], err["message"])

    if req.stream:
        async def stream():
            failed = None
            try:
                batch = first
                while True:
                    for k, event in enumerate(batch):
                        if event["type"] == fr.ERROR:  # the envelope as any error response has it, with request_id
                            batch[k] = failed = {**event, "request_id": request.request_id}
                            rec.feed(failed)
                    yield _sse_chunk(batch)
                    batch = await anext(batches, None)
                    if batch is None:
                        break
            finally:
                cancel.set()
                await batches.aclose()
                _settle(request, reserve, (rec.done or {}).get("usage", {}).get("output_tokens", 0))
                rec.save_later(200, failed, after=resp.sent)

        resp = EventStreamResponse(stream(), content_type="text/event-stream; charset=utf-8")
        resp["cache-control"] = "no-cache"
        resp["x-accel-buffering"] = "no"
        return resp

    message, blocks, partial = None, [], {}
    batch = first
    try:
        while batch is not None:
            for event in batch:
                t = event["type"]
                if t == fr.MESSAGE_START:  # a copy: the trace keeps the event as it was sent
                    message = {**event["message"], "usage": dict(event["message"]["usage"])}
                elif t == fr.CONTENT_BLOCK_START:
                    blocks.append(dict(event["content_block"]))
                elif t == fr.CONTENT_BLOCK_DELTA:
                    d = event["delta"]
                    if d["type"] == fr.TEXT_DELTA:
                        blocks[event["index"]]["text"] += d["text"]
                    elif d["type"] == fr.INPUT_JSON_DELTA:
                        partial[event["index"]] = partial.get(event["index"], "") + d["partial_json"]
                elif t == fr.CONTENT_BLOCK_STOP and blocks[event["index"]]["type"] == fr.TOOL_USE:
                    text = partial.get(event["index"], "")
                    try:
                        blocks[event["index"]]["input"] = json.loads(text) if text else {}
                    except ValueError:  # cut off by max_tokens: the API returns what was produced
                        blocks[event["index"]]["input"] = {}
                elif t == fr.MESSAGE_DELTA:
                    message["stop_reason"] = event["delta"]["stop_reason"]
                    message["stop_sequence"] = event["delta"]["stop_sequence"]
                    message["usage"].update(event["usage"])  # cumulative, as the SDK's accumulator reads it
                elif t == fr.ERROR:
                    rec.feed(event)
                    err = event["error"]
                    raise APIError(err["type"], err["message"])
            batch = await anext(batches, None)
    finally:
        await batches.aclose()
    message["content"] = blocks
    _settle(request, reserve, message["usage"]["output_tokens"])
    resp = ApiJsonResponse(message)
    resp.trace_body = message  # the trace keeps the message itself, not a second parse of the bytes
    return resp


@api_view(("POST",), trace="count_tokens")
async def count_tokens(request):
    await _authenticate(request)
    headers = _charge_request(request)  # counting costs a request from the key's bucket, not tokens
    _, ids, _ = await _prepared(request, True)
    resp = ApiJsonResponse({"input_tokens": len(ids)})
    for k, v in headers.items():
        resp[k] = v
    return resp


def _model_info(name: str) -> dict:
    served_by = name if is_local_model(name) else BUNDLED_MODEL_NAME
    display = f"{name} (a local model on this server)" if served_by == name and name != BUNDLED_MODEL_NAME \
        else f"{name} (served by {BUNDLED_MODEL_NAME})"
    return {"type": "model", "id": name, "display_name": display, "created_at": MODELS_CREATED_AT}


@api_view(("GET",))
async def models(request):
    await _authenticate(request)
    names = (BUNDLED_MODEL_NAME, *catalog().names(), *KNOWN_MODELS)
    data = [_model_info(n) for n in names]
    return JsonResponse({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})


@api_view(("GET",))
async def model_detail(request, model_id: str):
    await _authenticate(request)
    if not _model_name_ok(model_id):
        raise APIError("not_found_error", f"model: {model_id}")
    return JsonResponse(_model_info(model_id))


@api_view(("GET", "POST", "PUT", "PATCH", "DELETE"))
async def not_found(request, rest: str = ""):
    raise APIError("not_found_error", f"Not found: {request.method} {request.path}")
