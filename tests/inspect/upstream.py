"""A local stand-in for the public Messages API, for the inspector's tests and bench/inspector.py.

It answers as the API does (JSON and Server-Sent Events, usage with cache fields, ``request-id`` and
``anthropic-ratelimit-*`` headers, the error envelope) and records what it received and what it sent.
Streams use chunked transfer encoding, so a connection dropped mid-way is a detectable cut.

What it answers is chosen by the request, so a test scripts a session by what it sends:
- model ``standin-429``: a 429 with ``retry-after``; ``standin-529``: a 529; ``standin-drop``: the connection
  is dropped mid-answer; ``standin-hang``: no answer until the server stops; ``standin-slow``: a stream
  whose events come 50 ms apart (it notes where its reader closed the connection);
- a last user text containing ``[[tool NAME {json}]]`` (with tools sent): a ``tool_use`` of NAME with that input;
- ``max_tokens`` under 10: the reply (a tool call when one was asked for) is cut, ``stop_reason: max_tokens``;
- otherwise a short text reply.
Its prompt cache: a prefix up to a ``cache_control`` breakpoint (tools → system → messages) of at least
``MIN_CACHEABLE`` tokens (4 characters a token) is written on first use and read while it is fresh.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MIN_CACHEABLE = 1024
TTL = 300.0
TOOL_ASK = re.compile(r"\[\[tool (\w+) (\{.*?\})\]\]", re.S)


def tokens(value: Any) -> int:
    return max(1, -(-len(json.dumps(value, ensure_ascii=False)) // 4)) if value else 0


def _prefixes(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The prefix each breakpoint names, in order: the body cut just after the block that carries cache_control."""
    out: list[dict[str, Any]] = []
    tools, system, messages = body.get("tools") or [], body.get("system") or [], body.get("messages") or []
    for i, t in enumerate(tools):
        if isinstance(t, dict) and "cache_control" in t:
            out.append({"tools": tools[:i + 1]})
    if isinstance(system, list):
        for i, b in enumerate(system):
            if isinstance(b, dict) and "cache_control" in b:
                out.append({"tools": tools, "system": system[:i + 1]})
    for m, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            for j, b in enumerate(content):
                if isinstance(b, dict) and "cache_control" in b:
                    out.append({"tools": tools, "system": system, "messages": messages[:m] + [{**msg, "content": content[:j + 1]}]})
    return out


class StandIn:
    """The server and what it saw: ``received`` (method, path, headers, body) and ``sent`` (status, headers, body bytes)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.cache: dict[str, float] = {}  # prefix key -> expiry (time.monotonic)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.count = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def next_id(self) -> str:
        with self.lock:
            self.count += 1
            return f"req_standin_{self.count:04d}"

    def usage(self, body: dict[str, Any], output: int) -> dict[str, Any]:
        whole = tokens({k: body.get(k) for k in ("tools", "system", "messages") if body.get(k)})
        read = write = 0
        marks = _prefixes(body)
        now = time.monotonic()
        with self.lock:
            for prefix in reversed(marks):
                n = tokens(prefix)
                key = json.dumps(prefix, sort_keys=False)
                if n >= MIN_CACHEABLE and self.cache.get(key, 0) > now:
                    read = n
                    self.cache[key] = now + TTL
                    break
            if marks:
                last = marks[-1]
                n = tokens(last)
                if n >= MIN_CACHEABLE and n > read:
                    write = n - read
                    self.cache[json.dumps(last, sort_keys=False)] = now + TTL
        return {"input_tokens": whole - read - write, "cache_creation_input_tokens": write, "cache_read_input_tokens": read,
                "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0},
                "output_tokens": output, "service_tier": "standard"}


def reply(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """(content blocks, stop reason) for a request, as the module's docstring says."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content") if isinstance(last, dict) else ""
    text = content if isinstance(content, str) else " ".join(
        b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")
    ask = TOOL_ASK.search(text)
    cut = int(body.get("max_tokens") or 0) < 10
    if ask and body.get("tools"):
        block = {"type": "tool_use", "id": f"toolu_{abs(hash((ask.group(0), len(messages)))) % 10**12:012d}",
                 "name": ask.group(1), "input": json.loads(ask.group(2))}
        return [block], "max_tokens" if cut else "tool_use"
    words = f"Echo: {text[:60]}".split(" ")
    if body.get("model") == "standin-slow":
        words = [f"w{n}" for n in range(100)]
    if cut:
        words = words[:2]
    return [{"type": "text", "text": " ".join(words)}], "max_tokens" if cut else "end_turn"


def _handler(standin: StandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Each event is its own small write, as a streaming server's are: without this, Nagle's algorithm holds
            # a write until the last one is acknowledged, and the client's delayed ACK makes that about 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""

        def _record(self, raw: bytes) -> dict[str, Any]:
            rec = {"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                   "body": raw}
            standin.received.append(rec)
            return rec

        def _headers(self, status: int, content_type: str, extra: dict[str, str] | None = None, length: int | None = None) -> dict[str, str]:
            h = {"content-type": content_type, "request-id": standin.next_id(),
                 "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
                 "anthropic-ratelimit-requests-reset": "2026-12-07T10:00:00Z", **(extra or {})}
            self.send_response(status)
            for k, v in h.items():
                self.send_header(k, v)
            if length is None:
                self.send_header("transfer-encoding", "chunked")
            else:
                self.send_header("content-length", str(length))
            self.end_headers()
            return h

        def _json(self, status: int, value: Any, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(value).encode()
            h = self._headers(status, "application/json", extra, len(data))
            self.wfile.write(data)
            standin.sent.append({"status": status, "headers": h, "body": data})

        def _error(self, status: int, kind: str, message: str, extra: dict[str, str] | None = None) -> None:
            self._json(status, {"type": "error", "error": {"type": kind, "message": message}}, extra)

        def do_GET(self) -> None:
            self._record(b"")
            data = [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"}]
            if self.path == "/v1/models/claude-sonnet-4-5":
                self._json(200, data[0])
            elif self.path.startswith("/v1/models"):
                self._json(200, {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[0]["id"]})
            else:
                self._error(404, "not_found_error", f"Not found: {self.path}")

        def do_POST(self) -> None:
            raw = self._body()
            self._record(raw)
            try:
                body = json.loads(raw)
            except ValueError:
                return self._error(400, "invalid_request_error", "not JSON")
            if self.path.startswith("/v1/messages/count_tokens"):
                return self._json(200, {"input_tokens": tokens({k: body.get(k) for k in ("tools", "system", "messages") if body.get(k)})})
            if not self.path.startswith("/v1/messages"):
                return self._error(404, "not_found_error", f"Not found: {self.path}")
            model = body.get("model", "")
            if model == "standin-429":
                return self._error(429, "rate_limit_error", "Number of requests has exceeded your rate limit.", {"retry-after": "7"})
            if model == "standin-529":
                return self._error(529, "overloaded_error", "Overloaded")
            if model == "standin-hang":
                standin.stop.wait(120)
                return None
            content, stop = reply(body)
            output = max(1, tokens(content))
            message = {"id": f"msg_{standin.count:06d}", "type": "message", "role": "assistant", "model": model, "content": content,
                       "stop_reason": stop, "stop_sequence": None, "usage": standin.usage(body, output)}
            if model == "standin-drop" and not body.get("stream"):
                data = json.dumps(message).encode()
                self._headers(200, "application/json", None, len(data))
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return None
            if body.get("stream"):
                return self._stream(message, drop=model == "standin-drop")
            return self._json(200, message)

        def _stream(self, message: dict[str, Any], drop: bool) -> None:
            h = self._headers(200, "text/event-stream; charset=utf-8")
            sent = bytearray()
            usage = message["usage"]
            start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
            for i, block in enumerate(message["content"]):
                if block["type"] == "text":
                    events.append({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
                    if i == 0:
                        events.append({"type": "ping"})
                    words = block["text"].split(" ")
                    for n, w in enumerate(words):
                        events.append({"type": "content_block_delta", "index": i,
                                       "delta": {"type": "text_delta", "text": w if n == 0 else " " + w}})
                else:
                    events.append({"type": "content_block_start", "index": i, "content_block": {**block, "input": {}}})
                    text = json.dumps(block["input"])
                    if message["stop_reason"] == "max_tokens":
                        text = text[:len(text) // 2]
                    for n in range(0, len(text), 8):
                        events.append({"type": "content_block_delta", "index": i,
                                       "delta": {"type": "input_json_delta", "partial_json": text[n:n + 8]}})
                events.append({"type": "content_block_stop", "index": i})
            events.append({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                           "usage": {"output_tokens": usage["output_tokens"]}})
            events.append({"type": "message_stop"})
            if drop:
                events = events[:4]
            slow = message["model"] == "standin-slow"
            for n, e in enumerate(events):
                data = f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()
                if slow and n > 2 and standin.stop.wait(0.05):
                    break
                try:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                except OSError:  # the relay closed the connection: its caller went away
                    standin.sent.append({"status": 200, "headers": h, "body": bytes(sent), "message": message, "closed_after": n})
                    self.close_connection = True
                    return
                sent += data
            standin.sent.append({"status": 200, "headers": h, "body": bytes(sent), "message": message})
            if drop:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler
