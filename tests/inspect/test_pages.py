"""The inspector's pages and its failures with no upstream, in process (Django's test clients)."""
from __future__ import annotations

import re
import socket
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import AsyncClient, Client
from django.utils import timezone

from explainer.inspect.models import Call, Session

pytestmark = pytest.mark.django_db(transaction=True)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_the_index_explains_and_new_session_needs_the_csrf_token():
    client = Client(enforce_csrf_checks=True)
    page = client.get("/inspect/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "New session" in html and "ANTHROPIC_BASE_URL" in html
    assert client.post("/inspect/new").status_code == 403  # no token, no session
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    resp = client.post("/inspect/new", {"csrfmiddlewaretoken": token})
    assert resp.status_code == 302
    session_id = resp["Location"].split("/")[2]
    assert len(session_id) == 22 and Session.objects.filter(id=session_id).exists()  # 128 random bits, url-safe
    page = client.get(resp["Location"]).content.decode()
    base = f"http://testserver/inspect/{session_id}"
    assert f'value="{base}"' in page and f'anthropic.Anthropic(base_url="{base}")' in page and f"ANTHROPIC_BASE_URL={base}" in page


def test_a_session_is_deleted_from_its_page_and_then_is_a_404():
    session = Session.objects.create()
    client = Client()
    assert client.get(f"/inspect/{session.id}/").status_code == 200
    assert client.post(f"/inspect/{session.id}/delete").status_code == 302
    page = client.get(f"/inspect/{session.id}/")
    assert page.status_code == 404 and "No such inspector session" in page.content.decode()
    assert client.get(f"/inspect/{session.id}/data").json()["error"]["type"] == "not_found_error"


def test_an_expired_session_is_gone_everywhere():
    session = Session.objects.create(expires_at=timezone.now() - timedelta(seconds=1))
    client = Client()
    assert client.get(f"/inspect/{session.id}/").status_code == 404
    assert client.get(f"/inspect/{session.id}/data").status_code == 404
    r = client.post(f"/inspect/{session.id}/v1/messages", b"{}", content_type="application/json", HTTP_X_API_KEY="k")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error" and r["request-id"]


def test_the_command_prints_the_base_url_last():
    out = StringIO()
    call_command("inspect", "new", stdout=out)
    last = out.getvalue().strip().splitlines()[-1]
    session_id = last.rsplit("/inspect/", 1)[1]
    assert Session.objects.filter(id=session_id).exists()


def test_hostile_text_in_a_call_is_shown_as_text():
    session = Session.objects.create()
    body = {"model": HOSTILE, "system": [{"type": "text", "text": "a" * 5000 + HOSTILE, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": HOSTILE}]}
    message = {"type": "message", "role": "assistant", "model": HOSTILE, "content": [{"type": "text", "text": HOSTILE}],
               "stop_reason": HOSTILE, "usage": {"input_tokens": 5, "output_tokens": 3, "cache_creation_input_tokens": 1500}}
    for n in range(2):
        changed = {**body, "system": [{**body["system"][0], "text": "a" * 5000 + HOSTILE.replace("x", f"y{n}")}]}
        Call.objects.create(session=session, started_at=timezone.now(), method="POST", path="/v1/messages", status=200,
                            model=HOSTILE, request=changed, response=message, request_id=HOSTILE, ratelimit={HOSTILE: HOSTILE},
                            notes=[HOSTILE], timings={"total": 5.0})
    html = Client().get(f"/inspect/{session.id}/").content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert" in html
    data = Client().get(f"/inspect/{session.id}/data").json()
    assert data["calls"][1]["cache"]["first_difference"]["path"] == "system[0].text"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


async def test_an_upstream_that_refuses_or_fails_tls_is_a_502_naming_it(settings, caplog):
    session = await Session.objects.acreate()
    client = AsyncClient()
    body = b'{"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'
    url = f"http://127.0.0.1:{_closed_port()}"
    settings.EXPLAINER_UPSTREAM_URL = url
    r = await client.post(f"/inspect/{session.id}/v1/messages", body, content_type="application/json", HTTP_X_API_KEY="sk-ant-x")
    assert r.status_code == 502
    err = r.json()
    assert err["type"] == "error" and url in err["error"]["message"] and "the connection failed" in err["error"]["message"]
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    try:  # an https upstream whose handshake never completes: the peer closes it
        settings.EXPLAINER_UPSTREAM_URL = f"https://127.0.0.1:{listening.getsockname()[1]}"
        accept = threading.Thread(target=lambda: listening.accept()[0].close(), daemon=True)
        accept.start()
        r = await client.post(f"/inspect/{session.id}/v1/messages", body, content_type="application/json", HTTP_X_API_KEY="sk-ant-x")
        assert r.status_code == 502 and settings.EXPLAINER_UPSTREAM_URL in r.json()["error"]["message"]
    finally:
        listening.close()
    calls = [c async for c in Call.objects.filter(session=session)]
    assert [c.status for c in calls] == [502, 502] and all(c.response["type"] == "error" for c in calls)
    assert "inspector: upstream" in caplog.text and "sk-ant-x" not in caplog.text  # logged, without the key


def test_a_call_replays_in_the_walk_through_on_the_bundled_model():
    session = Session.objects.create()
    body = {"model": "claude-sonnet-4-6", "max_tokens": 4000,
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a prime above 90."},
                                                      {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                                   "bytes": 10, "data": "(not recorded)"}}]}]}
    message = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "97"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 30, "output_tokens": 2}}
    Call.objects.create(session=session, started_at=timezone.now(), method="POST", path="/v1/messages", status=200,
                        request=body, response=message, timings={"total": 5.0})
    client = Client()
    html = client.get(f"/inspect/{session.id}/call/1/").content.decode()
    assert "Replay on the bundled model" in html and "max_tokens is cut from 4,000 to 200" in html and "Images, documents" in html
    url = re.search(r'href="(/learn/compose/\?s=[^"]+)"', html).group(1).replace("&amp;", "&")
    page = client.get(url)
    assert page.status_code == 200
    assert "Name a prime above 90." in page.content.decode() and "You are terse." in page.content.decode()


def test_the_pages_poll_is_a_count_and_a_long_session_stays_quick():
    session = Session.objects.create()
    system = [{"type": "text", "text": "Rules. " * 2000, "cache_control": {"type": "ephemeral"}}]
    history = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"turn {n} " * 20} for n in range(200)]
    Call.objects.bulk_create([Call(session=session, started_at=timezone.now() + timedelta(seconds=n), method="POST", path="/v1/messages",
                                   status=200, request={"model": "claude-sonnet-4-6", "system": system, "messages": history[:n + 1]},
                                   response={"type": "message", "content": [], "stop_reason": "end_turn",
                                             "usage": {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 30000}})
                              for n in range(200)])
    client = Client()
    assert client.get(f"/inspect/{session.id}/data?count").json() == {"count": 200}
    data = client.get(f"/inspect/{session.id}/data").json()  # each miss compared with the 20 calls before it, not all
    assert len(data["calls"]) == 200 and data["calls"][-1]["cache"]["reason"] == "unexplained"
