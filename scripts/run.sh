#!/usr/bin/env bash
# Set up (first time) and start the app on port 8000, served by Daphne (HTTP + WebSocket).
# It listens on every interface so that students' phones on the same network can join a
# classroom room; EXPLAINER_LOCAL_ONLY=1 keeps it to this machine.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" ""
.venv/bin/python manage.py migrate --noinput >/dev/null
KEY="$(.venv/bin/python manage.py apikeys dev)"
if [ "${EXPLAINER_LOCAL_ONLY:-0}" = "1" ]; then DEFAULT_HOST=127.0.0.1; else DEFAULT_HOST=0.0.0.0; fi
HOST="${HOST:-$DEFAULT_HOST}"
PORT="${PORT:-8000}"
echo "Lifecycle Explainer on http://127.0.0.1:$PORT/  (Ctrl-C stops it)"
if [ "$HOST" = "0.0.0.0" ]; then
  LAN="$(.venv/bin/python -c 'from explainer.network import lan_address; print(lan_address() or "")' 2>/dev/null || true)"
  [ -n "$LAN" ] && echo "Students on this network join at http://$LAN:$PORT/join"
fi
echo "API: base_url http://127.0.0.1:$PORT  development key: $KEY"
exec .venv/bin/daphne -b "$HOST" -p "$PORT" explainer.asgi:application
