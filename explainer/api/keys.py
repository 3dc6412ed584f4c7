"""API keys: creation, hashing, checking, and the development key that works out of the box."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from django.conf import settings
from django.utils import timezone

from explainer.api.models import ApiKey
from explainer.lifecycle.gateway import key_from_headers  # noqa: F401  (x-api-key or Authorization: Bearer)

PREFIX = "sk-exp-"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create(name: str, key: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key (or the given one) and return it; the plain key is not kept."""
    key = key or PREFIX + secrets.token_urlsafe(30)
    obj, _ = ApiKey.objects.update_or_create(digest=digest(key), defaults={"name": name, "prefix": key[:12], "revoked_at": None})
    return obj, key


def check(key: str | None) -> ApiKey | None:
    """The live key matching ``key``, or None. One lookup by digest: nothing tells which part was wrong."""
    if not key or len(key) > 200:
        return None
    d = digest(key)
    obj = ApiKey.objects.filter(digest=d, revoked_at__isnull=True).first()
    if obj is None or not hmac.compare_digest(obj.digest, d):
        return None
    now = timezone.now()
    if obj.last_used_at is None or (now - obj.last_used_at).total_seconds() > 60:  # a write per minute, not per call
        ApiKey.objects.filter(pk=obj.pk).update(last_used_at=now)
    return obj


def development_key() -> str:
    """EXPLAINER_API_KEY when set, else a key generated once into the data directory; stored hashed."""
    key = os.environ.get("EXPLAINER_API_KEY")
    if not key:
        path = settings.DATA_DIR / "dev-api-key"
        if not path.exists():
            path.write_text(PREFIX + secrets.token_urlsafe(30))
            path.chmod(0o600)
        key = path.read_text().strip()
    create("development", key)
    return key
