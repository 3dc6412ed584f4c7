"""Start the app under a real Daphne process for tests (the README's run command, minus the venv)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from tests.waiting import wait_for_port

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-exp-test-key-for-the-suite-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def daphne(data_dir: Path, **env_overrides: str):
    """Yield {"url", "log", "api_key"} for a Daphne serving the app from ``data_dir``."""
    from django.conf import settings

    # Same secret as the test process, so tests can build signed permalinks.
    env = {**os.environ, "EXPLAINER_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "explainer.settings",
           "EXPLAINER_SECRET_KEY": settings.SECRET_KEY, "EXPLAINER_API_KEY": API_KEY,
           "EXPLAINER_MODELS_DIR": str(settings.EXPLAINER_MODELS_DIR),  # the suite's models (tests/conftest.py)
           **env_overrides}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "manage.py", "apikeys", "dev"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    log_path = data_dir / "daphne.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "explainer.asgi:application"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_port(port, proc, timeout=30, what="Daphne")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}:\n" + log_path.read_text()) from None
            yield {"url": f"http://127.0.0.1:{port}", "log": log_path, "api_key": API_KEY, "env": env, "pid": proc.pid, "proc": proc}
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
