"""Settings, all from environment variables with safe defaults for a local run.

EXPLAINER_DEBUG=1            debug pages (never in front of an audience)
EXPLAINER_SECRET_KEY         secret; by default one is generated once into var/secret.key
EXPLAINER_ALLOWED_HOSTS      comma-separated, added to localhost, 127.0.0.1 and ::1
EXPLAINER_DATA_DIR           where the SQLite database and the generated secret live (default var/)
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

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
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"] + [
    h.strip() for h in os.environ.get("EXPLAINER_ALLOWED_HOSTS", "").split(",") if h.strip()
]

INSTALLED_APPS = [
    "daphne",  # runserver serves HTTP and WebSockets through Daphne
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "channels",
    "explainer.stages",
    "explainer.live",
    "explainer.api",
    "explainer.shares",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        # WAL: readers never wait for the writer, and a commit does not wait for the disk
        # twice; every API call writes a trace, so this is on the request's path.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "transaction_mode": "IMMEDIATE"},
    }
}

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "SAMEORIGIN"

# Limits of the live stream socket (see explainer/live/consumers.py)
EXPLAINER_WS_MAX_FRAME_BYTES = int(os.environ.get("EXPLAINER_WS_MAX_FRAME_BYTES", 64 * 1024))
EXPLAINER_WS_FRAMES_PER_10S = int(os.environ.get("EXPLAINER_WS_FRAMES_PER_10S", 20))
EXPLAINER_ENGINE_WORKERS = int(os.environ.get("EXPLAINER_ENGINE_WORKERS", 2))
EXPLAINER_ENGINE_QUEUE = int(os.environ.get("EXPLAINER_ENGINE_QUEUE", 32))  # runs that may wait; past it: 529

# /v1/ API limits
EXPLAINER_API_MAX_BODY_BYTES = int(os.environ.get("EXPLAINER_API_MAX_BODY_BYTES", 1024 * 1024))
DATA_UPLOAD_MAX_MEMORY_SIZE = EXPLAINER_API_MAX_BODY_BYTES + 1024
EXPLAINER_RATE_REQUESTS_PER_MINUTE = int(os.environ.get("EXPLAINER_RATE_REQUESTS_PER_MINUTE", 120))
EXPLAINER_RATE_INPUT_TOKENS_PER_MINUTE = int(os.environ.get("EXPLAINER_RATE_INPUT_TOKENS_PER_MINUTE", 200_000))
EXPLAINER_RATE_OUTPUT_TOKENS_PER_MINUTE = int(os.environ.get("EXPLAINER_RATE_OUTPUT_TOKENS_PER_MINUTE", 40_000))
# Shared state for several processes (rate limits now; the channel layer in a later version).
REDIS_URL = os.environ.get("REDIS_URL", "")
EXPLAINER_TRACE_TTL_HOURS = float(os.environ.get("EXPLAINER_TRACE_TTL_HOURS", 24))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("EXPLAINER_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
