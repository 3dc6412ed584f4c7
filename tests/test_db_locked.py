"""A database that is busy or unreachable is a 503 with Retry-After, never a 500
(explainer/web/middleware.py): pages get the error page, JSON endpoints JSON, the API its envelope.

The first test does it for real: another process holds SQLite's write lock (``BEGIN IMMEDIATE``
on the server's own file) while a presenter starts a room.
"""
from __future__ import annotations

import re
import sqlite3
import urllib.error
import urllib.request
from http.cookiejar import CookieJar

import pytest
from django.db import InterfaceError, OperationalError

from tests.live_server import daphne


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _post_new_room(opener, base: str, token: str):
    req = urllib.request.Request(f"{base}/rooms/new", data=f"csrfmiddlewaretoken={token}".encode(), method="POST",
                                 headers={"Referer": f"{base}/rooms/", "Origin": base,
                                          "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


@pytest.mark.slow
def test_a_write_lock_held_by_another_process_is_a_503_then_the_room_starts(tmp_path):
    with daphne(tmp_path, EXPLAINER_DB_BUSY_TIMEOUT_S="0.5") as srv:
        base = srv["url"]
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect())
        html = opener.open(f"{base}/rooms/", timeout=30).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)

        other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's write lock, held until we let go
        try:
            status, headers, body = _post_new_room(opener, base, token)
            assert status == 503, (status, body[:500])
            assert headers["Retry-After"] == "5"
            assert 'class="card error-page"' in body and "try again in a few seconds" in body
            assert "Traceback" not in body and "OperationalError" not in body
            # readers never wait for the writer (WAL): pages that only read keep working meanwhile
            assert opener.open(f"{base}/rooms/", timeout=30).status == 200
        finally:
            other.rollback()
            other.close()

        status, headers, _ = _post_new_room(opener, base, token)
        assert status == 303 and re.fullmatch(r"/rooms/\w+/present#k=[\w-]+", headers["Location"])
        log = srv["log"].read_text()
        assert "Traceback" not in log, log[-3000:]


# ---- every kind of endpoint, through the test client ---------------------------------------------

LOCKED = OperationalError("database is locked")


@pytest.fixture
def locked(monkeypatch):
    """Every room lookup and creation fails as a locked or closed database does."""
    from explainer.rooms import rooms

    def fail(*args, **kwargs):
        raise LOCKED
    monkeypatch.setattr(rooms, "create_room", fail)
    monkeypatch.setattr(rooms, "live_room", fail)
    return fail


def test_room_pages_answer_503_with_retry_after(client, locked):
    for r in (client.post("/rooms/new"), client.get("/r/ABCDEF/"), client.get("/rooms/ABCDEF/present"),
              client.get("/join?code=ABCDEF")):
        assert r.status_code == 503, r.status_code
        assert r["Retry-After"] == "5" and r["Cache-Control"] == "no-store"
        assert r["Content-Type"].startswith("text/html") and b'class="card error-page"' in r.content


@pytest.mark.parametrize("exc", [OperationalError("database is locked"), OperationalError("could not connect to server"),
                                 InterfaceError("connection already closed")])
def test_json_endpoints_answer_json(client, monkeypatch, exc):
    from explainer.tutorial.lessons import lessons

    lesson = lessons()[0]

    def fail(page):
        raise exc
    monkeypatch.setattr(lesson.stage.page, "context", fail)
    r = client.get(f"/learn/{lesson.stage_slug}/data")
    assert r.status_code == 503 and r["Retry-After"] == "5"
    assert r.json() == {"error": {"type": "api_error", "message": "The database is busy or cannot be reached right now; "
                                                                  "try again in a few seconds."}}
    r = client.get(f"/tutorial/check/{lesson.id}")
    assert r.status_code == 503 and r.json() == {"error": r.json()["error"]} and "try again" in r.json()["error"]


def test_any_other_failure_on_a_data_endpoint_is_json_not_the_html_page(client, monkeypatch):
    from explainer.stages.pages import overview

    def fail(page):
        raise RuntimeError("a bug")
    monkeypatch.setattr(overview, "context", fail)
    r = client.get("/learn/overview/data")
    assert r.status_code == 500 and r["Content-Type"].startswith("application/json")
    assert r.json()["error"]["type"] == "api_error" and "a bug" not in r.content.decode()


def test_the_api_key_check_is_a_503_in_the_envelope(client, monkeypatch):
    from explainer.api import keys

    def fail(key):
        raise LOCKED
    monkeypatch.setattr(keys, "check", fail)
    r = client.post("/v1/messages", data=b"{}", content_type="application/json", HTTP_X_API_KEY="sk-exp-whatever")
    assert r.status_code == 503 and r["retry-after"]
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"


def test_a_wrong_method_on_a_json_endpoint_is_json_too(client):
    r = client.post("/learn/overview/data")
    assert r.status_code == 405 and r["Allow"] == "GET"
    assert r.json() == {"error": {"type": "invalid_request_error", "message": "POST is not allowed here; use GET."}}
    r = client.get("/scenario/encode")
    assert r.status_code == 405 and r.json() == {"error": "GET is not allowed here; use POST."}
    r = client.delete("/tutorial/check/x")
    assert r.status_code == 405 and r["Content-Type"].startswith("application/json")
    assert client.post("/learn/overview/").status_code == 405  # a page's 405 stays as it was


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_a_room_socket_gets_an_error_frame_and_closes_when_the_database_is_locked(monkeypatch):
    from channels.testing import WebsocketCommunicator

    from explainer.asgi import application
    from explainer.rooms import rooms

    def fail(*args, **kwargs):
        raise LOCKED
    monkeypatch.setattr(rooms, "look_up", fail)
    ws = WebsocketCommunicator(application, "/ws/rooms/ABCDEF/", headers=[(b"origin", b"http://127.0.0.1:8000")])
    connected, _ = await ws.connect()
    assert connected
    frame = await ws.receive_json_from(timeout=10)
    assert frame["type"] == "error" and frame["error"]["type"] == "api_error" and frame["retry_after"] == 5
    assert (await ws.receive_output(timeout=10))["code"] == 4503
    await ws.wait()


def test_a_database_failure_inside_an_api_view_is_a_503_not_a_500(client, monkeypatch):
    from explainer.api import views

    def fail(request):
        raise LOCKED
    monkeypatch.setattr(views, "_authenticate", fail)  # any database call the view makes, past the key check
    r = client.get("/v1/models", HTTP_X_API_KEY="sk-exp-whatever")
    assert r.status_code == 503 and r["retry-after"] and r.json()["error"]["type"] == "api_error"
