"""What a recorded call keeps of its request body: everything but the bytes of images and documents.

An image or document sent inline (base64) is recorded as its type, media type and size, and an image's
width and height read from its header (PNG, GIF, JPEG, WebP); the data itself is never stored or shown.
A body still over ``MAX_STORED_BYTES`` once summarised is stored as the beginning of its JSON text, with a note.

Example:
    >>> body, notes = summarise({"messages": [{"role": "user", "content": [
    ...     {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGODlhAgADAAAAACw="}}]}]})
    >>> body["messages"][0]["content"][0]["source"]
    {'type': 'base64', 'media_type': 'image/gif', 'bytes': 14, 'width': 2, 'height': 3, 'data': '(not recorded)'}
"""
from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from typing import Any

MAX_STORED_BYTES = 1024 * 1024
HEADER_BYTES = 64 * 1024  # of an image's data decoded to find its size (a JPEG's frame header may follow its metadata)
BINARY_BLOCKS = ("image", "document")
RECORDED_HEADERS = ("anthropic-version", "anthropic-beta", "content-type")
KEY_HEADERS = ("x-api-key", "authorization")
RATE_LIMIT_PREFIX = "anthropic-ratelimit-"
KEY_MASK = "(not recorded)"  # what a call keeps of its key: which header carried one, never the value


def rate_limit_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """What a call keeps of the answer's headers besides its request-id: ``anthropic-ratelimit-*``, ``retry-after``
    and ``retry-after-ms``, as sent (each value at most 200 characters).

    Example:
        >>> rate_limit_headers({"Anthropic-Ratelimit-Requests-Remaining": "49", "retry-after": "7", "server": "x"})
        {'anthropic-ratelimit-requests-remaining': '49', 'retry-after': '7'}
    """
    return {str(k).lower(): str(v)[:200] for k, v in headers.items()
            if str(k).lower().startswith(RATE_LIMIT_PREFIX) or str(k).lower() in ("retry-after", "retry-after-ms")}


def request_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers a call keeps (lower-case names): the API version, betas and content type, and which header carried
    the key, as ``KEY_MASK``.

    Example:
        >>> request_headers({"X-Api-Key": "sk-ant-secret", "anthropic-version": "2023-06-01", "cookie": "a=b"})
        {'anthropic-version': '2023-06-01', 'x-api-key': '(not recorded)'}
    """
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    kept = {k: lower[k] for k in RECORDED_HEADERS if k in lower}
    kept.update({k: KEY_MASK for k in KEY_HEADERS if k in lower})
    return kept


def summarise(body: Any) -> tuple[Any, list[str]]:
    """The body to store and the notes on what was left out."""
    notes: list[str] = []
    count = [0]
    stored = _strip(body, count)
    if count[0]:
        notes.append(f"{count[0]} inline image(s) or document(s): recorded as type, media type and size; their data is not kept.")
    text = json.dumps(stored, ensure_ascii=False)
    if len(text.encode()) > MAX_STORED_BYTES:
        cut = text.encode()[:MAX_STORED_BYTES].decode("utf-8", "ignore")
        notes.append(f"The body took {len(text.encode()):,} bytes once summarised; the first {MAX_STORED_BYTES:,} bytes of its JSON are kept.")
        return {"truncated_json": cut}, notes
    return stored, notes


def _strip(value: Any, count: list[int]) -> Any:
    if isinstance(value, list):
        return [_strip(v, count) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("type") in BINARY_BLOCKS and isinstance(value.get("source"), dict) and "data" in value["source"]:
        count[0] += 1
        return {**{k: _strip(v, count) for k, v in value.items() if k != "source"}, "source": _source(value["source"])}
    return {k: _strip(v, count) for k, v in value.items()}


def _source(source: dict[str, Any]) -> dict[str, Any]:
    data = source.get("data")
    out = {k: v for k, v in source.items() if k != "data"}
    if isinstance(data, str) and source.get("type") == "base64":
        out["bytes"] = _decoded_size(data)
        size = image_size(_head(data))
        if size:
            out["width"], out["height"] = size
    elif isinstance(data, str):
        out["chars"] = len(data)
    out["data"] = "(not recorded)"
    return out


def _decoded_size(b64: str) -> int:
    n = len(b64.strip())
    return max(0, n * 3 // 4 - b64.rstrip().count("=", max(0, n - 2)))


def _head(b64: str) -> bytes:
    chunk = b64[:HEADER_BYTES // 3 * 4]
    try:
        return base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=False)
    except (binascii.Error, ValueError):
        return b""


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, GIF, JPEG or WebP; None if they do not say.

    Example:
        >>> image_size(b"\\x89PNG\\r\\n\\x1a\\n" + b"\\x00\\x00\\x00\\rIHDR" + (640).to_bytes(4, "big") + (480).to_bytes(4, "big"))
        (640, 480)
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return w, h
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        w, h = struct.unpack("<HH", head[6:10])
        return w, h
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        return _webp(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg(head)
    return None


def _webp(head: bytes) -> tuple[int, int] | None:
    kind = head[12:16]
    if kind == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(head[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", head[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None
