#!/usr/bin/env bash
# Set up (first time) and run the whole test suite, browser tests included.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" "test"

# Browser tests drive Debian's Chromium; Playwright never downloads a browser here.
if [ -z "${CHROMIUM_PATH:-}" ]; then
  CHROMIUM_PATH="$(command -v chromium || true)"
fi
if [ -z "$CHROMIUM_PATH" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium package for the browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    CHROMIUM_PATH="$(command -v chromium)"
  else
    echo "The browser tests need Chromium: install Debian's 'chromium' package (sudo apt-get install chromium) or set CHROMIUM_PATH." >&2
    exit 1
  fi
fi
export CHROMIUM_PATH

# One API test runs the official TypeScript SDK with Node.js.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "Installing Node.js for the TypeScript SDK test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "The TypeScript SDK test needs Node.js and npm: install Debian's 'nodejs' and 'npm' packages." >&2
    exit 1
  fi
fi
# The rate-limit tests run once in-process and once on Redis (127.0.0.1:6379).
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if ! command -v redis-server >/dev/null && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "Installing Redis for the rate-limit tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    sleep 0.5
  else
    echo "The rate-limit tests need Redis on 127.0.0.1:6379: install Debian's 'redis-server' package." >&2
    exit 1
  fi
fi

# The classroom's two-process test keeps its rooms in PostgreSQL (127.0.0.1:5432, user postgres).
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "Installing PostgreSQL for the multi-process classroom test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # local test server only: let the postgres user in over loopback without a password
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      grep -q "explainer-test" "$hba" || sed -i '1i host all postgres 127.0.0.1/32 trust # explainer-test' "$hba"
    done
  fi
  if ls /etc/postgresql/*/main >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    sleep 1
  fi
  if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    echo "The classroom test needs PostgreSQL on 127.0.0.1:5432: install Debian's 'postgresql' package." >&2
    exit 1
  fi
fi

exec .venv/bin/python -m pytest "$@"
