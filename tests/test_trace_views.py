from datetime import timedelta

import pytest
from django.utils import timezone

from explainer.shares.models import Trace

pytestmark = pytest.mark.django_db


def make(**kw):
    data = dict(expires_at=timezone.now() + timedelta(hours=1), endpoint="messages", status=200, model="claude-haiku-4-5",
                request={"method": "POST", "path": "/v1/messages", "headers": {}, "body": {
                    "model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "<b>hi</b>"}]}})
    data.update(kw)
    return Trace.objects.create(**data)


def test_it_deletes_a_trace(client):
    t = make()
    assert client.get(f"/traces/{t.id}/").status_code == 200
    assert client.post(f"/traces/{t.id}/delete").status_code == 302
    assert client.get(f"/traces/{t.id}/").status_code == 404


def test_expired_traces_are_gone(client):
    t = make(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(f"/traces/{t.id}/").status_code == 404


def test_the_list_is_only_for_this_machine(client):
    make()
    assert client.get("/traces/").status_code == 200
    assert client.get("/traces/", REMOTE_ADDR="192.0.2.7").status_code == 403


def test_request_text_is_escaped_and_the_walk_through_is_linked(client):
    t = make()
    html = client.get(f"/traces/{t.id}/").content.decode()
    assert "<b>hi</b>" not in html and "&lt;b&gt;hi&lt;/b&gt;" in html
    assert "/learn/recap/?s=" in html


# Traces are written after the call has answered (explainer.shares.traces.TraceRecorder.save_later).

def recorder(body=None):
    from django.test import RequestFactory

    from explainer.shares.traces import TraceRecorder

    rec = TraceRecorder(RequestFactory().post("/v1/messages", headers={"x-api-key": "sk-exp-secret-value"}), "messages")
    rec.set_body(body or {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "<i>later</i>"}]})
    return rec


@pytest.mark.django_db(transaction=True)  # the writer's thread has its own connection
def test_a_trace_still_being_written_is_waited_for(client):
    import threading

    rec = recorder()
    sent = threading.Event()
    rec.save_later(200, {"type": "message", "content": []}, after=sent)  # held until the response is "sent"
    threading.Timer(0.3, sent.set).start()
    assert not Trace.objects.filter(id=rec.id).exists()
    page = client.get(f"/traces/{rec.id}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "&lt;i&gt;later&lt;/i&gt;" in html and "sk-exp-secret-value" not in html
    assert Trace.objects.get(id=rec.id).timings["http_total_ms"] >= 0


@pytest.mark.django_db(transaction=True)
def test_the_list_waits_for_writes_and_a_write_never_waits_forever(client, monkeypatch):
    from explainer.shares import traces

    monkeypatch.setattr(traces, "SENT_WAIT", 0.3)
    import threading

    rec = recorder()
    rec.save_later(200, None, after=threading.Event())  # a client that went away: its response is never sent
    listing = client.get("/traces/")
    assert listing.status_code == 200 and rec.id in listing.content.decode()


def test_a_young_id_not_written_yet_gets_a_page_that_asks_again(client):
    from explainer.shares.traces import issue_id

    page = client.get(f"/traces/{issue_id()}/")
    assert page.status_code == 202 and page["Cache-Control"] == "no-store"
    html = page.content.decode()
    assert "being recorded" in html and "js/trace-recording" in html and 'data-every="2"' in html


def test_an_old_or_unknown_id_is_not_found(client):
    import time

    from explainer.shares.traces import issue_id, recently_issued

    old = issue_id(now=time.time() - 3600)
    assert not recently_issued(old) and recently_issued(issue_id())
    for tid in (old, "not-a-real-trace-id", issue_id()[:-8] + "zzzzzzzz", "<script>x</script>"):
        assert client.get(f"/traces/{tid}/").status_code == 404


def test_saving_a_trace_sweeps_out_expired_ones_now_and_then(client, monkeypatch):
    from explainer.shares import traces

    old = make(expires_at=timezone.now() - timedelta(seconds=1))
    monkeypatch.setattr(traces, "_last_sweep", float("-inf"))
    first = recorder().save(200, None)
    assert not Trace.objects.filter(id=old.id).exists()
    again = make(expires_at=timezone.now() - timedelta(seconds=1))
    recorder().save(200, None)  # within SWEEP_EVERY of the last sweep: left for the next one (never shown meanwhile)
    assert Trace.objects.filter(id=again.id).exists() and Trace.objects.filter(id=first.id).exists()
    assert client.get(f"/traces/{again.id}/").status_code == 404
