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
