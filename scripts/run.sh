#!/usr/bin/env bash
# Set up (first time) and start the app on http://127.0.0.1:8000, served by Daphne (HTTP + WebSocket).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" ""
.venv/bin/python manage.py migrate --noinput >/dev/null
KEY="$(.venv/bin/python manage.py apikeys dev)"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
echo "Lifecycle Explainer on http://$HOST:$PORT/  (Ctrl-C stops it)"
echo "API: base_url http://$HOST:$PORT  development key: $KEY"
exec .venv/bin/daphne -b "$HOST" -p "$PORT" explainer.asgi:application
