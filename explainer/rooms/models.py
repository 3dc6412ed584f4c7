from django.db import models


class Room(models.Model):
    """A classroom: one presenter (whoever holds the secret) drives, students follow.

    The code is what students type; the secret is only in the presenter's link and is
    stored hashed. ``state`` is what a student who joins late is shown first: the stage
    page the presenter is on (a path and query under /learn/)."""

    code = models.CharField(primary_key=True, max_length=8)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    state = models.JSONField(default=dict)
