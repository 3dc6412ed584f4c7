import secrets

from django.db import models


def new_trace_id() -> str:
    return secrets.token_urlsafe(16)  # 128 random bits: the link is the only key


class Trace(models.Model):
    """One call to /v1/, successful or not, as the explainer saw it."""

    id = models.CharField(primary_key=True, max_length=32, default=new_trace_id, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    endpoint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    model = models.CharField(max_length=100, blank=True)
    request = models.JSONField(help_text="body and headers as received, API key redacted")
    gateway = models.JSONField(default=dict)
    prompt_ids = models.JSONField(default=list)
    steps = models.JSONField(default=list, help_text="per sampled token: token, text, top candidates")
    attention = models.JSONField(default=dict, help_text="per layer and head: summary of where the prompt attends")
    events = models.JSONField(default=list, help_text="the Messages API stream events, in order")
    response = models.JSONField(null=True, blank=True)
    usage = models.JSONField(default=dict)
    cost = models.JSONField(null=True, blank=True)
    timings = models.JSONField(default=dict)
    notes = models.JSONField(default=list, blank=True, help_text="what was changed or left out to store this trace, and why")

    class Meta:
        ordering = ["-created_at"]
