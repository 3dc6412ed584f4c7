"""A classroom seen from outside: start a room over HTTP and connect real WebSocket clients,
as a browser would (used by the multi-process test and bench/classroom.py)."""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import CookieJar

import websockets

SLIM = ("type", "run_id", "index", "token", "text", "seq", "src")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def start_room(base_url: str) -> tuple[str, str]:
    """POST the "Start a room" form like a browser (CSRF cookie and token); return (code, secret)."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    html = opener.open(f"{base_url}/rooms/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    req = urllib.request.Request(f"{base_url}/rooms/new", data=f"csrfmiddlewaretoken={token}".encode(), method="POST",
                                 headers={"Referer": f"{base_url}/rooms/", "Origin": base_url,
                                          "Content-Type": "application/x-www-form-urlencoded"})
    try:
        opener.open(req)
    except urllib.error.HTTPError as exc:
        if exc.code != 303:
            raise
        location = exc.headers["Location"]
    m = re.fullmatch(r"/rooms/(\w+)/present#k=([\w-]+)", location)
    return m.group(1), m.group(2)


def ws_url(base_url: str, code: str) -> str:
    return base_url.replace("http://", "ws://") + f"/ws/rooms/{code}/"


@dataclass
class Student:
    ws: object
    frames: list = field(default_factory=list)
    lags: list = field(default_factory=list)  # seconds from the presenter's broadcast to arrival, per token

    async def read_until(self, predicate, timeout: float = 60.0) -> dict:
        async def loop():
            while True:
                f = json.loads(await self.ws.recv())
                if f["type"] == "room.token":
                    self.lags.append(time.time() - f["t"])
                    f = {k: f[k] for k in SLIM}  # hundreds of students' candidates would only feed the collector
                self.frames.append(f)
                if predicate(f):
                    return f
        return await asyncio.wait_for(loop(), timeout)


async def connect_student(base_url: str, code: str) -> Student:
    ws = await websockets.connect(ws_url(base_url, code), origin=base_url, max_queue=None, open_timeout=60)
    s = Student(ws)
    hello = await s.read_until(lambda f: f["type"] == "room.hello")
    assert hello["role"] == "student", hello
    return s


async def connect_presenter(base_url: str, code: str, secret: str):
    ws = await websockets.connect(ws_url(base_url, code), origin=base_url, max_queue=None)
    json.loads(await ws.recv())  # hello as a student
    await ws.send(json.dumps({"type": "auth", "secret": secret}))
    while True:
        f = json.loads(await ws.recv())
        if f["type"] == "room.hello":
            assert f["role"] == "presenter", f
            return ws


async def wait_for_students(presenter, n: int, timeout: float = 60.0) -> None:
    async def loop():
        while True:
            f = json.loads(await presenter.recv())
            if f["type"] == "room.students" and f["count"] >= n:
                return
    await asyncio.wait_for(loop(), timeout)


def check_in_order(frames: list[dict]) -> list[dict]:
    """The run's frames from one presenter connection, asserting consecutive ``seq``; returns the tokens."""
    seqs = [f["seq"] for f in frames if "seq" in f]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a frame was lost or reordered"
    tokens = [f for f in frames if f["type"] == "room.token"]
    assert [t["index"] for t in tokens] == list(range(len(tokens)))
    return tokens


async def until_closed(ws, timeout: float = 10.0) -> tuple[list[dict], int | None]:
    """Read a socket until the server closes it: (the frames on the way, the close code)."""
    frames: list[dict] = []

    async def loop():
        try:
            async for raw in ws:
                frames.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
    await asyncio.wait_for(loop(), timeout)
    return frames, ws.close_code
