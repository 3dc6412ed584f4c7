"""``ws/inspect/<id>/`` through the real ASGI application (in-memory channel layer): a session's page is told of
each call recorded, a burst is one frame, and the socket shrugs off what a client sends it."""
from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from explainer.asgi import application
from explainer.inspect.models import Session

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]
LINE = json.dumps({"request": {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
                   "response": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "yo"}],
                                "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 1}}})


async def _open(session_id: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, f"/ws/inspect/{session_id}/", headers=ORIGIN)
    connected, _ = await comm.connect()
    assert connected
    return comm


async def test_a_recorded_burst_reaches_the_open_page_as_one_frame():
    session = await Session.objects.acreate()
    comm = await _open(session.id)
    assert await comm.receive_json_from() == {"type": "inspect.hello", "calls": 0}
    other = await Session.objects.acreate()
    for _ in range(3):  # three imports at once, and one into another session
        r = await AsyncClient().post(f"/inspect/{session.id}/import", "\n".join([LINE, LINE]), content_type="application/x-ndjson")
        assert r.status_code == 200
    await AsyncClient().post(f"/inspect/{other.id}/import", LINE, content_type="application/x-ndjson")
    assert await comm.receive_json_from(timeout=5) == {"type": "inspect.recorded", "calls": 6}
    assert await comm.receive_nothing(timeout=0.5)  # the other session's call is not this page's
    await comm.disconnect()


async def test_an_unknown_or_deleted_session_closes_the_socket():
    comm = await _open("no-such-session")
    assert (await comm.receive_json_from())["error"]["type"] == "not_found_error"
    assert (await comm.receive_output(timeout=2)) == {"type": "websocket.close", "code": 4404}


async def test_bad_frames_and_a_flood_are_refused_and_the_server_carries_on():
    session = await Session.objects.acreate()
    comm = await _open(session.id)
    await comm.receive_json_from()
    await comm.send_to(text_data="not json")
    assert (await comm.receive_json_from())["error"]["type"] == "invalid_request_error"
    await comm.send_to(bytes_data=b"\x00\x01")
    assert (await comm.receive_json_from())["error"]["type"] == "invalid_request_error"
    await comm.send_to(text_data="x" * 5000)
    assert (await comm.receive_json_from())["error"]["type"] == "request_too_large"
    for _ in range(30):
        await comm.send_to(text_data="{}")
    frames = []
    while True:
        out = await comm.receive_output(timeout=2)
        if out["type"] == "websocket.close":
            break
        frames.append(json.loads(out["text"]))
    assert out["code"] == 4429 and frames[-1]["error"]["message"].startswith("Too many frames; the socket is closed")
    fresh = await _open(session.id)  # the server is fine: a new page connects and is told as before
    assert await fresh.receive_json_from() == {"type": "inspect.hello", "calls": 0}
    await database_sync_to_async(Session.objects.filter(id=session.id).delete)()
    await fresh.disconnect()


async def test_a_layer_that_fails_costs_the_page_its_update_not_the_import(monkeypatch, caplog):
    from channels.layers import InMemoryChannelLayer

    async def down(self, group, message):
        raise ConnectionError("redis is down")
    monkeypatch.setattr(InMemoryChannelLayer, "group_send", down)
    session = await Session.objects.acreate()
    r = await AsyncClient().post(f"/inspect/{session.id}/import", LINE, content_type="application/x-ndjson")
    assert r.status_code == 200 and r.json() == {"imported": 1}
    assert "could not tell session" in caplog.text


async def test_a_layer_that_hangs_never_holds_the_callers_answer(monkeypatch, settings):
    """The proxy announces without waiting: a channel layer that never answers (Redis unreachable) delays nothing."""
    import asyncio

    from channels.layers import InMemoryChannelLayer

    from explainer.inspect import live, proxy

    hung, never = asyncio.Event(), asyncio.Event()

    async def hang(self, group, message):
        hung.set()
        await never.wait()  # a layer that never answers
    monkeypatch.setattr(InMemoryChannelLayer, "group_send", hang)
    session = await Session.objects.acreate()
    settings.EXPLAINER_UPSTREAM_URL = "http://127.0.0.1:9"  # nothing listens: the call fails fast and is recorded
    out = await proxy.handle(session.id, proxy.Incoming("POST", "/v1/messages", "", {"x-api-key": "k"}, b'{"model": "m"}'))
    # the answer is back while its announcement is still pending: the caller never waited for the layer
    assert out.status == 502 and live._announcing and not any(t.done() for t in live._announcing)
    await asyncio.wait_for(hung.wait(), 5)  # it was announced, in the background
    await asyncio.gather(*live._announcing)  # and given up after ANNOUNCE_TIMEOUT_S, quietly
    assert not never.is_set()


async def test_a_layer_that_is_down_closes_the_socket_and_the_page_polls(monkeypatch):
    from channels.layers import InMemoryChannelLayer

    async def down(self, group, channel):
        raise ConnectionError("redis is down")
    monkeypatch.setattr(InMemoryChannelLayer, "group_add", down)
    session = await Session.objects.acreate()
    comm = await _open(session.id)
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 1011}


async def test_deleting_the_session_closes_its_open_pages_sockets():
    session = await Session.objects.acreate()
    comm = await _open(session.id)
    await comm.receive_json_from()
    r = await AsyncClient().post(f"/inspect/{session.id}/delete")
    assert r.status_code == 302
    assert (await comm.receive_json_from(timeout=5))["error"]["message"] == "This inspector session was deleted."
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4404}
