"""What the two WebSocket consumers (``ws/stream/`` in live, ``ws/rooms/<code>/`` in rooms) share:
:class:`JsonFrameConsumer`, a socket of JSON text frames with the checks every frame goes through.

It is also the one place where this project replaces Channels internals (see "Channels internals"
below; tests/test_sockets.py fails when Channels changes what is replaced here).
"""
from __future__ import annotations

import json
import time
from collections import deque

from autobahn.exception import Disconnected  # what Daphne's WebSocket protocol raises on a send after close
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from explainer.lifecycle.errors import APIError, invalid
from explainer.lifecycle.gateway import OpenCounts
from explainer.llm import jsonlimits

MAX_PACE_MS = 2000  # the slowest replay a socket may ask for, a token every 2 s
CLOSE_TRY_AGAIN_LATER = 4429  # an application close code: a limit, not an error (1013 is not sendable by browsers' peers)
FLOOD_WINDOW_S = 10  # frame limits count the frames of the last 10 seconds

# The Channels release whose AsyncConsumer.dispatch and AsyncWebsocketConsumer.websocket_disconnect
# JsonFrameConsumer replaces (pyproject.toml pins it; tests/test_sockets.py checks both).
CHANNELS_CHECKED = "4.3.2"


def client_address(scope) -> str:
    return (scope.get("client") or ["?"])[0] or "?"


class JsonFrameConsumer(AsyncWebsocketConsumer):
    """A socket whose client sends JSON objects as text frames, and gets JSON frames back.

    Every frame from the client is checked here, in this order, before :meth:`on_frame` sees it:
    the socket's frame limit (``frame_limits()``: at most N frames per 10 seconds; past it a
    ``rate_limit_error``, and with ``close_on_flood``, past twice the limit, an error and
    CLOSE_TRY_AGAIN_LATER), text rather than binary, the size limit in bytes
    (``request_too_large``), and JSON that parses within jsonlimits' depth. A refused frame, and
    an :class:`APIError` raised by ``on_frame``, is answered with the API's error envelope; the
    socket stays open.

    Subclasses provide ``frame_limits()`` and ``on_frame()``, and may admit sockets per client
    address with :meth:`accept_counted` (then they call :meth:`release_count` in ``disconnect``).
    """

    close_on_flood = False  # past twice the frame limit: close the socket (a person clicking never gets there)
    explain_bad_json = True  # say where the JSON parser stopped ("Expecting value: line 1 column 1 (char 0)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counted = False
        self._counts: OpenCounts | None = None
        self._recent: deque[float] = deque()

    @property
    def addr(self) -> str:
        """The client's address, as the per-address limits count it."""
        return client_address(self.scope)

    # ---- what subclasses provide ----------------------------------------------------------------

    def frame_limits(self) -> tuple[int, int]:
        """(the largest frame in bytes, frames per 10 seconds) for this socket now."""
        raise NotImplementedError

    def listening(self) -> bool:
        """Whether frames from the client are read at all (a refused socket ignores them)."""
        return True

    async def on_frame(self, frame) -> None:
        """One checked frame (any JSON value). Raise APIError to answer with an error frame."""
        raise NotImplementedError

    # ---- sending -------------------------------------------------------------------------------

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        """A frame for a socket that has just closed (the client left, or the server closed it while a
        room message was on its way) is dropped: nobody can read it, and Daphne would raise."""
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Disconnected:
            pass

    async def send_json(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    async def send_error(self, exc: APIError) -> None:
        body = exc.body()
        if "retry-after" in exc.headers:  # a socket has no headers: the wait travels in the frame
            body["retry_after"] = int(exc.headers["retry-after"])
        await self.send_json(body)

    # ---- admitting sockets per client address ----------------------------------------------------

    async def accept_counted(self, counts: OpenCounts, cap: int, refusal: APIError) -> bool:
        """Accept the socket, counted against its client's address in ``counts``. Past ``cap`` the
        client is told ``refusal`` and the socket is closed with CLOSE_TRY_AGAIN_LATER: False."""
        self._counts = counts
        self.counted = counts.acquire(self.addr, cap)
        await self.accept()
        if not self.counted:
            await self.send_error(refusal)
            await self.close(CLOSE_TRY_AGAIN_LATER)
        return self.counted

    def release_count(self) -> None:
        """The socket no longer counts against its address (safe to call more than once)."""
        if self.counted:
            self.counted = False
            self._counts.release(self.addr)

    # ---- frames from the client ----------------------------------------------------------------

    def _frames_in_window(self) -> int:
        """Count this frame; the frames of the last FLOOD_WINDOW_S seconds, this one included."""
        now = time.monotonic()
        while self._recent and now - self._recent[0] > FLOOD_WINDOW_S:
            self._recent.popleft()
        self._recent.append(now)
        return len(self._recent)

    def read_frame(self, text_data, max_bytes: int):
        """The JSON value of one text frame, or an APIError that says what is wrong with it."""
        if text_data is None:
            raise invalid("Send JSON as text frames, not binary frames.")
        if len(text_data) > max_bytes or len(text_data.encode("utf-8", "surrogatepass")) > max_bytes:
            raise APIError("request_too_large", f"Frame is larger than the limit of {max_bytes} bytes.")
        try:
            return jsonlimits.loads(text_data)
        except jsonlimits.TooDeep as exc:
            raise invalid(f"The frame is nested too deeply: {exc}.") from None
        except ValueError as exc:
            raise invalid(f"The frame is not valid JSON: {exc}" if self.explain_bad_json
                          else "The frame is not valid JSON.") from None

    async def receive(self, text_data=None, bytes_data=None):
        if not self.listening():
            return
        max_bytes, per_10s = self.frame_limits()
        n = self._frames_in_window()
        if self.close_on_flood and n > 2 * per_10s:  # not a person clicking
            await self.send_error(APIError("rate_limit_error", "Too many frames; the socket is closed."))
            await self.close(CLOSE_TRY_AGAIN_LATER)
            return
        try:
            if n > per_10s:
                raise APIError("rate_limit_error", f"Too many frames: at most {per_10s} per 10 seconds on one socket.")
            await self.on_frame(self.read_frame(text_data, max_bytes))
        except APIError as exc:
            await self.send_error(exc)

    # ---- Channels internals ----------------------------------------------------------------------
    #
    # Channels' consumers run ``aclose_old_connections()`` (Django's ``close_old_connections`` in a
    # worker thread, through sync_to_async) before every message they dispatch, and again after
    # disconnect(), to recycle database connections. Our handlers reach the database only through
    # ``database_sync_to_async``, which does that itself around each call, so the extra thread hop
    # per message (per student, per token, in a classroom room) bought nothing and was most of a
    # broadcast's cost (bench/classroom.py measures it). The two methods below are Channels' own,
    # as of CHANNELS_CHECKED, minus that call; tests/test_sockets.py compares them with the
    # installed Channels' source and fails when Channels changes them.

    async def dispatch(self, message):
        # channels.consumer.AsyncConsumer.dispatch, minus ``await aclose_old_connections()``
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message):
        # channels.generic.websocket.AsyncWebsocketConsumer.websocket_disconnect, minus
        # ``await aclose_old_connections()`` after disconnect() (and the InvalidChannelLayerError
        # rewording: our consumers either have a layer with groups or no groups at all)
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message["code"])
        raise StopConsumer()
