"""API keys: creation, hashing, checking, and the development key that works out of the box."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time

from django.conf import settings
from django.utils import timezone

from explainer.api.models import ApiKey
from explainer.lifecycle.gateway import key_from_headers  # noqa: F401  (x-api-key or Authorization: Bearer)

PREFIX = "sk-exp-"
INDEX_REFRESH_S = 2.0  # the live keys' digests are read again at most this often (keys created by another process)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create(name: str, key: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key (or the given one) and return it; the plain key is not kept."""
    key = key or PREFIX + secrets.token_urlsafe(30)
    obj, _ = ApiKey.objects.update_or_create(digest=digest(key), defaults={"name": name, "prefix": key[:12], "revoked_at": None})
    live.add(obj.digest)
    return obj, key


class LiveDigests:
    """The digests of the keys that are not revoked, held in memory: whether a presented key can be right
    is known without asking the database, so a flood of wrong keys costs no lookups, and a right key is
    recognised before any failure budget is looked at (the API never refuses it for someone else's
    failures). A miss re-reads the table, at most every ``INDEX_REFRESH_S`` seconds whoever asks, so a
    key created by another process (``manage.py apikeys create``) is known within that time. A hit is
    still confirmed by :func:`check` against the database, so a revoked key stops working at once.

    Example:
        >>> idx = LiveDigests(load=lambda: {"abc"})
        >>> idx.contains("abc"), idx.contains("nope", refresh=False)
        (True, False)
    """

    def __init__(self, load=None):
        self._load = load or (lambda: set(ApiKey.objects.filter(revoked_at__isnull=True).values_list("digest", flat=True)))
        self._digests: frozenset[str] = frozenset()
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    def contains(self, d: str, refresh: bool = True) -> bool:
        """Is ``d`` the digest of a live key? With ``refresh``, a miss may read the table (a database call)."""
        if d in self._digests or not refresh:
            return d in self._digests
        with self._lock:
            if time.monotonic() - self._loaded_at >= INDEX_REFRESH_S:
                self._digests = frozenset(self._load())
                self._loaded_at = time.monotonic()
        return d in self._digests

    def add(self, d: str) -> None:
        with self._lock:
            self._digests = self._digests | {d}

    def forget(self) -> None:
        with self._lock:
            self._digests, self._loaded_at = frozenset(), -float("inf")


live = LiveDigests()


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
