"""``ws/rooms/<code>/``: one socket per person in a classroom room.

Everyone connects as a student. A socket that sends the room's secret
(``{"type": "auth", "secret": ...}``) becomes a presenter, and only a presenter's
commands do anything; a student's socket can only send a guess.

Frames to the browser (JSON text):
    room.hello     on connect: role, code, the stage the presenter is on, limits
    room.state     the presenter moved: {"state": {"slug", "href", "title"}}
    room.run       a run started ("phase": "start") or ended ("phase": "end")
    room.token     one generated token with its top candidates
    room.guess     "guess the next token" is open: the choices to pick from
    room.reveal    the class's guesses beside the model's distribution, and the model's draw
    room.students  (presenter only) how many students are connected, and the nicknames of the first
                   SHOWN_NAMES of them: {"count", "names": [str], "more": named students not listed}
    room.tally     (presenter only) the guesses so far
    room.answers   (presenter only) while a guess is open: {"index", "answered", "connected"}, how many of
                   the connected students have answered (sent as guesses arrive, debounced)
    room.nickname  (student only) the nickname the server accepted for this socket: {"name": str | null}
    room.ended     the presenter ended the room
    error          the API's error envelope; the socket stays open unless it says otherwise
    room.interrupted  the channel layer (Redis) is unreachable: {"message", "retry_after"}; the socket
                   then closes with 4503 and the client reconnects after retry_after seconds
Every broadcast frame carries ``seq`` (consecutive per presenter connection ``src``), so a
client can tell that nothing was lost or reordered.

Frames from a presenter: auth, state {href}, run {pace_ms?}, pause, play, step, pace {pace_ms},
guess, reveal, stop, end. From a student: guess {text}, nickname {name} (optional, never required;
checked by rooms.clean_nickname, kept in this socket's memory only, at most NICKNAME_CHANGES per minute).
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import weakref
from collections import Counter, deque

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from explainer.lifecycle import jsonlimits
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.gateway import OpenCounts
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import ScenarioError
from explainer.web.sockets import DirectDispatch
from explainer.web.runner import run_events
from explainer.rooms import rooms
from explainer.rooms.models import Room

log = logging.getLogger(__name__)
PRESENTER_COMMANDS = ("state", "run", "pause", "play", "step", "pace", "guess", "reveal", "stop", "end")
DEFAULT_PACE_MS = 300
MAX_PACE_MS = 2000
CHOICES = 8          # tokens a student can pick from when guessing
MAX_GUESS_CHARS = 40
SHOWN_GUESSES = 12   # bars in the class histogram; the rest are summed as "other"
SHOWN_NAMES = 60    # nicknames in one room.students frame; the rest are counted in "more"
NICKNAME_CHANGES = 5  # per socket per minute, on top of the frame limit: names flickering on the projector help nobody
CLOSE_NOT_FOUND, CLOSE_FLOOD, CLOSE_ENDED = 4404, 4429, 4410
open_room_sockets = OpenCounts()  # per client address, in this process


def _err(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _pace(raw) -> int:
    if raw is None:
        return DEFAULT_PACE_MS
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= MAX_PACE_MS:
        raise APIError("invalid_request_error", f"pace_ms: an integer from 0 to {MAX_PACE_MS}")
    return raw


def _norm(text: str) -> str:
    return text.strip().casefold()


def tally(guesses: dict[str, str], candidates: list[dict]) -> tuple[list[dict], int]:
    """The class's guesses as histogram bars. A typed guess counts for the model's candidate
    it matches when spaces and case are ignored (students type "the", the token is " the")."""
    by_norm: dict[str, str] = {}
    for c in candidates:
        by_norm.setdefault(_norm(c["text"]), c["text"])
    counts = Counter(by_norm.get(_norm(g), g.strip()) for g in guesses.values())
    bars = [{"text": t, "count": n} for t, n in counts.most_common(SHOWN_GUESSES)]
    other = sum(counts.values()) - sum(b["count"] for b in bars)
    if other:
        bars.append({"text": None, "count": other})
    return bars, sum(counts.values())


# ---- the channel layer's backend (Redis) unreachable ---------------------------------------------
#
# With REDIS_URL the layer is channels_redis's pub/sub layer: while Redis is down every layer call
# raises (redis' ConnectionError, or an OSError/TimeoutError from the socket), and the layer's own
# receive task only logs. A room socket can then neither hear its room nor speak to it. Such a
# socket is told so (``room.interrupted``) and closed with CLOSE_INTERRUPTED, its run is stopped,
# and the client reconnects; the room itself lives in the database and is still there.

try:
    from redis.exceptions import ConnectionError as _RedisConnectionError, TimeoutError as _RedisTimeoutError
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


class _GuardedLayer:
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

    def watch(self, consumer: "RoomConsumer", layer) -> None:
        self.sockets.add(consumer)
        if layer is not None:
            self.layer = layer
            if _probed(layer):
                self._ensure_probe()

    def unwatch(self, consumer: "RoomConsumer") -> None:
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


_health: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LayerHealth]" = weakref.WeakKeyDictionary()


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


async def _refuse_interrupted(receive, send) -> None:
    """No channel for this socket (the layer is unreachable): accept the handshake only to say so."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(_interrupted_frame(), ensure_ascii=False)})
    await send({"type": "websocket.close", "code": CLOSE_INTERRUPTED})


def _interrupted_frame() -> dict:
    return {"type": "room.interrupted", "message": INTERRUPTED_MESSAGE, "retry_after": INTERRUPTED_RETRY_AFTER}


class RoomConsumer(DirectDispatch, AsyncWebsocketConsumer):
    # ---- the channel layer, and losing it (see LayerHealth) ------------------------------------

    @property
    def channel_layer(self):
        return self._guarded_layer

    @channel_layer.setter
    def channel_layer(self, layer) -> None:
        self._guarded_layer = _GuardedLayer(layer) if layer is not None else None

    async def __call__(self, scope, receive, send):
        self.accepted = self.interrupted = False
        health = layer_health()
        health.watch(self, get_channel_layer(self.channel_layer_alias))  # the layer Channels is about to give this socket
        try:
            await super().__call__(scope, receive, send)  # Channels: new_channel, then the dispatch loop
        except LayerDown as exc:
            health.report(exc)
            if not hasattr(self, "channel_name"):  # no channel: nothing of the room was set up
                await _refuse_interrupted(receive, send)
            else:  # the layer's receive failed: the dispatch loop is gone, so clean up here
                await self.interrupt(exc)
                try:
                    if hasattr(self, "room"):
                        await self.disconnect(CLOSE_INTERRUPTED)
                except LayerDown:
                    pass
        finally:
            health.unwatch(self)

    async def accept(self, *args, **kwargs):
        await super().accept(*args, **kwargs)
        self.accepted = True

    @property
    def joined(self) -> bool:
        return self.accepted and getattr(self, "room", None) is not None

    async def dispatch(self, message):
        try:
            await super().dispatch(message)
        except LayerDown as exc:
            await self.interrupt(exc)

    async def websocket_disconnect(self, message):
        try:
            await super().websocket_disconnect(message)
        except LayerDown as exc:  # telling the presenter that a student left: nobody can hear it now
            layer_health().report(exc)
            raise StopConsumer() from None

    async def interrupt(self, exc: LayerDown) -> None:
        """The layer's backend is unreachable: stop this socket's run, tell the client, and close
        with CLOSE_INTERRUPTED (the client reconnects; the room is in the database)."""
        if self.interrupted:
            return
        self.interrupted = True
        layer_health().report(exc)
        if cancel := getattr(self, "cancel", None):
            cancel.set()  # the engine stops generating for a room that cannot hear it
        run_task = getattr(self, "run_task", None)
        if run_task and run_task is not asyncio.current_task():
            run_task.cancel()
        if not self.accepted:
            await self.accept()
        await self.send_json(_interrupted_frame())
        await self.close(CLOSE_INTERRUPTED)

    # ---- connect and disconnect ----------------------------------------------------------------

    async def connect(self):
        self.role = "student"
        self.room: Room | None = None
        self.recent: deque[float] = deque()
        self.client_addr = (self.scope.get("client") or ["?"])[0] or "?"
        self.guess_index: int | None = None  # student: the step a guess is open for
        self.nickname: str | None = None  # student: shown on the presenter's screen; this socket's memory only
        self.renames: deque[float] = deque()
        # presenter-only state
        self.src = secrets.token_hex(4)
        self.seq = 0
        self.students: dict[str, str | None] = {}  # channel -> nickname, in the order they joined
        self.count_task: asyncio.Task | None = None
        self.students_version = 0
        self.run_task: asyncio.Task | None = None
        self.cancel = threading.Event()
        self.mode, self.pace_ms, self.release = "play", DEFAULT_PACE_MS, False
        self.wake = asyncio.Event()
        self.held: dict | None = None
        self.guess: dict | None = None  # {"index", "candidates", "guesses": {channel: text}}
        self.tally_task: asyncio.Task | None = None
        self.snapshot: dict | None = None  # the current run so far, for students who join late
        self.counted = open_room_sockets.acquire(self.client_addr, settings.EXPLAINER_ROOM_SOCKETS_PER_ADDRESS)
        await self.accept()
        if not self.counted:
            await self.send_json(_err("rate_limit_error", "Too many room connections from this address "
                                      f"(at most {settings.EXPLAINER_ROOM_SOCKETS_PER_ADDRESS}); try again later."))
            await self.close(CLOSE_FLOOD)
            return

        code = rooms.normalize_code(self.scope["url_route"]["kwargs"].get("code", ""))
        if rooms.attempts.blocked(self.client_addr):
            await self.send_json(_err("rate_limit_error", "Too many wrong room codes from this address; wait a minute."))
            await self.close(CLOSE_FLOOD)
            return
        room = await database_sync_to_async(rooms.live_room)(code)
        if room is None:
            rooms.attempts.failed(self.client_addr)
            await self.send_json(_err("not_found_error", "There is no live room with this code: it has ended or never existed."))
            await self.close(CLOSE_NOT_FOUND)
            return
        self.room = room
        self.group = f"room.{room.code}"
        self.presenters = f"room.{room.code}.presenters"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json({"type": "room.hello", "role": "student", "code": room.code, "state": self._state_dict(room.state),
                              "limits": {"max_frame_bytes": settings.EXPLAINER_ROOM_MAX_FRAME_BYTES,
                                         "frames_per_10s": settings.EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S}})
        await self._announce("join")

    async def _announce(self, op: str) -> None:
        await self.channel_layer.group_send(self.presenters, {"type": "presence", "op": op, "ch": self.channel_name,
                                                              "name": self.nickname})

    @staticmethod
    def _state_dict(state: dict) -> dict:
        try:
            return rooms.stage_state(state.get("href", "/learn/overview/")).to_dict()
        except rooms.StateError:
            return rooms.stage_state("/learn/overview/").to_dict()

    async def disconnect(self, code):
        if getattr(self, "counted", False):
            self.counted = False
            open_room_sockets.release(self.client_addr)
        if self.room is None:
            return
        self.cancel.set()
        for task in (self.run_task, self.count_task, self.tally_task):
            if task:
                task.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.role == "presenter":
            await self.channel_layer.group_discard(self.presenters, self.channel_name)
        else:
            await self.channel_layer.group_send(self.presenters, {"type": "presence", "op": "leave", "ch": self.channel_name})

    async def send_json(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    # ---- frames from this socket ---------------------------------------------------------------

    def _flooding(self, limit: int) -> int:
        now = time.monotonic()
        while self.recent and now - self.recent[0] > 10:
            self.recent.popleft()
        self.recent.append(now)
        return len(self.recent) - limit

    async def receive(self, text_data=None, bytes_data=None):
        if self.room is None:
            return
        limit = (settings.EXPLAINER_ROOM_PRESENTER_FRAMES_PER_10S if self.role == "presenter"
                 else settings.EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S)
        over = self._flooding(limit)
        if over > limit:  # twice the limit: this is not a person clicking
            await self.send_json(_err("rate_limit_error", "Too many frames; the socket is closed."))
            await self.close(CLOSE_FLOOD)
            return
        try:
            if over > 0:
                raise APIError("rate_limit_error", f"Too many frames: at most {limit} per 10 seconds on one socket.")
            await self._receive(text_data)
        except APIError as exc:
            await self.send_json(exc.body())

    async def _receive(self, text_data):
        if text_data is None:
            raise APIError("invalid_request_error", "Send JSON as text frames, not binary frames.")
        limit = settings.EXPLAINER_ROOM_MAX_FRAME_BYTES
        if len(text_data) > limit or len(text_data.encode("utf-8", "surrogatepass")) > limit:
            raise APIError("request_too_large", f"Frame is larger than the limit of {limit} bytes.")
        try:
            frame = jsonlimits.loads(text_data)
        except jsonlimits.TooDeep as exc:
            raise APIError("invalid_request_error", f"The frame is nested too deeply: {exc}.") from None
        except ValueError:
            raise APIError("invalid_request_error", "The frame is not valid JSON.") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise APIError("invalid_request_error", "type: each frame is an object with a string \"type\".")
        kind = frame["type"]
        if kind == "auth":
            return await self._auth(frame.get("secret"))
        if kind == "guess" and self.role == "student":
            return await self._student_guess(frame.get("text"))
        if kind == "nickname":
            return await self._set_nickname(frame.get("name"))
        if kind in PRESENTER_COMMANDS:
            if self.role != "presenter":
                raise APIError("permission_error", f"Only the presenter can send “{kind}”.")
            return await self._command(kind, frame)
        raise APIError("invalid_request_error", f"type: unknown frame type “{kind[:40]}”.")

    async def _auth(self, secret) -> None:
        if self.role == "presenter":
            return
        if rooms.attempts.blocked(self.client_addr):
            raise APIError("rate_limit_error", "Too many wrong secrets from this address; wait a minute.")
        if not rooms.secret_ok(self.room, secret):
            rooms.attempts.failed(self.client_addr)
            raise APIError("authentication_error", "This is not the presenter's link for this room.")
        self.role = "presenter"
        await self.channel_layer.group_send(self.presenters, {"type": "presence", "op": "leave", "ch": self.channel_name})
        await self.channel_layer.group_add(self.presenters, self.channel_name)
        await self.send_json({"type": "room.hello", "role": "presenter", "code": self.room.code,
                              "state": self._state_dict(self.room.state),
                              "limits": {"max_frame_bytes": settings.EXPLAINER_ROOM_MAX_FRAME_BYTES,
                                         "frames_per_10s": settings.EXPLAINER_ROOM_PRESENTER_FRAMES_PER_10S,
                                         "max_pace_ms": MAX_PACE_MS}, "pace_ms": self.pace_ms})
        await self._send_count()
        await self.channel_layer.group_send(self.group, {"type": "presence.query"})

    async def _student_guess(self, text) -> None:
        if self.guess_index is None:
            raise APIError("invalid_request_error", "No guess is open right now.")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_GUESS_CHARS:
            raise APIError("invalid_request_error", f"text: a guess of 1 to {MAX_GUESS_CHARS} characters")
        await self.channel_layer.group_send(self.presenters, {"type": "guess.in", "index": self.guess_index,
                                                              "ch": self.channel_name, "text": text})
        await self.send_json({"type": "room.guessed", "index": self.guess_index, "text": text})

    async def _set_nickname(self, raw) -> None:
        """A student names (or un-names, with an empty name) themselves. A refusal is the usual error envelope
        with ``"frame": "nickname"``, so that the page can show it beside the nickname box."""
        now = time.monotonic()
        while self.renames and now - self.renames[0] > 60:
            self.renames.popleft()
        try:
            if self.role != "student":
                raise APIError("invalid_request_error", "Only students choose a nickname.")
            if len(self.renames) >= NICKNAME_CHANGES:
                raise APIError("rate_limit_error", f"Too many nickname changes: at most {NICKNAME_CHANGES} a minute. Wait a little.")
            try:
                name = rooms.clean_nickname(raw)
            except rooms.NicknameError as exc:
                raise APIError("invalid_request_error", str(exc)) from None
        except APIError as exc:
            await self.send_json({**exc.body(), "frame": "nickname"})
            return
        self.renames.append(now)
        if name != self.nickname:
            self.nickname = name
            await self._announce("name")
        await self.send_json({"type": "room.nickname", "name": name})

    # ---- presenter commands --------------------------------------------------------------------

    def _remember(self, frame: dict) -> None:
        """What a student who joins in the middle of a run needs to catch up."""
        t = frame["type"]
        if t == "room.run" and frame["phase"] == "start":
            self.snapshot = {"run": frame, "tokens": [], "last": None, "guess": None, "reveal": None, "end": None}
        elif self.snapshot is None:
            return
        elif t == "room.token":
            self.snapshot["tokens"].append({"index": frame["index"], "piece": frame["piece"]})
            self.snapshot["last"] = frame
        elif t == "room.guess":
            self.snapshot["guess"], self.snapshot["reveal"] = frame, None
        elif t == "room.reveal":
            self.snapshot["guess"], self.snapshot["reveal"] = None, frame
        elif t == "room.run":
            self.snapshot["end"], self.snapshot["guess"] = frame, None

    async def broadcast(self, frame: dict, kind: str = "") -> None:
        self._remember(frame)
        self.seq += 1
        text = json.dumps({**frame, "seq": self.seq, "src": self.src}, ensure_ascii=False)
        await self.channel_layer.group_send(self.group, {"type": "room.frame", "text": text, "kind": kind,
                                                         "index": frame.get("index")})

    async def _command(self, kind: str, frame: dict) -> None:
        await database_sync_to_async(rooms.touch)(self.room)
        if kind == "state":
            try:
                st = rooms.stage_state(frame.get("href"))
            except rooms.StateError as exc:
                raise APIError("invalid_request_error", str(exc)) from None
            self.room.state = {"slug": st.slug, "href": st.href}
            await database_sync_to_async(Room.objects.filter(pk=self.room.pk).update)(state=self.room.state)
            await self.broadcast({"type": "room.state", "state": st.to_dict()})
        elif kind == "run":
            await self._start_run(frame)
        elif kind in ("pause", "play"):
            self.mode = kind
            self.wake.set()
            await self.send_json({"type": "room.mode", "mode": self.mode, "pace_ms": self.pace_ms})
        elif kind == "pace":
            self.pace_ms = _pace(frame.get("pace_ms"))
            self.wake.set()
            await self.send_json({"type": "room.mode", "mode": self.mode, "pace_ms": self.pace_ms})
        elif kind == "step":
            self._need_run()
            self.release = True
            self.wake.set()
        elif kind == "guess":
            await self._open_guess()
        elif kind == "reveal":
            await self._reveal()
        elif kind == "stop":
            self._need_run()
            self.cancel.set()
            self.run_task.cancel()
        elif kind == "end":
            await database_sync_to_async(rooms.end)(self.room)
            await self.broadcast({"type": "room.ended"}, kind="ended")

    def _need_run(self) -> None:
        if not (self.run_task and not self.run_task.done()):
            raise APIError("invalid_request_error", "No run is going: start one with “run”.")

    async def _start_run(self, frame: dict) -> None:
        if self.run_task and not self.run_task.done():
            raise APIError("invalid_request_error", "A run is already going: stop it first.")
        pace = _pace(frame.get("pace_ms"))
        room = await database_sync_to_async(rooms.live_room)(self.room.code)
        state = (room or self.room).state
        try:
            scenario = rooms.scenario_of(state)
        except ScenarioError as exc:
            raise APIError("invalid_request_error", f"The stage's scenario cannot be read: {exc}") from None
        req = parse_request(scenario.request_body())
        mode = frame.get("mode", "play")
        if mode not in ("play", "pause"):
            raise APIError("invalid_request_error", "mode: “play” or “pause”")
        self.pace_ms, self.mode, self.release, self.guess = pace, mode, False, None
        self.cancel = threading.Event()
        self.run_task = asyncio.create_task(self._run(req, scenario.seed, self.cancel))

    async def _run(self, req, seed: int, cancel: threading.Event) -> None:
        run_id = secrets.token_hex(4)
        ended = False
        try:
            async for ev in run_events(req, seed, cancel):
                t = ev["type"]
                if t == "explainer.prompt":
                    await self.broadcast({"type": "room.run", "phase": "start", "run_id": run_id, "input_tokens": ev["input_tokens"],
                                          "max_tokens": req.max_tokens, "prompt": next((m.text for m in reversed(req.messages) if m.role == "user"), "")[-400:],
                                          "mode": self.mode, "pace_ms": self.pace_ms})
                elif t == "explainer.token":
                    await self._gate(ev)
                    await self.broadcast({
                        "type": "room.token", "run_id": run_id, "index": ev["index"], "token": ev["token"], "text": ev["text"],
                        "piece": ev.get("piece", ""), "t": time.time(),
                        "candidates": [{"token": c["token"], "text": c["text"], "p": c["final_probability"]} for c in ev["candidates"][:CHOICES]],
                    })
                elif t == "explainer.done":
                    ended = True
                    await self.broadcast({"type": "room.run", "phase": "end", "run_id": run_id, "stop_reason": ev["stop_reason"],
                                          "usage": ev["usage"]}, kind="run_end")
                elif t == "error":
                    ended = True
                    await self.broadcast({"type": "room.run", "phase": "end", "run_id": run_id, "error": ev["error"]}, kind="run_end")
        except asyncio.CancelledError:
            cancel.set()
            if not ended and not self.interrupted:  # stopped by the presenter: tell the class, then let the cancellation finish
                try:
                    await asyncio.shield(self.broadcast({"type": "room.run", "phase": "end", "run_id": run_id, "stop_reason": "stopped"}, kind="run_end"))
                except LayerDown as exc:
                    await self.interrupt(exc)
            raise
        except LayerDown as exc:  # the class cannot be reached: stop the engine, and tell the presenter
            cancel.set()
            await self.interrupt(exc)
        except Exception:
            log.exception("room run failed")
            try:
                await self.broadcast({"type": "room.run", "phase": "end", "run_id": run_id,
                                      "error": {"type": "api_error", "message": "The run failed on the server."}}, kind="run_end")
            except LayerDown as exc:
                await self.interrupt(exc)
        finally:
            self.held, self.guess = None, None

    async def _gate(self, ev: dict) -> None:
        """Hold a generated token until the presenter's pace, a step or a reveal lets it go."""
        self.held = ev
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pace_ms / 1000
        while True:
            if self.release:
                self.release = False
                break
            timeout = None
            if self.mode == "play" and self.guess is None:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass
        self.held = None

    async def _open_guess(self) -> None:
        self._need_run()
        if self.held is None:
            raise APIError("invalid_request_error", "Wait for the next token to be ready, then open the guess.")
        if self.guess is not None:
            return
        self.mode = "pause"
        cands = self.held["candidates"][:CHOICES]
        self.guess = {"index": self.held["index"], "candidates": cands, "guesses": {}}
        choices = sorted({c["text"] for c in cands}, key=str.casefold)
        await self.send_json({"type": "room.mode", "mode": self.mode, "pace_ms": self.pace_ms})
        await self.broadcast({"type": "room.guess", "index": self.held["index"], "choices": choices}, kind="guess")
        await self._send_answers()

    async def _reveal(self) -> None:
        if self.guess is None or self.held is None:
            raise APIError("invalid_request_error", "No guess is open: open one with “guess”.")
        g, ev = self.guess, self.held
        bars, total = tally(g["guesses"], g["candidates"])
        drawn = ev["text"]
        right = sum(b["count"] for b in bars if b["text"] == drawn)
        await self.broadcast({
            "type": "room.reveal", "index": g["index"], "guesses": bars, "total": total, "right": right,
            "model": [{"text": c["text"], "p": c["final_probability"]} for c in g["candidates"]],
            "drawn": {"text": drawn, "token": ev["token"], "p": next((c["final_probability"] for c in ev["candidates"] if c["token"] == ev["token"]), None)},
        }, kind="reveal")
        self.guess = None
        self.release = True
        self.wake.set()

    # ---- messages from the channel layer -------------------------------------------------------

    async def room_frame(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "guess":
            self.guess_index = event.get("index")
        elif kind in ("reveal", "run_end"):
            self.guess_index = None
        await self.send(text_data=event["text"])
        if kind == "ended":
            await self.close(CLOSE_ENDED)

    async def presence(self, event: dict) -> None:
        if self.role != "presenter":
            return
        if event["op"] in ("join", "name"):
            if event["ch"] not in self.students and self.snapshot is not None:
                await self.channel_layer.send(event["ch"], {
                    "type": "room.frame", "kind": "guess" if self.snapshot["guess"] else "",
                    "index": self.snapshot["guess"]["index"] if self.snapshot["guess"] else None,
                    "text": json.dumps({"type": "room.catchup", **self.snapshot}, ensure_ascii=False)})
            name = event.get("name")
            self.students[event["ch"]] = name if isinstance(name, str) else None
        else:
            self.students.pop(event["ch"], None)
        self.students_version += 1
        if self.count_task is None or self.count_task.done():
            self.count_task = asyncio.create_task(self._send_counts(delay=0.2))

    async def _send_counts(self, delay: float) -> None:
        """Many students join (or name themselves) at once: a few frames, not hundreds, and the last one current."""
        sent = None
        while self.students_version != sent:
            await asyncio.sleep(delay)
            sent = self.students_version
            await self._send_count()

    async def _send_count(self) -> None:
        named = [n for n in self.students.values() if n]
        await self.send_json({"type": "room.students", "count": len(self.students), "names": named[:SHOWN_NAMES],
                              "more": max(0, len(named) - SHOWN_NAMES)})
        if self.guess is not None:  # a student came or went while the class is answering: "12 of 19"
            await self._send_answers()

    async def _send_answers(self) -> None:
        g = self.guess
        if g is None:
            return
        answered = sum(1 for ch in g["guesses"] if ch in self.students)  # of those still here
        await self.send_json({"type": "room.answers", "index": g["index"], "answered": answered,
                              "connected": len(self.students)})

    async def presence_query(self, event: dict) -> None:
        if self.role == "student":
            await self._announce("join")

    async def guess_in(self, event: dict) -> None:
        g = self.guess
        if self.role != "presenter" or g is None or g["index"] != event.get("index"):
            return
        g["guesses"][event["ch"]] = event["text"]
        g["version"] = g.get("version", 0) + 1
        if self.tally_task is None or self.tally_task.done():  # a class answering at once: a few updates, not one per guess
            self.tally_task = asyncio.create_task(self._send_tally(delay=0.0 if len(g["guesses"]) < 20 else 0.15))

    async def _send_tally(self, delay: float) -> None:
        sent = None
        while (g := self.guess) is not None and g.get("version") != sent:
            if delay:
                await asyncio.sleep(delay)
            sent = g.get("version")
            bars, total = tally(g["guesses"], g["candidates"])
            await self._send_answers()
            await self.send_json({"type": "room.tally", "index": g["index"], "guesses": bars, "total": total})
