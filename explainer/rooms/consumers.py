"""``ws/rooms/<code>/``: one socket per person in a classroom room.

Everyone connects as a student. A socket that sends the room's secret
(``{"type": "auth", "secret": ...}``) becomes a presenter, and only a presenter's
commands do anything; a student's socket can only send a guess.

Frames to the browser (JSON text):
    room.hello     on connect: role, code, the stage the presenter is on, limits
    room.state     the presenter moved: {"state": {"slug", "href", "title"}}
    room.run       a run started ("phase": "start", with the "model" that serves it) or ended ("phase": "end")
    room.token     one generated token with its top candidates
    room.guess     "guess the next token" is open: the choices to pick from
    room.reveal    the class's guesses beside the model's distribution, and the model's draw
    room.catchup   (student only) on joining during a run: the run so far
    room.guessed   (student only) the guess the server took
    room.mode      (presenter only) the run's pacing changed: {"mode", "pace_ms"}
    room.students  (presenter only) how many students are connected, and the nicknames of the first
                   SHOWN_NAMES of them: {"count", "names": [str], "more": named students not listed,
                   "unnamed": students without a nickname}
    room.tally     (presenter only) the guesses so far
    room.answers   (presenter only) while a guess is open: {"index", "answered", "connected"}, how many of
                   the connected students have answered (sent as guesses arrive, debounced)
    room.nickname  (student only) the nickname the server accepted for this socket: {"name": str | null}
    room.ended     the presenter ended the room
    error          the API's error envelope; the socket stays open unless it says otherwise
    room.interrupted  the channel layer (Redis) is unreachable: {"message", "retry_after"}; the socket
                   then closes with 4503 and the client reconnects after retry_after seconds
Every broadcast frame carries ``seq`` (consecutive per presenter connection ``src``), so a
client can tell that nothing was lost or reordered. The frames both ways are declared in
explainer/lifecycle/room_frames.py (``RoomFrame``, ``RoomCommand``).

    room.ask       "Everyone asks": a round opened (phones show a question box), was sent, or closed
    room.asked     (student only) the question the room took from this student for the round
    room.reply     (student only) this student's own reply to their question: start, each token, end
    room.questions (presenter only) the round's questions, without the ones the presenter hid
    room.timeline  (presenter only) the model scheduler's steps that served the class's requests

Frames from a presenter: auth, state {href}, run {pace_ms?, mode?, href?} (with href: the stage to show, and
whose scenario runs, as "state" would set it first), pause, play, step, pace {pace_ms},
guess, reveal, stop, end, ask {op: open | send | close | hide, qid?}. From a student: guess {text},
nickname {name} (optional, never required; checked by rooms.clean_nickname, kept in this socket's memory
only, at most NICKNAME_CHANGES per minute), question {text} (one per round, checked by rooms.clean_question).

"Everyone asks" (asking.py): each student's question runs on that student's own socket, labelled in the
model scheduler's record, so its reply reaches that phone only and stops when the phone goes; the
presenter's socket reads the scheduler's record for the projector's timeline.

The rules (pacing, guesses, tallies, answer counts, who is here, catching up) are
session.RoomSession's; this module is the transport: the checks of every frame
(web.sockets.JsonFrameConsumer), who is a presenter, the database, the channel layer (and
losing it), the engine's task, and the waiting that pacing and debouncing need.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from explainer.lifecycle import frames as fr
from explainer.lifecycle import room_frames as rf
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.gateway import OpenCounts
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario, ScenarioError
from explainer.rooms import asking, rooms
from explainer.rooms.layer import CLOSE_INTERRUPTED, GuardedLayer, LayerDown, interrupted_frame, layer_health, refuse_interrupted
from explainer.rooms.models import Room
from explainer.rooms.session import MAX_PACE_MS, ME, PRESENTERS, ROOM, Out, RoomSession
from explainer.stages.runs import check_model
from explainer.web.middleware import RETRY_AFTER_S, UNAVAILABLE, database_unavailable
from explainer.web.runner import call, get_engine, request_timeout, run_events
from explainer.web.sockets import CLOSE_TRY_AGAIN_LATER, JsonFrameConsumer

log = logging.getLogger(__name__)
CLOSE_NOT_FOUND, CLOSE_FLOOD, CLOSE_ENDED = 4404, CLOSE_TRY_AGAIN_LATER, 4410
ROSTER_DELAY_S = 0.2  # students joining (or naming themselves) at once: a few room.students frames, not hundreds
open_room_sockets = OpenCounts()  # per client address, in this process


_SID = re.compile(r"[A-Za-z0-9_-]{16,43}")


def _student_id(scope: dict) -> str:
    """The student's id in this room's rounds: the one their page kept from an earlier connection (``?sid=``, from
    room.hello), so that a reload or a lost connection rejoins the same round with the same answer; else a new one."""
    sid = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("sid", [""])[0]
    return sid if _SID.fullmatch(sid) else secrets.token_urlsafe(16)


def _err(kind: str, message: str) -> fr.Error:
    return fr.Error(type=fr.ERROR, error=fr.ErrorDetail(type=kind, message=message))


class RoomConsumer(JsonFrameConsumer):
    close_on_flood = True  # past twice the frame limit, the socket is closed with CLOSE_FLOOD
    explain_bad_json = False

    # ---- the channel layer, and losing it (see rooms/layer.py) ------------------------------------

    @property
    def channel_layer(self):
        return self._guarded_layer

    @channel_layer.setter
    def channel_layer(self, layer) -> None:
        self._guarded_layer = GuardedLayer(layer) if layer is not None else None

    async def __call__(self, scope, receive, send):
        self.accepted = self.interrupted = False
        self.session: RoomSession | None = None
        health = layer_health()
        health.watch(self, get_channel_layer(self.channel_layer_alias))  # the layer Channels is about to give this socket
        try:
            await super().__call__(scope, receive, send)  # Channels: new_channel, then the dispatch loop
        except LayerDown as exc:
            health.report(exc)
            if not hasattr(self, "channel_name"):  # no channel: nothing of the room was set up
                await refuse_interrupted(receive, send)
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

    @property
    def role(self) -> str | None:
        return self.session.role if self.session else None

    async def dispatch(self, message):
        try:
            await super().dispatch(message)
        except LayerDown as exc:
            await self.interrupt(exc)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # SQLite locked by another process, PostgreSQL restarting: the page's 503, in a frame
            log.warning("room socket: the database is unavailable (%s)", exc)
            if not self.accepted:
                await self.accept()
            await self.send_json(fr.Error(type=fr.ERROR, error=fr.ErrorDetail(type="api_error", message=UNAVAILABLE),
                                          retry_after=RETRY_AFTER_S))
            await self.close(CLOSE_INTERRUPTED)

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
        for cancel in (getattr(self, "cancel", None), getattr(self, "reply_cancel", None)):
            if cancel is not None:
                cancel.set()  # the engine stops generating for a room that cannot hear it
        for name in ("run_task", "reply_task"):
            task = getattr(self, name, None)
            if task and task is not asyncio.current_task():
                task.cancel()
        if not self.accepted:
            await self.accept()
        await self.send_json(interrupted_frame())
        await self.close(CLOSE_INTERRUPTED)

    # ---- connect and disconnect ----------------------------------------------------------------

    async def connect(self):
        self.room: Room | None = None
        self.session = RoomSession(self.channel_name, secrets.token_hex(4), clean_nickname=rooms.clean_nickname,
                                   sid=_student_id(self.scope), clean_question=rooms.clean_question)
        self.run_task: asyncio.Task | None = None
        self.cancel = threading.Event()  # the running engine's stop flag
        self.wake = asyncio.Event()      # the presenter did something the held token may be waiting for
        self.count_task: asyncio.Task | None = None
        self.tally_task: asyncio.Task | None = None
        self.countdown_task: asyncio.Task | None = None
        self.questions_task: asyncio.Task | None = None  # a presenter's: the round's questions, debounced
        self.timeline_task: asyncio.Task | None = None   # a presenter's: the round's timeline while replies stream
        self.reply_task: asyncio.Task | None = None      # a student's: their own reply
        self.reply_cancel = threading.Event()
        cap = settings.EXPLAINER_ROOM_SOCKETS_PER_ADDRESS
        if not await self.accept_counted(open_room_sockets, cap, APIError(
                "rate_limit_error", f"Too many room connections from this address (at most {cap}); try again later.")):
            return

        code = rooms.normalize_code(self.scope["url_route"]["kwargs"].get("code", ""))
        # Reserved before any await (a browser holding this room's pass is not limited: rooms.reserve_lookup).
        ticket = rooms.reserve_lookup(code, self.addr, rooms.cookies_of(self.scope))
        if not ticket.allowed:
            await self.send_json(_err("rate_limit_error", "Too many wrong room codes from this address; wait a minute."))
            await self.close(CLOSE_FLOOD)
            return
        room = await database_sync_to_async(rooms.look_up)(code, ticket)
        if room is None:
            await self.send_json(_err("not_found_error", "There is no live room with this code: it has ended or never existed."))
            await self.close(CLOSE_NOT_FOUND)
            return
        self.room = room
        self.session.label_prefix = f"room:{room.code}:{self.session.src}"
        self.group = f"room.{room.code}"
        self.presenters = f"room.{room.code}.presenters"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json(rf.RoomHello(type=fr.ROOM_HELLO, role="student", code=room.code, state=self._state_dict(room.state),
                                          limits=fr.SocketLimits(max_frame_bytes=settings.EXPLAINER_ROOM_MAX_FRAME_BYTES,
                                                                 frames_per_10s=settings.EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S),
                                          sid=self.session.sid))
        await self.deliver([self.session.announce("join")])

    @staticmethod
    def _state_dict(state: dict) -> rf.StageState:
        try:
            return rooms.stage_state(state.get("href", "/learn/overview/")).to_dict()
        except rooms.StateError:
            return rooms.stage_state("/learn/overview/").to_dict()

    async def disconnect(self, code):
        self.release_count()
        if self.room is None:
            return
        self.cancel.set()
        self.reply_cancel.set()  # a student who leaves mid-reply: the engine drops their row at its next step
        for task in (self.run_task, self.count_task, self.tally_task, self.countdown_task, self.questions_task,
                     self.timeline_task, self.reply_task):
            if task:
                task.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.session.role == "presenter":
            await self.channel_layer.group_discard(self.presenters, self.channel_name)
        await self.deliver(self.session.leaving())

    # ---- sending what the session decided --------------------------------------------------------

    async def deliver(self, outs: list[Out]) -> None:
        for out in outs:
            if out.to == ME:
                await self.send_json(out.frame)
                continue
            group = {ROOM: self.group, PRESENTERS: self.presenters}.get(out.to)
            if out.kind is None:  # a message for the sessions of other sockets (a group's, or one socket's)
                if group is not None:
                    await self.channel_layer.group_send(group, out.frame)
                else:
                    await self.channel_layer.send(out.to, out.frame)
                continue
            message = {"type": fr.ROOM_FRAME, "text": json.dumps(out.frame, ensure_ascii=False), "kind": out.kind,
                       "index": out.index}
            if group is not None:
                await self.channel_layer.group_send(group, message)
            else:  # one socket, by its channel name
                await self.channel_layer.send(out.to, message)

    def _soon(self, task: asyncio.Task | None, unsent, take, delay: float) -> asyncio.Task:
        """Send ``take()`` once ``delay`` has passed, and again while ``unsent()`` (debounced: a
        class acting at once gets a few frames, not hundreds, and the last one current)."""
        if task is not None and not task.done():
            return task

        async def flush():
            while unsent():
                if delay:
                    await asyncio.sleep(delay)
                await self.deliver(take())
        return asyncio.create_task(flush())

    # ---- frames from this socket ---------------------------------------------------------------

    def listening(self) -> bool:
        return self.room is not None

    def frame_limits(self) -> tuple[int, int]:
        per_10s = (settings.EXPLAINER_ROOM_PRESENTER_FRAMES_PER_10S if self.session.role == "presenter"
                   else settings.EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S)
        return settings.EXPLAINER_ROOM_MAX_FRAME_BYTES, per_10s

    async def on_frame(self, frame) -> None:
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise APIError("invalid_request_error", "type: each frame is an object with a string \"type\".")
        kind, role = frame["type"], self.session.role
        if kind == fr.AUTH:
            return await self._auth(frame.get("secret"))
        if kind == fr.GUESS and role == "student":
            return await self.deliver(self.session.send_guess(frame.get("text")))
        if kind == fr.NICKNAME:
            return await self.deliver(self.session.set_nickname(frame.get("name"), time.monotonic()))
        if kind == fr.QUESTION:
            return await self.deliver(self.session.send_question(frame.get("text")))
        if kind == fr.ASK:
            if role != "presenter":
                raise APIError("permission_error", f"Only the presenter can send “{kind}”.")
            return await self._ask(frame)
        if kind in fr.PRESENTER_COMMANDS:
            if role != "presenter":
                raise APIError("permission_error", f"Only the presenter can send “{kind}”.")
            return await self._command(kind, frame)
        raise APIError("invalid_request_error", f"type: unknown frame type “{kind[:40]}”.")

    async def _auth(self, secret) -> None:
        if self.session.role == "presenter":
            return
        if not rooms.secret_ok(self.room, secret):  # a right secret always passes; wrong ones are counted
            if rooms.secret_attempts.failure(self.addr).over_budget:
                raise APIError("rate_limit_error", "Too many wrong secrets from this address; wait a minute.")
            raise APIError("authentication_error", "This is not the presenter's link for this room.")
        await self.deliver(self.session.become_presenter())
        await self.channel_layer.group_add(self.presenters, self.channel_name)
        await self.send_json(rf.RoomHello(type=fr.ROOM_HELLO, role="presenter", code=self.room.code,
                                          state=self._state_dict(self.room.state),
                                          limits=fr.SocketLimits(max_frame_bytes=settings.EXPLAINER_ROOM_MAX_FRAME_BYTES,
                                                                 frames_per_10s=settings.EXPLAINER_ROOM_PRESENTER_FRAMES_PER_10S,
                                                                 max_pace_ms=MAX_PACE_MS), pace_ms=self.session.pace_ms))
        await self.deliver(self.session.presenter_ready())

    # ---- presenter commands --------------------------------------------------------------------

    async def _command(self, kind: str, frame: dict) -> None:
        await database_sync_to_async(rooms.touch)(self.room)
        if kind == fr.STATE:
            await self._show(frame.get("href"))
        elif kind == fr.RUN:
            await self._start_run(frame)
        elif kind == fr.STOP:
            self.session.need_run()
            self.cancel.set()
            self.run_task.cancel()
        elif kind == fr.END:
            await database_sync_to_async(rooms.end)(self.room)
            await self.deliver(self.session.end_room())
        else:  # pacing, guesses and the score
            await self.deliver(self.session.control(kind, frame))
            if kind == fr.GUESS and (countdown := self.session.countdown):
                self.countdown_task = asyncio.create_task(self._reveal_after(*countdown))
            # a held token may go now (or wait longer): _gate asks the session again. After the
            # frames above, so that a revealed token follows its room.reveal
            self.wake.set()

    async def _reveal_after(self, index: int, seconds: int) -> None:
        """A guess with a countdown reveals itself when the time is up, unless it was revealed (or the run ended) before."""
        await asyncio.sleep(seconds)
        g = self.session.guess
        if g is not None and g.index == index:
            await self.deliver(self.session.reveal())
            self.wake.set()

    async def _show(self, href) -> None:
        """Every screen of the room goes to the stage at ``href`` (checked by rooms.stage_state), and so does
        the room's scenario: what the next run runs."""
        try:
            st = rooms.stage_state(href)
        except rooms.StateError as exc:
            raise APIError("invalid_request_error", str(exc)) from None
        self.room.state = {"slug": st.slug, "href": st.href}
        await database_sync_to_async(Room.objects.filter(pk=self.room.pk).update)(state=self.room.state)
        await self.deliver(self.session.show_state(st.to_dict()))

    async def _start_run(self, frame: dict) -> None:
        # A run names the stage it runs (the presenter's screen after an edit there: a new prompt typed into the
        # overview, an unapplied Compose form): the room's stage and scenario follow it first, even when the run
        # is then refused, so that the class runs, and sees, what the projector shows.
        if "href" in frame:
            await self._show(frame["href"])
        pace = self.session.run_pace(frame)
        room = await database_sync_to_async(rooms.live_room)(self.room.code)
        state = (room or self.room).state
        try:
            scenario = rooms.scenario_of(state)
        except ScenarioError as exc:
            raise APIError("invalid_request_error", f"The stage's scenario cannot be read: {exc}") from None
        # a local model is opened here, in its own workers (its lane in runner.py): the run then uses it, never the
        # bundled model in its place; a busy lane or one past the deadline is the APIError the presenter sees
        why = await call(scenario.model, check_model, scenario)
        if why:
            raise APIError("invalid_request_error", why)
        req = parse_request(scenario.request_body())
        run_id = secrets.token_hex(4)
        self.session.start_run(req, pace, frame.get("mode", "play"), run_id)
        self.cancel = threading.Event()
        self.run_task = asyncio.create_task(self._run(req, scenario.seed, self.cancel, run_id))
        # also when the task is cancelled before it ever ran (its finally never runs then)
        self.run_task.add_done_callback(lambda _task: self.session.run_over(run_id))

    async def _run(self, req, seed: int, cancel: threading.Event, run_id: str) -> None:
        session = self.session
        try:
            async for ev in run_events(req, seed, cancel):
                if ev["type"] == fr.TOKEN:
                    await self._gate(ev)
                await self.deliver(session.run_event(ev, time.time()))
        except asyncio.CancelledError:
            cancel.set()
            if not self.interrupted:  # stopped by the presenter: tell the class, then let the cancellation finish
                try:
                    await asyncio.shield(self.deliver(session.run_stopped()))
                except LayerDown as exc:
                    await self.interrupt(exc)
            raise
        except LayerDown as exc:  # the class cannot be reached: stop the engine, and tell the presenter
            cancel.set()
            await self.interrupt(exc)
        except Exception:
            log.exception("room run failed")
            try:
                await self.deliver(session.run_failed())
            except LayerDown as exc:
                await self.interrupt(exc)
        finally:
            session.run_over(run_id)

    async def _gate(self, ev: dict) -> None:
        """Hold a generated token until the presenter's pace, a step or a reveal lets it go."""
        loop = asyncio.get_running_loop()
        await self.deliver(self.session.hold(ev, loop.time()))
        while (wait := self.session.token_wait(loop.time())) != 0:
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
            except TimeoutError:
                pass

    # ---- "Everyone asks" ----------------------------------------------------------------------------

    async def _ask(self, frame: dict) -> None:
        """The presenter's round: open, send (the class's questions start together), close, hide a question."""
        await database_sync_to_async(rooms.touch)(self.room)
        s = self.session
        scheduler = get_engine().scheduler
        if frame.get("op") == "send" and s.ask is not None and s.ask.phase == "open":
            # the round's start in the scheduler's clock, before any student's request can join it
            s.ask.t0 = scheduler.now() if scheduler is not None else None
        await self.deliver(s.ask_command(frame))
        if frame.get("op") == "send" and scheduler is not None:
            if self.timeline_task is not None:
                self.timeline_task.cancel()
            self.timeline_task = asyncio.create_task(self._watch_round(s.ask, scheduler))

    async def _watch_round(self, rnd: asking.AskRound, scheduler) -> None:
        """The projector's timeline of a sent round: redrawn while its replies stream, then once more when every
        one of its requests has left the scheduler (or the request time limit has passed)."""
        s, loop = self.session, asyncio.get_running_loop()
        deadline = loop.time() + (request_timeout() or 120) + 10
        settle = 10  # looks, after the last reply ended, for its request to leave the record
        while s.ask is rnd and loop.time() < deadline:
            record = await asyncio.to_thread(scheduler.record, rnd.t0)
            answering = rnd.answering
            frames = s.timeline(record, done=False)
            if not answering and (settle <= 0 or _all_left(frames)):
                break
            settle -= 0 if answering else 1
            await self.deliver(frames)
            await asyncio.sleep(asking.TIMELINE_EVERY_S)
        if s.ask is rnd:
            record = await asyncio.to_thread(scheduler.record, rnd.t0)
            await self.deliver(s.timeline(record, done=True))

    def _questions_soon(self) -> None:
        s = self.session
        self.questions_task = self._soon(self.questions_task, lambda: s.questions_unsent, s.take_questions, s.questions_delay())

    async def _reply(self, q) -> None:
        """A student's own question, run as a Messages request (the bundled model, the default parameters); its
        reply streams to this socket only. Cancelled with the socket."""
        session, cancel = self.session, self.reply_cancel
        try:
            scenario = Scenario(messages=[{"role": "user", "content": q.text}], max_tokens=asking.ASK_MAX_TOKENS)
            req = parse_request(scenario.request_body())
            async for ev in run_events(req, scenario.seed, cancel, keep=_reply_kept, label=q.label):
                await self.deliver(session.reply_event(q, ev))
        except asyncio.CancelledError:
            cancel.set()
            raise
        except LayerDown as exc:
            cancel.set()
            await self.interrupt(exc)
        except Exception:
            log.exception("a student's reply failed")
            try:
                await self.deliver(session.reply_failed(q))
            except LayerDown as exc:
                await self.interrupt(exc)

    async def ask_in(self, event: dict) -> None:
        await self.deliver(self.session.ask_in(event.get("round"), event["ch"], event.get("sid"), event.get("name"),
                                               event["text"]))
        self._questions_soon()

    async def ask_taken(self, event: dict) -> None:
        await self.deliver(self.session.ask_taken(event.get("round"), event.get("qid"), event.get("label", ""),
                                                  event.get("text", "")))

    async def ask_refused(self, event: dict) -> None:
        await self.deliver(self.session.ask_refused(event.get("round"), event.get("message", "")))

    async def ask_done(self, event: dict) -> None:
        if self.session.ask_done(event.get("round"), event.get("qid"), event.get("status"), event.get("tokens")):
            self._questions_soon()

    # ---- messages from the channel layer -------------------------------------------------------

    async def room_frame(self, event: dict) -> None:
        kind = event.get("kind")
        self.session.heard(kind, event.get("index"))
        await self.send(text_data=event["text"])
        if kind == "ended":
            await self.close(CLOSE_ENDED)
        elif kind == "ask_sent" and (q := self.session.question_to_run(event.get("index"))) is not None:
            self.reply_cancel = threading.Event()
            self.reply_task = asyncio.create_task(self._reply(q))

    async def presence(self, event: dict) -> None:
        s = self.session
        if s.role != "presenter":
            return
        await self.deliver(s.presence(event["op"], event["ch"], event.get("name"), event.get("sid")))
        self.count_task = self._soon(self.count_task, lambda: s.roster_unsent, s.take_roster, ROSTER_DELAY_S)
        if s.questions_unsent:  # a student came or went during a round: who has asked, of how many, and who left mid-reply
            self._questions_soon()

    async def presence_query(self, event: dict) -> None:
        await self.deliver(self.session.presence_query())

    async def guess_in(self, event: dict) -> None:
        s = self.session
        if s.guess_in(event.get("index"), event["ch"], event["text"], event.get("sid")):
            self.tally_task = self._soon(self.tally_task, lambda: s.tally_unsent, s.take_tally, s.tally_delay())


_REPLY_EVENTS = frozenset({fr.PROMPT, fr.TOKEN, fr.DONE})


def _reply_kept(event: dict) -> bool:
    """The engine events a student's reply needs (the API's stream events stay in the engine's thread)."""
    return event["type"] in _REPLY_EVENTS


def _all_left(frames: list[Out]) -> bool:
    """Whether every one of the class's requests in a timeline frame has left the scheduler."""
    for out in frames:
        t = out.frame
        ids = set(t["highlight"])
        if any(r["left"] is None for r in t["requests"] if r["id"] in ids):
            return False
    return True
