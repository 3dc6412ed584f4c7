"""``ws/stream/``: send a Messages API request body, receive the stream events as JSON frames.

Frames from the browser:
    a Messages API body   {"model": ..., "max_tokens": ..., "messages": [...], ...}
                          optionally with "explainer": {"seed": int, "pace_ms": int}
    {"type": "cancel"}    stop the running request

Frames to the browser: ``explainer.hello`` on connect; then per request the engine's
events (API stream events with their API ``type``, plus ``explainer.*`` frames);
errors as the API's envelope ``{"type": "error", "error": {...}}``. An error never
closes the socket.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from explainer.lifecycle import jsonlimits
from explainer.lifecycle.engine import BUNDLED_MODEL_NAME
from explainer.lifecycle.errors import APIError, invalid
from explainer.lifecycle.gateway import OpenCounts, too_many
from explainer.lifecycle.payload import parse_request
from explainer.web.runner import run_events
from explainer.web.sockets import CLOSE_TRY_AGAIN_LATER, MAX_PACE_MS, DirectDispatch, client_address



def _options(raw) -> tuple[int, int]:
    if raw is None:
        return 0, 0
    if not isinstance(raw, dict):
        raise invalid("explainer: Input should be an object")
    seed, pace = raw.get("seed", 0), raw.get("pace_ms", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not (0 <= seed < 2**32):
        raise invalid("explainer.seed: Input should be an integer from 0 to 4294967295")
    if not isinstance(pace, int) or isinstance(pace, bool) or not (0 <= pace <= MAX_PACE_MS):
        raise invalid(f"explainer.pace_ms: Input should be an integer from 0 to {MAX_PACE_MS}")
    return seed, pace


# Per client address in this process: open stream sockets, and runs at once on them.
open_sockets = OpenCounts()
open_runs = OpenCounts()


class StreamConsumer(DirectDispatch, AsyncWebsocketConsumer):
    # This socket talks to nobody but its own client: it needs no channel layer, so it keeps
    # working when the layer's Redis is down (rooms need it; this page does not).
    channel_layer_alias = "__no_layer__"

    async def connect(self):
        self.task: asyncio.Task | None = None
        self.running = False
        self.cancel = threading.Event()
        self.recent: deque[float] = deque()
        self.addr = client_address(self.scope)
        self.counted = open_sockets.acquire(self.addr, settings.EXPLAINER_WS_SOCKETS_PER_ADDRESS)
        await self.accept()
        if not self.counted:
            cap = settings.EXPLAINER_WS_SOCKETS_PER_ADDRESS
            await self.send_error(too_many(f"Too many open stream sockets from this address: at most {cap}. Close one and retry.", 5))
            await self.close(CLOSE_TRY_AGAIN_LATER)
            return
        await self.send_json({
            "type": "explainer.hello", "model": BUNDLED_MODEL_NAME,
            "limits": {"max_frame_bytes": settings.EXPLAINER_WS_MAX_FRAME_BYTES,
                       "frames_per_10s": settings.EXPLAINER_WS_FRAMES_PER_10S},
        })

    async def disconnect(self, code):
        self.cancel.set()
        if self.task:
            self.task.cancel()
        if getattr(self, "counted", False):
            self.counted = False
            open_sockets.release(self.addr)

    async def send_json(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    async def send_error(self, exc: APIError) -> None:
        body = exc.body()
        if "retry-after" in exc.headers:  # a socket has no headers: the wait travels in the frame
            body["retry_after"] = int(exc.headers["retry-after"])
        await self.send_json(body)

    def _flooding(self) -> bool:
        now = time.monotonic()
        while self.recent and now - self.recent[0] > 10:
            self.recent.popleft()
        self.recent.append(now)
        return len(self.recent) > settings.EXPLAINER_WS_FRAMES_PER_10S

    async def receive(self, text_data=None, bytes_data=None):
        try:
            await self._receive(text_data, bytes_data)
        except APIError as exc:
            await self.send_error(exc)

    async def _receive(self, text_data, bytes_data):
        if self._flooding():
            raise APIError("rate_limit_error", f"Too many frames: at most {settings.EXPLAINER_WS_FRAMES_PER_10S} per 10 seconds on one socket.")
        if text_data is None:
            raise invalid("Send JSON as text frames, not binary frames.")
        limit = settings.EXPLAINER_WS_MAX_FRAME_BYTES
        if len(text_data) > limit or len(text_data.encode("utf-8", "surrogatepass")) > limit:
            raise APIError("request_too_large", f"Frame is larger than the limit of {limit} bytes.")
        try:
            frame = jsonlimits.loads(text_data)
        except jsonlimits.TooDeep as exc:
            raise invalid(f"The frame is nested too deeply: {exc}.") from None
        except ValueError as exc:
            raise invalid(f"The frame is not valid JSON: {exc}") from None
        if isinstance(frame, dict) and frame.get("type") == "cancel":
            self.cancel.set()
            if self.task:
                self.task.cancel()
            self.running = False
            return
        if self.running:
            raise invalid("A request is already running on this socket: wait for message_stop or send {\"type\": \"cancel\"}.")
        if isinstance(frame, dict):
            seed, pace = _options(frame.pop("explainer", None))
        else:
            seed, pace = 0, 0
        req = parse_request(frame)
        self.cancel = threading.Event()
        self.running = True
        self.task = asyncio.create_task(self._run(req, seed, pace, self.cancel))

    async def _run(self, req, seed, pace_ms, cancel):
        cap = settings.EXPLAINER_WS_RUNS_PER_ADDRESS
        if not open_runs.acquire(self.addr, cap):
            self.running = False
            await self.send_error(too_many(f"Too many requests running at once from this address: at most {cap}. "
                                           "Wait for one to finish.", 2))
            return
        lock, released = threading.Lock(), []

        def release() -> None:  # once: when the engine stops (its thread), or when this task ends
            with lock:
                if not released:
                    released.append(True)
                    open_runs.release(self.addr)
        try:
            async for event in run_events(req, seed, cancel, finished=release):
                if event["type"] in ("explainer.done", "error"):
                    # the client may send the next request as soon as it sees this frame, so the
                    # run stops counting against its address before the frame leaves
                    release()
                    self.running = False
                await self.send_json(event)
                if pace_ms and event["type"] == "explainer.token":
                    await asyncio.sleep(pace_ms / 1000)
        finally:
            release()
            self.running = False
