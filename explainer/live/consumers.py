"""``ws/stream/``: send a Messages API request body, receive the stream events as JSON frames.

Frames from the browser:
    a Messages API body   {"model": ..., "max_tokens": ..., "messages": [...], ...}
                          optionally with "explainer": {"seed": int, "pace_ms": int}
    {"type": "cancel"}    stop the running request

Frames to the browser: ``explainer.hello`` on connect; then per request the engine's
events (API stream events with their API ``type``, plus ``explainer.*`` frames);
errors as the API's envelope ``{"type": "error", "error": {...}}``. An error never
closes the socket. The frames both ways are declared in explainer/lifecycle/frames.py
(``StreamFrame``, ``StreamCommand``).
"""
from __future__ import annotations

import asyncio
import threading

from django.conf import settings

from explainer.lifecycle import frames as fr
from explainer.lifecycle.engine import BUNDLED_MODEL_NAME
from explainer.lifecycle.errors import invalid
from explainer.lifecycle.gateway import OpenCounts, too_many
from explainer.lifecycle.payload import parse_request
from explainer.web.runner import catalog, run_events
from explainer.web.sockets import MAX_PACE_MS, JsonFrameConsumer


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


class StreamConsumer(JsonFrameConsumer):
    # This socket talks to nobody but its own client: it needs no channel layer, so it keeps
    # working when the layer's Redis is down (rooms need it; this page does not).
    channel_layer_alias = "__no_layer__"

    async def connect(self):
        self.task: asyncio.Task | None = None
        self.running = False
        self.cancel = threading.Event()
        cap = settings.EXPLAINER_WS_SOCKETS_PER_ADDRESS
        if not await self.accept_counted(open_sockets, cap, too_many(
                f"Too many open stream sockets from this address: at most {cap}. Close one and retry.", 5)):
            return
        await self.send_json(fr.Hello(
            # Each run's explainer.prompt frame names the model that serves it; these are the choices.
            type=fr.HELLO, default_model=BUNDLED_MODEL_NAME,
            local_models=await asyncio.to_thread(catalog().names),  # a directory listing: not on the event loop
            limits=fr.SocketLimits(max_frame_bytes=settings.EXPLAINER_WS_MAX_FRAME_BYTES,
                                   frames_per_10s=settings.EXPLAINER_WS_FRAMES_PER_10S),
        ))

    async def disconnect(self, code):
        self.cancel.set()
        if self.task:
            self.task.cancel()
        self.release_count()

    def frame_limits(self) -> tuple[int, int]:
        return settings.EXPLAINER_WS_MAX_FRAME_BYTES, settings.EXPLAINER_WS_FRAMES_PER_10S

    async def on_frame(self, frame) -> None:
        if isinstance(frame, dict) and frame.get("type") == fr.CANCEL:
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
                if event["type"] in (fr.DONE, fr.ERROR):
                    # the client may send the next request as soon as it sees this frame, so the
                    # run stops counting against its address before the frame leaves
                    release()
                    self.running = False
                await self.send_json(event)
                if pace_ms and event["type"] == fr.TOKEN:
                    await asyncio.sleep(pace_ms / 1000)
        finally:
            release()
            self.running = False
