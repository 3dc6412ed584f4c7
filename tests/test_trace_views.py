import json
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


# What a trace stores (explainer.shares.traces.Cleaner, the caps) and what its page says when it could not be saved.

def test_what_no_database_can_hold_is_made_storable_and_said():
    import numpy as np

    rec = recorder({"model": "claude-\x00haiku", "max_tokens": 5, "messages": [{"role": "user", "content": "a\ud800b\x00c"}],
                    "metadata": {"user_id": "\udfff"}})
    rec.steps = [{"index": 0, "token": np.int64(7), "text": "\x00", "candidates": [{"token": 1, "logit": float("-inf"),
                                                                                    "probability": np.float32(0.5)}]}]
    rec.events = [{"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x\x00"}}]
    t = rec.save(200, {"type": "message", "content": [{"type": "text", "text": "\ud83d"}], "usage": {"x": float("nan")}})
    t.refresh_from_db()
    assert t.model == "claude-\ufffdhaiku"
    assert t.request["body"]["messages"][0]["content"] == "a\ufffdb\ufffdc" and t.request["body_altered"] is True
    assert t.request["body"]["metadata"]["user_id"] == "\ufffd"
    assert t.steps[0]["text"] == "\ufffd" and t.steps[0]["token"] == 7 and t.steps[0]["candidates"][0]["logit"] is None
    assert t.steps[0]["candidates"][0]["probability"] == 0.5
    assert t.events[0]["delta"]["text"] == "x\ufffd" and t.response["content"][0]["text"] == "\ufffd" and t.response["usage"]["x"] is None
    assert any("surrogate" in n for n in t.notes) and any("NUL" in n for n in t.notes) and any("finite" in n for n in t.notes)


def test_a_body_nested_too_deeply_is_stored_to_a_depth():
    from explainer.shares.traces import MAX_STORED_DEPTH

    deep = "x"
    for _ in range(500):
        deep = [deep]
    t = recorder({"model": "claude-haiku-4-5", "messages": deep}).save(400, None)
    t.refresh_from_db()
    assert "…" in json.dumps(t.request, ensure_ascii=False) and any(str(MAX_STORED_DEPTH) in n for n in t.notes)


def test_a_whole_trace_is_capped(monkeypatch):
    from explainer.shares import traces

    monkeypatch.setattr(traces, "MAX_TRACE_BYTES", 20_000)
    rec = recorder()
    rec.steps = [{"index": i, "token": i, "text": "tok", "candidates": [{"token": 1, "text": "x" * 50}] * 5} for i in range(400)]
    rec.events = [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tok"}}] * 400
    t = rec.save(200, None)
    t.refresh_from_db()
    stored = sum(len(json.dumps(getattr(t, f))) for f in ("request", "gateway", "prompt_ids", "steps", "events", "response", "usage", "timings"))
    assert stored <= 20_000
    assert 0 < len(t.steps) < 400 and any("Only the first" in n and "steps" in n for n in t.notes)


def test_the_page_of_an_old_row_with_a_lone_surrogate_opens(client):
    t = make(request={"method": "POST", "path": "/v1/messages", "headers": {}, "body": {"messages": [{"role": "user", "content": "\ud800"}]}},
             steps=[{"index": 0, "token": 1, "text": "\udc00", "candidates": []}])
    page = client.get(f"/traces/{t.id}/")
    assert page.status_code == 200 and "\ufffd" in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_failed_write_keeps_an_outline_that_says_why(client, monkeypatch):
    from explainer.shares.traces import TraceRecorder

    def broken(self, status, response):
        raise ValueError("the database said no\nsecond line")

    monkeypatch.setattr(TraceRecorder, "save", broken)
    rec = recorder()
    rec.save_later(200, None)
    from explainer.shares import traces
    traces.wait_for_writes(timeout=30)  # the writer is a background thread: a busy machine is slow
    page = client.get(f"/traces/{rec.id}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "could not be saved (ValueError: the database said no)" in html and "second line" not in html


@pytest.mark.django_db(transaction=True)
def test_a_trace_that_could_not_be_saved_at_all_says_so(client, monkeypatch):
    from explainer.shares import traces

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(traces.Trace.objects, "create", broken)
    rec = recorder()
    rec.save_later(200, None)
    page = client.get(f"/traces/{rec.id}/")
    assert page.status_code == 404
    html = page.content.decode()
    assert "This trace was not saved" in html and "RuntimeError: disk full" in html and "No such trace" not in html
    assert traces.failure(rec.id) == "RuntimeError: disk full"
