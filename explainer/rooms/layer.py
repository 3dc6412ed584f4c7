"""A room's channel layer (Redis, with several processes) and what happens when it is unreachable.

Every call a room socket makes on the layer goes through :class:`GuardedLayer`, which turns the
backend's errors into :class:`LayerDown`. One :class:`LayerHealth` per process then tells every open
room socket (``room.interrupted``, then close with 4503, and the page reconnects) and checks the
backend every PROBE_INTERVAL seconds until it answers again. While it is down, the repeats of the
channels_redis errors are logged once a minute, not once per message (:class:`_QuietOutage`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from typing import TYPE_CHECKING

from explainer.lifecycle import frames as fr
from explainer.lifecycle import room_frames as rf

if TYPE_CHECKING:
    from explainer.rooms.consumers import RoomConsumer

log = logging.getLogger("explainer.rooms.consumers")


# ---- the channel layer's backend (Redis) unreachable ---------------------------------------------
#
# With REDIS_URL the layer is channels_redis's pub/sub layer: while Redis is down every layer call
# raises (redis' ConnectionError, or an OSError/TimeoutError from the socket), and the layer's own
# receive task only logs. A room socket can then neither hear its room nor speak to it. Such a
# socket is told so (``room.interrupted``) and closed with CLOSE_INTERRUPTED, its run is stopped,
# and the client reconnects; the room itself lives in the database and is still there.

try:
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
    LAYER_UNREACHABLE: tuple[type[BaseException], ...] = (_RedisConnectionError, _RedisTimeoutError, OSError, asyncio.TimeoutError)
except ImportError:  # no Redis client installed: only the in-process layer can be in use
    LAYER_UNREACHABLE = (OSError, asyncio.TimeoutError)

CLOSE_INTERRUPTED = 4503
INTERRUPTED_RETRY_AFTER = 2  # seconds: the client's first reconnect waits this long (plus jitter)
INTERRUPTED_MESSAGE = ("The room's connection between servers was lost, so this page stopped receiving the room; "
                       "reconnecting…")
PROBE_INTERVAL = 1.0  # seconds between checks that the layer's backend answers, while room sockets are open
PROBE_TIMEOUT = 5.0   # a check that takes longer counts as unreachable (a dropped network rather than a refused port)
PROBE_GROUP = "rooms.probe"  # a group nobody joins: sending to it is a round trip to the backend and nothing else


class LayerDown(Exception):
    """A channel-layer call failed because the layer's backend is unreachable (``__cause__`` says how)."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where

    def describe(self) -> str:
        cause = self.__cause__
        return f"{self.where}: {type(cause).__name__}: {cause}" if cause else self.where


def _layer_down(where: str, cause: BaseException) -> LayerDown:
    exc = LayerDown(where)
    exc.__cause__ = cause
    return exc


class GuardedLayer:
    """A room socket's view of the channel layer: the same calls, except that "the backend is
    unreachable" comes out as :class:`LayerDown` (which the consumer handles) instead of whichever
    error the backend raised (which would end the socket with 1011 and a traceback)."""

    def __init__(self, layer):
        self._layer = layer

    def __getattr__(self, name):
        return getattr(self._layer, name)

    async def _call(self, name: str, *args, **kwargs):
        try:
            return await getattr(self._layer, name)(*args, **kwargs)
        except LAYER_UNREACHABLE as exc:
            raise _layer_down(name, exc) from exc

    async def new_channel(self, *args, **kwargs):
        if layer_health().down:  # refused at once, without another connection attempt per client retry
            raise LayerDown("new_channel (the layer is known to be unreachable)")
        return await self._call("new_channel", *args, **kwargs)

    async def receive(self, channel):
        return await self._call("receive", channel)

    async def send(self, channel, message):
        return await self._call("send", channel, message)

    async def group_add(self, group, channel):
        return await self._call("group_add", group, channel)

    async def group_send(self, group, message):
        return await self._call("group_send", group, message)

    async def group_discard(self, group, channel):
        # clean-up on the way out never fails the socket; the layer forgets the channel locally either way
        try:
            await self._call("group_discard", group, channel)
        except LayerDown as exc:
            layer_health().report(exc)


def _probed(layer) -> bool:
    """Whether a layer can lose its backend (then it is checked while room sockets are open)."""
    return type(layer).__module__.startswith("channels_redis")


class LayerHealth:
    """Per event loop: whether the channel layer's backend is reachable, and the room sockets that
    depend on it. A socket that only listens makes no layer call of its own, so while room sockets
    are open a probe sends to an empty group every PROBE_INTERVAL; the first failure anywhere (the
    probe, a broadcast, a join) logs one warning and interrupts every room socket of this process.
    While the backend is down new room sockets are refused the same way, until the probe gets an answer."""

    def __init__(self):
        self.down = False
        self.sockets: set[RoomConsumer] = set()
        self.probe: asyncio.Task | None = None
        self.layer = None
        self.tasks: set[asyncio.Task] = set()

    def watch(self, consumer: RoomConsumer, layer) -> None:
        self.sockets.add(consumer)
        if layer is not None:
            self.layer = layer
            if _probed(layer):
                self._ensure_probe()

    def unwatch(self, consumer: RoomConsumer) -> None:
        self.sockets.discard(consumer)

    def _ensure_probe(self) -> None:
        if self.layer is not None and (self.probe is None or self.probe.done()):
            self.probe = asyncio.get_running_loop().create_task(self._probe_loop())

    def _probing(self) -> bool:
        # while down, any layer is probed (the probe is what lets sockets in again)
        return self.down or (bool(self.sockets) and _probed(self.layer))

    def report(self, exc: LayerDown) -> None:
        if not self.down:
            self.down = True
            joined = [c for c in self.sockets if c.joined]
            log.warning("Room channel layer unreachable (%s): closing %d room socket(s) of this process with %d; "
                        "clients reconnect", exc.describe(), len(joined), CLOSE_INTERRUPTED)
        for c in list(self.sockets):
            if c.joined and not c.interrupted:
                task = asyncio.get_running_loop().create_task(c.interrupt(exc))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        self._ensure_probe()

    async def _probe_loop(self) -> None:
        while self._probing():
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                await asyncio.wait_for(self.layer.group_send(PROBE_GROUP, {"type": "rooms.probe"}), PROBE_TIMEOUT)
            except LAYER_UNREACHABLE as exc:
                self.report(_layer_down("probe", exc))
            except Exception:  # not an outage: keep probing, but say what happened
                log.exception("Room channel layer probe failed")
            else:
                if self.down:
                    self.down = False
                    log.warning("Room channel layer reachable again: room sockets are accepted")


_health: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LayerHealth] = weakref.WeakKeyDictionary()


def layer_health() -> LayerHealth:
    loop = asyncio.get_running_loop()
    h = _health.get(loop)
    if h is None:
        h = _health[loop] = LayerHealth()
    return h


class _QuietOutage(logging.Filter):
    """channels_redis logs a full traceback each time its receive task or a clean-up meets an
    unreachable Redis (every second while it is down). The outage is reported above, once: keep
    the library's records to one line each, at most once a minute per message."""

    def __init__(self):
        super().__init__()
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, LAYER_UNREACHABLE):
            return True
        msg, now = record.getMessage(), time.monotonic()
        if now - self.last.get(msg, float("-inf")) < 60:
            return False
        self.last[msg] = now
        record.msg, record.args = f"{msg} ({type(exc).__name__}: {exc}; repeats are not logged for a minute)", ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


for _name in ("channels_redis.pubsub", "channels_redis.core"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _QuietOutage) for f in _logger.filters):
        _logger.addFilter(_QuietOutage())


async def refuse_interrupted(receive, send) -> None:
    """No channel for this socket (the layer is unreachable): accept the handshake only to say so."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(interrupted_frame(), ensure_ascii=False)})
    await send({"type": "websocket.close", "code": CLOSE_INTERRUPTED})


def interrupted_frame() -> rf.RoomInterrupted:
    return rf.RoomInterrupted(type=fr.ROOM_INTERRUPTED, message=INTERRUPTED_MESSAGE, retry_after=INTERRUPTED_RETRY_AFTER)
