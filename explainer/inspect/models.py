"""A session of recorded Claude calls: its link is the only key, and it expires like a trace."""
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_session_id() -> str:
    return secrets.token_urlsafe(16)  # 128 random bits: whoever holds the link sees the session


def session_expiry() -> datetime:
    return timezone.now() + timedelta(hours=settings.EXPLAINER_INSPECT_TTL_HOURS)


class Session(models.Model):
    id = models.CharField(primary_key=True, max_length=32, default=new_session_id, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True, default=session_expiry)

    class Meta:
        ordering = ["-created_at"]


class Call(models.Model):
    """One call relayed through a session, as the upstream answered it. The caller's key is never part of it."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="calls")
    started_at = models.DateTimeField(db_index=True, help_text="when the call arrived; calls are numbered in this order")
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=64, help_text="the API path relayed, e.g. /v1/messages")
    query = models.CharField(max_length=512, blank=True)
    status = models.PositiveSmallIntegerField()
    model = models.CharField(max_length=200, blank=True)
    stream = models.BooleanField(default=False)
    request_headers = models.JSONField(default=dict, help_text="anthropic-version, anthropic-beta, content-type: never a key")
    request = models.JSONField(null=True, help_text="the body, images and documents summarised (inspect/record.py)")
    response = models.JSONField(null=True, help_text="the message (a stream reassembled) or the error envelope")
    events = models.JSONField(default=list, help_text="a stream's events: type and arrival time (ms after the call arrived)")
    request_id = models.CharField(max_length=200, blank=True)
    ratelimit = models.JSONField(default=dict, help_text="the upstream's anthropic-ratelimit-* and retry-after headers")
    timings = models.JSONField(default=dict)
    notes = models.JSONField(default=list, help_text="what was left out or cut to store this call, and failures on the way")

    class Meta:
        ordering = ["started_at", "id"]
