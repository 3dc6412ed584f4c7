"""explainer.web.sockets.JsonFrameConsumer, the base of both WebSocket consumers: its frame checks,
and the two Channels methods it replaces to skip a database-connection check per message.

The replacement copies Channels' own code minus one call, so these tests pin down what it copied:
the Channels version, the copied methods' source, and what they do. When one fails after a Channels
upgrade, compare the new Channels source with JsonFrameConsumer.dispatch / websocket_disconnect,
carry the change over (or drop the override if Channels no longer makes the call), then update
CHANNELS_CHECKED and the texts below.
"""
import inspect
import json
import re
import textwrap
from pathlib import Path
from unittest import mock

import channels
import pytest
from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator

from explainer.lifecycle.errors import APIError
from explainer.live.consumers import StreamConsumer
from explainer.rooms.consumers import RoomConsumer
from explainer.web import sockets
from explainer.web.sockets import CLOSE_TRY_AGAIN_LATER, JsonFrameConsumer

ROOT = Path(__file__).resolve().parent.parent

CHANNELS_DISPATCH = '''
async def dispatch(self, message):
    """
    Works out what to do with a message.
    """
    handler = getattr(self, get_handler_name(message), None)
    if handler:
        await aclose_old_connections()
        await handler(message)
    else:
        raise ValueError("No handler for message type %s" % message["type"])
'''

CHANNELS_WEBSOCKET_DISCONNECT = '''
async def websocket_disconnect(self, message):
    """
    Called when a WebSocket connection is closed. Base level so you don't
    need to call super() all the time.
    """
    try:
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
    except AttributeError:
        raise InvalidChannelLayerError(
            "BACKEND is unconfigured or doesn't support groups"
        )
    await self.disconnect(message["code"])
    await aclose_old_connections()
    raise StopConsumer()
'''


# ---- the Channels internals it replaces ------------------------------------------------------------

def test_the_pinned_channels_is_the_one_the_override_was_checked_against():
    pin = re.search(r'"channels==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert pin == channels.__version__ == sockets.CHANNELS_CHECKED


@pytest.mark.parametrize("method, expected", [
    (AsyncConsumer.dispatch, CHANNELS_DISPATCH),
    (AsyncWebsocketConsumer.websocket_disconnect, CHANNELS_WEBSOCKET_DISCONNECT),
])
def test_the_channels_methods_it_replaces_are_unchanged(method, expected):
    assert textwrap.dedent(inspect.getsource(method)).strip() == expected.strip(), (
        f"Channels changed {method.__qualname__}: carry the change over to JsonFrameConsumer (explainer/web/sockets.py)")


class _Recorder:
    """A consumer's surroundings: a channel layer with groups, and a log of what was called."""

    def __init__(self, consumer):
        self.calls = []
        consumer.channel_name, consumer.groups = "me", ["g1"]
        consumer.channel_layer = mock.Mock(group_discard=mock.AsyncMock(side_effect=lambda g, ch: self.calls.append(("discard", g, ch))))

        async def handled(message):
            self.calls.append(("handled", message["type"]))

        async def disconnect(code):
            self.calls.append(("disconnect", code))
        consumer.some_event, consumer.disconnect = handled, disconnect


@pytest.mark.parametrize("cls, checks", [(AsyncWebsocketConsumer, 2), (JsonFrameConsumer, 0)])
async def test_dispatch_and_disconnect_do_the_same_minus_the_connection_check(cls, checks):
    """Channels' own methods check old database connections (a thread hop each time); ours do the
    rest of what they do, and not that."""
    hops = []

    async def aclose_old_connections():
        hops.append(1)
    consumer = cls()
    rec = _Recorder(consumer)
    with mock.patch("channels.consumer.aclose_old_connections", aclose_old_connections), \
            mock.patch("channels.generic.websocket.aclose_old_connections", aclose_old_connections):
        await consumer.dispatch({"type": "some.event"})
        with pytest.raises(ValueError, match="No handler for message type no.such"):
            await consumer.dispatch({"type": "no.such"})
        with pytest.raises(StopConsumer):
            await consumer.websocket_disconnect({"type": "websocket.disconnect", "code": 1001})
    assert rec.calls == [("handled", "some.event"), ("discard", "g1", "me"), ("disconnect", 1001)]
    assert len(hops) == checks


def test_both_consumers_use_it_and_nothing_else_replaces_channels_internals():
    for cls in (StreamConsumer, RoomConsumer):
        assert JsonFrameConsumer in cls.__mro__
        for name in ("dispatch", "websocket_disconnect"):
            for klass in cls.__mro__[:cls.__mro__.index(JsonFrameConsumer)]:
                if name in vars(klass):  # a wrapper around ours, never a copy of Channels'
                    assert f"super().{name}(message)" in inspect.getsource(vars(klass)[name]), (klass, name)
    copies = [p for p in (ROOT / "explainer").rglob("*.py")
              if re.search(r"get_handler_name|aclose_old_connections", p.read_text()) and p.name != "sockets.py"]
    assert not copies, copies


# ---- the frame checks ------------------------------------------------------------------------------

class Echo(JsonFrameConsumer):
    channel_layer_alias = "__no_layer__"
    limits = (100, 4)

    async def connect(self):
        await self.accept()

    def frame_limits(self):
        return self.limits

    async def on_frame(self, frame):
        if frame == "fail":
            raise APIError("invalid_request_error", "failed on purpose")
        await self.send_json({"type": "echo", "frame": frame})


async def _connect(cls):
    comm = WebsocketCommunicator(cls.as_asgi(), "/ws/echo/")
    connected, _ = await comm.connect()
    assert connected
    return comm


async def test_each_frame_is_checked_and_answered_with_an_error_envelope():
    comm = await _connect(type("Roomy", (Echo,), {"limits": (1000, 50)}))
    await comm.send_to(text_data=json.dumps({"a": "é"}))
    assert await comm.receive_json_from() == {"type": "echo", "frame": {"a": "é"}}
    for kwargs, kind, message in (
            ({"bytes_data": b"{}"}, "invalid_request_error", "Send JSON as text frames, not binary frames."),
            ({"text_data": "é" * 600}, "request_too_large", "Frame is larger than the limit of 1000 bytes."),  # 600 characters, 1200 bytes
            ({"text_data": "{"}, "invalid_request_error", "The frame is not valid JSON: Expecting"),
            ({"text_data": "[" * 90 + "]" * 90}, "invalid_request_error", "The frame is nested too deeply"),
            ({"text_data": '"fail"'}, "invalid_request_error", "failed on purpose")):
        await comm.send_to(**kwargs)
        err = await comm.receive_json_from()
        assert err["type"] == "error" and err["error"]["type"] == kind and err["error"]["message"].startswith(message)
    await comm.send_to(text_data="[1]")  # the socket is still usable
    assert (await comm.receive_json_from())["frame"] == [1]
    await comm.disconnect()


async def test_bad_json_can_be_refused_without_the_parsers_words():
    comm = await _connect(type("Terse", (Echo,), {"explain_bad_json": False}))
    await comm.send_to(text_data="nope")
    assert (await comm.receive_json_from())["error"]["message"] == "The frame is not valid JSON."
    await comm.disconnect()


@pytest.mark.parametrize("close_on_flood", [False, True])
async def test_a_flood_is_refused_and_closed_only_when_asked(close_on_flood):
    comm = await _connect(type("Flood", (Echo,), {"close_on_flood": close_on_flood}))
    replies = []
    for _ in range(9):
        await comm.send_to(text_data="1")
        replies.append(await comm.receive_json_from())
    assert [r["type"] for r in replies[:4]] == ["echo"] * 4
    assert all(r["error"]["message"] == "Too many frames: at most 4 per 10 seconds on one socket." for r in replies[4:8])
    if close_on_flood:  # past twice the limit
        assert replies[8]["error"]["message"] == "Too many frames; the socket is closed."
        assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER}
    else:
        assert replies[8]["error"]["type"] == "rate_limit_error"
        await comm.disconnect()


async def test_a_frame_for_a_socket_that_just_closed_is_dropped():
    """A room message can arrive a moment after the socket closed; Daphne's protocol then raises
    Disconnected from send. The consumer drops the frame instead of logging a traceback."""
    from autobahn.exception import Disconnected

    from explainer.web.sockets import JsonFrameConsumer

    consumer = JsonFrameConsumer()

    async def closed(message):
        raise Disconnected("Attempt to send on a closed protocol")

    consumer.base_send = closed
    await consumer.send_json({"type": "room.token"})  # no exception
    with pytest.raises(RuntimeError):  # anything else still surfaces
        consumer.base_send = mock.AsyncMock(side_effect=RuntimeError("other"))
        await consumer.send_json({"type": "room.token"})
