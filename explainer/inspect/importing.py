"""Calls recorded elsewhere, read into a session: JSON Lines of request/response pairs, or a HAR 1.2 file.

Accepted, one call a line (JSON Lines):
- the plain form ``{"request": <Messages API body>, "response": <message or error envelope>}``;
- claude-trace's logs: ``{"request": {"timestamp", "method", "url", "headers", "body"},
  "response": {"timestamp", "status_code", "headers", "body" | "body_raw"}}``, where ``body_raw``
  is a stream's Server-Sent Events as text (reassembled here, as the proxy does).
Or a HAR 1.2 file (``{"log": {"entries": [...]}}``, as browser dev tools and mitmproxy export it), of
which the entries for ``/v1/messages`` are kept. Headers are read for nothing but the API version:
a key in the file is never stored. A file with any bad line or entry is refused whole, with one
sentence naming it (``ImportRefused``); nothing half-imports.

Example:
    >>> calls = parse('{"request": {"model": "m", "messages": []}, "response": {"type": "message", "usage": {}}}')
    >>> calls[0]["path"], calls[0]["status"], calls[0]["stream"]
    ('/v1/messages', 200, False)
"""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, TypedDict
from urllib.parse import urlsplit

from explainer.inspect import record
from explainer.inspect.jsonish import items, obj
from explainer.inspect.sse import StreamRecord
from explainer.lifecycle.errors import STATUS

MESSAGES_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
MAX_CALLS = 5000


class ImportRefused(ValueError):
    """The file cannot be imported; the message is one sentence naming the line or entry."""


class Imported(TypedDict):
    path: str
    query: str
    method: str
    status: int
    model: str
    stream: bool
    request: Any
    response: Any
    events: list[dict[str, Any]]
    request_id: str
    ratelimit: dict[str, str]  # the answer's anthropic-ratelimit-* and retry-after headers, where the file kept them
    started_at: float | None  # seconds since the epoch, when the file says
    timings: dict[str, float | None]
    notes: list[str]
    headers: dict[str, str]


def parse(text: str) -> list[Imported]:
    """Every call in the file, in its order; ``ImportRefused`` for a file that is not all readable."""
    stripped = text.lstrip()
    if not stripped:
        raise ImportRefused("The file is empty.")
    if stripped.startswith("{") and '"log"' in stripped[:200]:
        try:
            har = json.loads(stripped)
        except ValueError:
            har = None
        if isinstance(har, dict) and isinstance(har.get("log"), dict):
            return _har(har["log"])
    return _lines(text)


def _lines(text: str) -> list[Imported]:
    calls: list[Imported] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportRefused(f"Line {n} is not JSON ({exc.msg} at character {exc.pos + 1}).") from None
        except ValueError as exc:  # JSON that Python will not read, such as an integer of more than 4,300 digits
            raise ImportRefused(f"Line {n} is not JSON that can be read here ({str(exc)[:80]}).") from None
        if not isinstance(item, dict) or not isinstance(item.get("request"), dict) or "response" not in item:
            raise ImportRefused(f"Line {n} is not a request/response pair: it needs an object with \"request\" (an object) and \"response\".")
        call = _pair(item["request"], item["response"], f"Line {n}")
        if call is not None:
            calls.append(call)
        if len(calls) > MAX_CALLS:
            raise ImportRefused(f"The file holds more than {MAX_CALLS:,} calls; split it.")
    if not calls:
        raise ImportRefused("The file holds no call to /v1/messages.")
    return calls


def _pair(req: dict[str, Any], resp: Any, where: str) -> Imported | None:
    """One line: the plain form (the request is the body) or claude-trace's (the body is under "body")."""
    body: Any
    if "messages" in req or "model" in req:
        body, url, method, started = req, "/v1/messages", "POST", None
    else:
        body = req.get("body")
        url = str(req.get("url") or "")
        method = str(req.get("method") or "POST").upper()
        started = _number(req.get("timestamp"))
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError:
                raise ImportRefused(f"{where}: the request's body is not JSON.") from None
    path, query = _path(url)
    if path not in MESSAGES_PATHS:
        return None
    if not isinstance(body, dict):
        raise ImportRefused(f"{where}: the request has no JSON body.")
    response, events, status = _response(resp, where)
    ended = _number(resp.get("timestamp")) if isinstance(resp, dict) else None
    total = (ended - started) * 1000 if started is not None and ended is not None and ended >= started else None
    headers = req.get("headers") if isinstance(req.get("headers"), dict) else {}
    return _call(path, query, method, status, body, response, events, started, {"total": total}, headers,
                 resp.get("headers") if isinstance(resp, dict) else None)


def _response(resp: Any, where: str) -> tuple[Any, list[dict[str, Any]], int]:
    if not isinstance(resp, dict):
        raise ImportRefused(f"{where}: the response is not an object.")
    if resp.get("type") in ("message", "error"):  # the plain form: the message or the envelope itself
        return resp, [], 200 if resp["type"] == "message" else _error_status(resp)
    status = resp.get("status_code", resp.get("status"))
    if not isinstance(status, int):
        raise ImportRefused(f"{where}: the response has no status code.")
    if isinstance(resp.get("body_raw"), str):
        return (*_stream(resp["body_raw"]), status)
    return resp.get("body"), [], status


def _error_status(envelope: dict[str, Any]) -> int:
    kind = envelope.get("error", {}).get("type") if isinstance(envelope.get("error"), dict) else None
    return STATUS.get(str(kind), 500)


def _stream(text: str) -> tuple[Any, list[dict[str, Any]]]:
    s = StreamRecord()
    s.feed(text.encode(), 0.0)
    if not text.endswith("\n\n"):
        s.feed(b"\n\n", 0.0)
    message = s.message()
    return (message if message is not None else s.error), s.events


def _har(log: dict[str, Any]) -> list[Imported]:
    entries = log.get("entries")
    if not isinstance(entries, list):
        raise ImportRefused("The HAR file has no log.entries list.")
    calls: list[Imported] = []
    for n, entry in enumerate(entries, 1):
        where = f"Entry {n} of the HAR file"
        req = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(req, dict) or not isinstance(req.get("url"), str):
            raise ImportRefused(f"{where} has no request URL.")
        path, query = _path(req["url"])
        if path not in MESSAGES_PATHS:
            continue
        text = (req.get("postData") or {}).get("text") if isinstance(req.get("postData"), dict) else None
        try:
            body = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            raise ImportRefused(f"{where} ({path}): its request body is not JSON.") from None
        if not isinstance(body, dict):
            raise ImportRefused(f"{where} ({path}) has no JSON request body (postData.text).")
        resp = entry.get("response")
        if not isinstance(resp, dict) or not isinstance(resp.get("status"), int):
            raise ImportRefused(f"{where} ({path}) has no response status.")
        content = obj(resp.get("content"))
        text = content.get("text")
        raw = text if isinstance(text, str) else ""
        if content.get("encoding") == "base64":
            try:
                raw = base64.b64decode(raw).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                raise ImportRefused(f"{where} ({path}): its response text is not valid base64.") from None
        response: Any
        events: list[dict[str, Any]] = []
        if "event-stream" in str(content.get("mimeType", "")) or raw.startswith("event:"):
            response, events = _stream(raw)
        else:
            try:
                response = json.loads(raw) if raw else None
            except ValueError:
                response = {"not_json": raw[:1024]}
        timings = obj(entry.get("timings"))
        total = _number(entry.get("time"))
        wait = _number(timings.get("wait"))
        headers = {str(h.get("name", "")).lower(): str(h.get("value", "")) for h in items(req.get("headers")) if isinstance(h, dict)}
        resp_headers = {str(h.get("name", "")).lower(): str(h.get("value", "")) for h in items(resp.get("headers")) if isinstance(h, dict)}
        calls.append(_call(path, query, str(req.get("method") or "POST").upper(), resp["status"], body, response, events,
                           _iso(entry.get("startedDateTime")), {"first_byte": wait, "total": total}, headers,
                           resp_headers))
        if len(calls) > MAX_CALLS:
            raise ImportRefused(f"The HAR file holds more than {MAX_CALLS:,} calls; split it.")
    if not calls:
        raise ImportRefused("The HAR file holds no call to /v1/messages.")
    return calls


def _call(path: str, query: str, method: str, status: int, body: dict[str, Any], response: Any, events: list[dict[str, Any]],
          started: float | None, timings: dict[str, float | None], headers: Any, answer_headers: Any) -> Imported:
    stored, notes = record.summarise(body)
    kept = record.request_headers(headers if isinstance(headers, dict) else {})
    answered = obj(answer_headers)
    return {"path": path, "query": query[:512], "method": method[:8], "status": status, "model": str(body.get("model", ""))[:200],
            "stream": bool(body.get("stream")), "request": stored, "response": response, "events": events,
            "request_id": _request_id(answered)[:200], "ratelimit": record.rate_limit_headers(answered), "started_at": started, "timings": timings, "notes": ["Imported from a file.", *notes],
            "headers": kept}


def _request_id(headers: Any) -> str:
    if isinstance(headers, dict):
        for k, v in headers.items():
            if str(k).lower() == "request-id":
                return str(v)
    return ""


def _path(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    for known in MESSAGES_PATHS[::-1]:  # a proxy's prefix (/inspect/<id>/v1/messages) still names the call
        if path.endswith(known):
            return known, parts.query
    return path, parts.query


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _iso(v: Any) -> float | None:
    if not isinstance(v, str):
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
