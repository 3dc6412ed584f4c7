"""``ws/inspect/<id>/``: a session's page hears of each call as it is recorded, without asking.

The proxy and an import ``announce`` a recorded call to the session's group on the channel layer; every
socket open on that session's page gets one small frame and reads the page again (the frame carries no
call data: the page's HTML is the one rendering of it). A burst of calls is one frame per ``COALESCE_S``
per socket, not one per call.

Frames to the browser:
    inspect.hello     on connect: {"calls": how many calls the session holds now}
    inspect.recorded  calls were recorded since the last frame: {"calls": how many}
    error             the API's error envelope: the client sent a frame (this socket only listens), or the
                      session is unknown, expired or was just deleted (then the socket closes, CLOSE_NOT_FOUND)
The client sends nothing. A frame from it is answered with an error; a flood closes the socket
(CLOSE_TRY_AGAIN_LATER); a channel layer that is down, CLOSE_LAYER_DOWN (the page then polls).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from explainer.inspect.models import Call, Session
from explainer.lifecycle.errors import APIError, invalid
from explainer.lifecycle.gateway import OpenCounts, too_many
from explainer.web.sockets import JsonFrameConsumer

log = logging.getLogger(__name__)
RECORDED = "inspect.recorded"  # the layer's message type (and the frame's): handled by ``inspect_recorded``
DELETED = "inspect.deleted"  # the session was deleted: ``inspect_deleted`` closes the socket
CLOSE_NOT_FOUND = 4404
CLOSE_LAYER_DOWN = 1011  # the server cannot serve this socket now; the page falls back to polling
COALESCE_S = 0.25  # a burst of calls reaches each page as one frame this long after its first call
MAX_FRAME_BYTES = 1024  # the client has nothing to say; what it sends anyway is refused, small
FRAMES_PER_10S = 10
ANNOUNCE_TIMEOUT_S = 2.0
open_sockets = OpenCounts()  # per client address, in this process


def group(session_id: str) -> str:
    """The session's group on the channel layer: a digest, so the session's id (its only key) is no layer's key name."""
    return "inspect." + hashlib.sha256(session_id.encode()).hexdigest()[:40]


async def announce(session_id: str, calls: int = 1) -> None:
    """Tell the pages open on this session that ``calls`` calls were recorded. Never raises, and gives up after
    ``ANNOUNCE_TIMEOUT_S``: a layer that is down or slow (Redis) costs the pages their live update (they poll),
    never the call its answer or its record."""
    await _group_send(session_id, {"type": RECORDED, "calls": calls})


async def announce_deleted(session_id: str) -> None:
    """Tell the pages open on this session that it was deleted: their sockets close with CLOSE_NOT_FOUND."""
    await _group_send(session_id, {"type": DELETED})


async def _group_send(session_id: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await asyncio.wait_for(layer.group_send(group(session_id), message), ANNOUNCE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 (any failure of the layer's backend, or its timeout)
        log.warning("inspector: could not tell session %s…'s pages on the channel layer", session_id[:6], exc_info=True)


_announcing: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references to tasks


def announce_soon(session_id: str, calls: int = 1) -> None:
    """``announce`` without waiting for it: the proxy's caller gets its answer whatever the layer does."""
    task = asyncio.get_running_loop().create_task(announce(session_id, calls))
    _announcing.add(task)
    task.add_done_callback(_announcing.discard)


def _live_count(session_id: str) -> int | None:
    if not Session.objects.filter(id=session_id[:32], expires_at__gt=timezone.now()).exists():
        return None
    return Call.objects.filter(session_id=session_id[:32]).count()


class SessionConsumer(JsonFrameConsumer):
    close_on_flood = True
    explain_bad_json = False

    async def connect(self) -> None:
        self.session_id = str(self.scope["url_route"]["kwargs"]["session_id"])[:32]
        self.pending = 0
        self.flush: asyncio.Task[None] | None = None
        self.joined = False
        cap = settings.EXPLAINER_WS_SOCKETS_PER_ADDRESS
        if not await self.accept_counted(open_sockets, cap, too_many(
                f"Too many open sockets from this address: at most {cap}. Close a page and reload.", 5)):
            return
        count = await database_sync_to_async(_live_count)(self.session_id)
        if count is None:
            await self.send_error(APIError("not_found_error", "No such inspector session: it does not exist, has expired, or was deleted."))
            await self.close(CLOSE_NOT_FOUND)
            return
        try:
            await self.channel_layer.group_add(group(self.session_id), self.channel_name)
        except Exception:  # noqa: BLE001 (the layer's backend, Redis, is down): the page polls instead
            log.warning("inspector: a session's page could not join its group on the channel layer", exc_info=True)
            await self.close(CLOSE_LAYER_DOWN)
            return
        self.joined = True
        await self.send_json({"type": "inspect.hello", "calls": count})

    async def disconnect(self, code: int) -> None:
        if self.flush is not None:
            self.flush.cancel()
        if self.joined:
            self.joined = False
            await self.channel_layer.group_discard(group(self.session_id), self.channel_name)
        self.release_count()

    def frame_limits(self) -> tuple[int, int]:
        return MAX_FRAME_BYTES, FRAMES_PER_10S

    async def on_frame(self, frame: Any) -> None:
        raise invalid("This socket only listens: calls recorded in the session arrive here; nothing is read from the page.")

    async def inspect_recorded(self, message: dict[str, Any]) -> None:
        n = message.get("calls")
        self.pending += n if isinstance(n, int) and 0 < n < 1_000_000 else 1
        if self.flush is None or self.flush.done():
            self.flush = asyncio.create_task(self._flush())

    async def inspect_deleted(self, message: dict[str, Any]) -> None:
        await self.send_error(APIError("not_found_error", "This inspector session was deleted."))
        await self.close(CLOSE_NOT_FOUND)

    async def _flush(self) -> None:
        await asyncio.sleep(COALESCE_S)
        n, self.pending = self.pending, 0
        await self.send_json({"type": RECORDED, "calls": n})
