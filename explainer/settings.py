"""Settings, all from environment variables with safe defaults for a local run.

EXPLAINER_DEBUG=1            debug pages (never in front of an audience)
EXPLAINER_SECRET_KEY         secret; by default one is generated once into var/secret.key
EXPLAINER_SECRET_KEY_FALLBACKS  former secrets, comma-separated: what they signed (links, room passes)
                             is still accepted while they are listed (key rotation)
EXPLAINER_ALLOWED_HOSTS      comma-separated, added to localhost, 127.0.0.1 and ::1
EXPLAINER_DATA_DIR           where the SQLite database and the generated secret live (default var/)
DATABASE_URL                 e.g. postgres://user@host:5432/name: PostgreSQL instead of the SQLite file
REDIS_URL                    e.g. redis://127.0.0.1:6379/0: channel layer and rate limits shared by
                             several Daphne processes (default: in-process, one process only)
EXPLAINER_PUBLIC_URL         the address students type or scan to join a room (default: worked out
                             from the request, with this machine's network address for localhost)
EXPLAINER_UPSTREAM_URL       where /inspect/<id>/v1/ relays a developer's own calls (default
                             https://api.anthropic.com); set by the operator only, never by a request
EXPLAINER_UPSTREAM_TIMEOUT_S seconds the inspector waits on the upstream (to connect, between two chunks)
EXPLAINER_INSPECT_TTL_HOURS  how long an inspector session and its recorded calls are kept (default 24)
"""
from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import dj_database_url

from explainer.network import lan_address

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("EXPLAINER_DATA_DIR", BASE_DIR / "var"))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _flag(name: str, default: bool = False) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in ("1", "true", "yes", "on")


def _secret_key() -> str:
    if os.environ.get("EXPLAINER_SECRET_KEY"):
        return os.environ["EXPLAINER_SECRET_KEY"]
    path = DATA_DIR / "secret.key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = _flag("EXPLAINER_DEBUG")
SECRET_KEY = _secret_key()
# Rotation: set the new EXPLAINER_SECRET_KEY and list the old one here until its links may stop working.
SECRET_KEY_FALLBACKS = [k.strip() for k in os.environ.get("EXPLAINER_SECRET_KEY_FALLBACKS", "").split(",") if k.strip()]


ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"] + [
    h.strip() for h in os.environ.get("EXPLAINER_ALLOWED_HOSTS", "").split(",") if h.strip()
]
# A classroom: students' phones reach the presenter's laptop by its network address or name.
if not _flag("EXPLAINER_LOCAL_ONLY"):
    ALLOWED_HOSTS += [h for h in (lan_address(), socket.gethostname(), socket.gethostname() + ".local") if h]
EXPLAINER_PUBLIC_URL = os.environ.get("EXPLAINER_PUBLIC_URL", "").rstrip("/")
# Behind a reverse proxy that terminates TLS (see README, "Several processes").
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("EXPLAINER_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
if _flag("EXPLAINER_BEHIND_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
    # Browsers reach this app only through the proxy's https: cookies never travel over plain
    # http, and HSTS (sent on https requests only) keeps them on https. Left off otherwise, so a
    # plain http://127.0.0.1 run keeps working.
    CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("EXPLAINER_HSTS_SECONDS", 365 * 24 * 3600))

INSTALLED_APPS = [
    "daphne",  # runserver serves HTTP and WebSockets through Daphne
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "channels",
    "explainer.stages",
    "explainer.live",
    "explainer.api",
    "explainer.shares",
    "explainer.rooms",
    "explainer.tutorial",
    "explainer.inspect",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",  # CONTENT_SECURITY_POLICY below
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "explainer.web.middleware.FailureMiddleware",  # a busy database is a 503, a JSON endpoint's failure JSON
]

ROOT_URLCONF = "explainer.urls"
ASGI_APPLICATION = "explainer.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

DATABASES = {
    "default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=0, conn_health_checks=True)
} if os.environ.get("DATABASE_URL") else {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        # WAL: readers never wait for the writer, and a commit does not wait for the disk
        # twice; every API call writes a trace, so this is on the request's path.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "transaction_mode": "IMMEDIATE",
                    # how long a write waits for another process's write lock before it gives up (Django's
                    # default is 5 s): past it, the page is a 503 with Retry-After (explainer/web/middleware.py)
                    "timeout": float(os.environ.get("EXPLAINER_DB_BUSY_TIMEOUT_S", 2))},
    }
}

# Shared state for several processes: the channel layer (classroom rooms, whose presenter and
# students may sit on different processes) and the rate limits.
REDIS_URL = os.environ.get("REDIS_URL", "")
# Pub/sub: a room's broadcast is one PUBLISH whatever the class size, each process fans it
# out to its own sockets, and nothing is dropped for capacity (the list-based layer drops
# group messages past a per-channel capacity).
CHANNEL_LAYERS = {"default": {
    "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "CONFIG": {"hosts": [REDIS_URL], "prefix": os.environ.get("EXPLAINER_CHANNEL_PREFIX", "explainer")},
} if REDIS_URL else {
    "BACKEND": "explainer.live.layers.SweepingInMemoryChannelLayer",
    # a student whose socket is slow falls behind; a full queue would drop room frames silently
    "CONFIG": {"capacity": 5000},
}}

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "SAMEORIGIN"

# Content-Security-Policy on every response from a view (static files get it from explainer/asgi.py).
# No inline script anywhere: data travels in json_script blocks, which do not run. Style attributes
# are allowed (style-src-attr) because the templates set per-item sizes and colours with them
# (style="--w: 37%"); <style> elements and other sites' stylesheets stay refused. 'self' covers the
# pages' own ws:// and wss:// sockets. Embedded pages (?embed=1) replace frame-ancestors with *
# (explainer/stages/views.py) and keep the rest.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],  # charts are drawn and downloaded through canvas and blob URLs
        "connect-src": ["'self'"],
        "frame-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'self'"],
    },
}

# Limits of the live stream socket (see explainer/live/consumers.py)
EXPLAINER_WS_MAX_FRAME_BYTES = int(os.environ.get("EXPLAINER_WS_MAX_FRAME_BYTES", 64 * 1024))
EXPLAINER_WS_FRAMES_PER_10S = int(os.environ.get("EXPLAINER_WS_FRAMES_PER_10S", 20))
# Requests the bundled model runs at once: each prefills in its own worker, and their decode steps run
# together, one batched step for all (explainer/llm/batching.py), so as many workers as a step's rows.
EXPLAINER_ENGINE_WORKERS = int(os.environ.get("EXPLAINER_ENGINE_WORKERS", 32))
EXPLAINER_ENGINE_QUEUE = int(os.environ.get("EXPLAINER_ENGINE_QUEUE", 32))  # runs that may wait; past it: 529
EXPLAINER_BATCH_MAX = int(os.environ.get("EXPLAINER_BATCH_MAX", 32))  # rows of one decode step at most
# Every running request's KV cache together, per model; a request whose cache does not fit waits for one to end.
EXPLAINER_KV_MB = float(os.environ.get("EXPLAINER_KV_MB", 256))
# Local models (untrusted folders, maybe large or slow) have workers of their own, so that their work
# never waits for, or delays, the bundled model's (explainer/web/runner.py).
EXPLAINER_LOCAL_WORKERS = int(os.environ.get("EXPLAINER_LOCAL_WORKERS", 16))
EXPLAINER_LOCAL_QUEUE = int(os.environ.get("EXPLAINER_LOCAL_QUEUE", 16))  # local-model work that may wait; past it: 529 (a page: 503)
# A request (an API call, a stream, a page's computation) that runs longer is stopped: 504 timeout_error.
EXPLAINER_REQUEST_TIMEOUT_S = float(os.environ.get("EXPLAINER_REQUEST_TIMEOUT_S", 60))
# Hugging Face-layout model folders, one per model (manage.py models list | add PATH | pull HF_ID).
EXPLAINER_MODELS_DIR = Path(os.environ.get("EXPLAINER_MODELS_DIR", BASE_DIR / "var" / "models"))
EXPLAINER_MAX_CONTEXT = int(os.environ.get("EXPLAINER_MAX_CONTEXT", 2048))  # a local model's window is cut to this here
# The local models kept open, all together: opening one more first closes unused ones, else waits or is refused.
EXPLAINER_MODELS_MB = float(os.environ.get("EXPLAINER_MODELS_MB", 6144))
EXPLAINER_CACHE_MB = float(os.environ.get("EXPLAINER_CACHE_MB", 128))  # all page caches together (explainer/lifecycle/lru.py)
# Per client address (in one process): open stream sockets, runs at once on them, room sockets,
# and failed authentications (wrong API keys) before a 429.
EXPLAINER_WS_SOCKETS_PER_ADDRESS = int(os.environ.get("EXPLAINER_WS_SOCKETS_PER_ADDRESS", 16))
EXPLAINER_WS_RUNS_PER_ADDRESS = int(os.environ.get("EXPLAINER_WS_RUNS_PER_ADDRESS", 4))
EXPLAINER_ROOM_SOCKETS_PER_ADDRESS = int(os.environ.get("EXPLAINER_ROOM_SOCKETS_PER_ADDRESS", 300))
EXPLAINER_AUTH_FAILURES_PER_MINUTE = int(os.environ.get("EXPLAINER_AUTH_FAILURES_PER_MINUTE", 10))

# /v1/ API limits
EXPLAINER_API_MAX_BODY_BYTES = int(os.environ.get("EXPLAINER_API_MAX_BODY_BYTES", 1024 * 1024))
DATA_UPLOAD_MAX_MEMORY_SIZE = EXPLAINER_API_MAX_BODY_BYTES + 1024
EXPLAINER_RATE_REQUESTS_PER_MINUTE = int(os.environ.get("EXPLAINER_RATE_REQUESTS_PER_MINUTE", 120))
EXPLAINER_RATE_INPUT_TOKENS_PER_MINUTE = int(os.environ.get("EXPLAINER_RATE_INPUT_TOKENS_PER_MINUTE", 200_000))
EXPLAINER_RATE_OUTPUT_TOKENS_PER_MINUTE = int(os.environ.get("EXPLAINER_RATE_OUTPUT_TOKENS_PER_MINUTE", 40_000))
# A streamed reply's events are written together at most this often (the first token and the end never wait).
EXPLAINER_API_STREAM_HOLD_MS = float(os.environ.get("EXPLAINER_API_STREAM_HOLD_MS", 10))
EXPLAINER_TRACE_TTL_HOURS = float(os.environ.get("EXPLAINER_TRACE_TTL_HOURS", 24))
# The inspector (explainer/inspect): a developer's own calls relayed to the real API and explained.
EXPLAINER_UPSTREAM_URL = os.environ.get("EXPLAINER_UPSTREAM_URL", "https://api.anthropic.com").rstrip("/")
EXPLAINER_UPSTREAM_TIMEOUT_S = float(os.environ.get("EXPLAINER_UPSTREAM_TIMEOUT_S", 600))
EXPLAINER_INSPECT_TTL_HOURS = float(os.environ.get("EXPLAINER_INSPECT_TTL_HOURS", 24))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("EXPLAINER_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

# Classroom rooms (explainer/rooms)
EXPLAINER_LOCAL_ONLY = _flag("EXPLAINER_LOCAL_ONLY")
EXPLAINER_ROOM_TTL_HOURS = float(os.environ.get("EXPLAINER_ROOM_TTL_HOURS", 6))
EXPLAINER_ROOM_MAX_FRAME_BYTES = int(os.environ.get("EXPLAINER_ROOM_MAX_FRAME_BYTES", 16 * 1024))
EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S = int(os.environ.get("EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S", 20))
EXPLAINER_ROOM_PRESENTER_FRAMES_PER_10S = int(os.environ.get("EXPLAINER_ROOM_PRESENTER_FRAMES_PER_10S", 200))
