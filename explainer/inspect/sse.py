"""Reading a relayed Messages API stream as it passes: Server-Sent Events out of arbitrary chunks, and the
final message put back together from them (as the SDK's accumulator does), with each event's arrival time.

Pure and incremental: ``feed`` takes the bytes of one chunk as they arrived and never holds them back,
so the proxy relays a chunk first and reads it after.

Example:
    >>> s = StreamRecord()
    >>> s.feed(b'event: message_start\\ndata: {"type": "message_start", "message": {"id": "m", "content": [], '
    ...        b'"usage": {"input_tokens": 3, "output_tokens": 1}}}\\n\\nevent: content_block_start\\ndata: {"type": '
    ...        b'"content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}\\n\\n', 5.0)
    >>> s.feed(b'event: content_block_delta\\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": '
    ...        b'"text_delta", "text": "Hi"}}\\n\\n', 9.0)
    >>> s.message()["content"], s.first_token_ms
    ([{'type': 'text', 'text': 'Hi'}], 9.0)
"""
from __future__ import annotations

import json
from typing import Any

from explainer.inspect.jsonish import obj

MAX_EVENTS_KEPT = 20_000  # arrival times kept per stream; a longer stream keeps its first ones and says so


class StreamRecord:
    """The events of one stream: their types and arrival times, the message they build, and any error event."""

    def __init__(self) -> None:
        self._buffer = b""
        self.events: list[dict[str, Any]] = []  # {"type", "at_ms"}
        self.events_dropped = 0
        self.first_token_ms: float | None = None
        self.error: dict[str, Any] | None = None
        self._message: dict[str, Any] | None = None
        self._partial: dict[int, str] = {}
        self.unparsed = 0  # data lines that were not JSON

    def feed(self, chunk: bytes, at_ms: float) -> None:
        self._buffer += chunk
        while True:
            cut = _event_end(self._buffer)
            if cut is None:
                return
            raw, self._buffer = self._buffer[:cut[0]], self._buffer[cut[1]:]
            self._event(raw, at_ms)

    def _event(self, raw: bytes, at_ms: float) -> None:
        name, data = "message", []
        for line in raw.decode("utf-8", "replace").splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if not data:
            return
        try:
            event = json.loads("\n".join(data))
        except ValueError:
            self.unparsed += 1
            return
        kind = event.get("type", name) if isinstance(event, dict) else name
        if len(self.events) < MAX_EVENTS_KEPT:
            self.events.append({"type": kind, "at_ms": round(at_ms, 3)})
        else:
            self.events_dropped += 1
        if isinstance(event, dict):
            self._apply(kind, event, at_ms)

    def _apply(self, kind: str, e: dict[str, Any], at_ms: float) -> None:
        m = self._message
        if kind == "message_start" and isinstance(e.get("message"), dict):
            self._message = {**e["message"], "content": list(e["message"].get("content") or []),
                             "usage": dict(e["message"].get("usage") or {})}
        elif kind == "error":
            self.error = e
        elif m is None:
            return
        elif kind == "content_block_start" and isinstance(e.get("content_block"), dict):
            m["content"].append(dict(e["content_block"]))
        elif kind == "content_block_delta" and isinstance(e.get("delta"), dict):
            if self.first_token_ms is None:
                self.first_token_ms = at_ms
            self._delta(e.get("index"), e["delta"])
        elif kind == "content_block_stop":
            self._stop(e.get("index"))
        elif kind == "message_delta":
            delta = obj(e.get("delta"))
            m.update({k: v for k, v in delta.items() if k in ("stop_reason", "stop_sequence", "container")})
            if isinstance(e.get("usage"), dict):
                m["usage"].update({k: v for k, v in e["usage"].items() if v is not None})

    def _block(self, index: Any) -> dict[str, Any] | None:
        content = self._message["content"] if self._message else []
        return content[index] if isinstance(index, int) and 0 <= index < len(content) else None

    def _delta(self, index: Any, d: dict[str, Any]) -> None:
        block = self._block(index)
        if block is None:
            return
        t = d.get("type")
        if t == "text_delta":
            block["text"] = block.get("text", "") + str(d.get("text", ""))
        elif t == "input_json_delta":
            self._partial[index] = self._partial.get(index, "") + str(d.get("partial_json", ""))
        elif t == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(d.get("thinking", ""))
        elif t == "signature_delta":
            block["signature"] = str(d.get("signature", ""))
        elif t == "citations_delta":
            block.setdefault("citations", []).append(d.get("citation"))

    def _stop(self, index: Any) -> None:
        block = self._block(index)
        if block is None or index not in self._partial:
            return
        text = self._partial.pop(index)
        try:
            block["input"] = json.loads(text) if text else {}
        except ValueError:  # cut by max_tokens: what arrived is kept as text
            block["input"] = {}
            block["partial_json"] = text

    def message(self) -> dict[str, Any] | None:
        """The final message as a non-streaming call would have returned it (None if the stream never started one)."""
        if self._message is None:
            return None
        for index in list(self._partial):  # blocks whose stop never came (a stream cut mid-way)
            self._stop(index)
        return self._message


def _event_end(buf: bytes) -> tuple[int, int] | None:
    """(end of the first complete event, start of the next) in ``buf``, or None: events end with a blank line."""
    best: tuple[int, int] | None = None
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        at = buf.find(sep)
        if at != -1 and (best is None or at < best[0]):
            best = (at, at + len(sep))
    return best
