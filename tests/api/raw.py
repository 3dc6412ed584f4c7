"""Plain HTTP for tests that must send what no SDK would (broken bodies, missing keys)."""
from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Response:
    status_code: int
    headers: dict
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def request(method: str, url: str, content: bytes | None = None, json_body=None, headers: dict | None = None, timeout: float = 60) -> Response:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    h = {k.lower(): v for k, v in (headers or {}).items()}
    if json_body is not None:
        content = json.dumps(json_body).encode()
        h.setdefault("content-type", "application/json")
    conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=content, headers=h)
    r = conn.getresponse()
    resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    conn.close()
    return resp
