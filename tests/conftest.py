import shutil
from pathlib import Path

import pytest

FIXTURE_MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
LOCAL_MODEL = "tiny-llama"  # the local model the suite installs: a tiny random Llama-family checkpoint


@pytest.fixture(autouse=True)
def _test_client_host(settings):
    """Django's test client calls itself "testserver"."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models directory holding the tiny Llama-family checkpoint, as ``manage.py models add`` leaves it.

    Every test sees this directory (never the developer's ``var/models``), and so does every Daphne
    the suite starts (``tests/live_server.py`` passes it on)."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(FIXTURE_MODELS / LOCAL_MODEL, root / LOCAL_MODEL, ignore=shutil.ignore_patterns("golden.npz"))
    return root


@pytest.fixture(scope="session", autouse=True)
def _models_dir(models_dir):
    """Set once for the session, before any server fixture starts (session fixtures come first); the
    session's services (explainer.web.services) are built from it."""
    from django.conf import settings

    from explainer.web.services import Services, installed

    settings.EXPLAINER_MODELS_DIR = models_dir
    with installed(Services.from_settings()):
        yield


@pytest.fixture
def own_services(settings):
    """Build services from this test's settings (change them first) and use them for the rest of the test:
    ``own_services()`` returns them. The bundled engine is shared (it only reads its weights); the
    catalog (unless ``own_services(catalog=...)`` passes one on), the lanes, their workers and the
    shutdown state are the test's own."""
    from contextlib import ExitStack

    from explainer.web.services import Services, current, installed

    with ExitStack() as stack:
        yield lambda **reuse: stack.enter_context(installed(Services.from_settings(engine=current().engine, **reuse)))


@pytest.fixture(autouse=True)
def _socket_frames_follow_the_schema(monkeypatch):
    """Every frame a test's WebsocketCommunicator receives from ws/stream/ or ws/rooms/<code>/ is checked against
    the committed JSON Schema of the frames (static/schema/frames.json), the contract the JavaScript reads."""
    from channels.testing import WebsocketCommunicator

    from tests.frame_schema import assert_frames

    receive_from = WebsocketCommunicator.receive_from

    async def checked(self, timeout=1):
        data = await receive_from(self, timeout)
        path = self.scope.get("path", "")
        root = "StreamFrame" if path == "/ws/stream/" else "RoomFrame" if path.startswith("/ws/rooms/") else None
        if root and isinstance(data, str):
            assert_frames([data], root)
        return data

    monkeypatch.setattr(WebsocketCommunicator, "receive_from", checked)


TS_SDK = Path(__file__).resolve().parent / "ts"  # the official TypeScript SDK, pinned in tests/ts/package-lock.json


@pytest.fixture(scope="session")
def node_sdk() -> str:
    """Node.js with the TypeScript SDK installed in tests/ts (npm ci the first time): the path of ``node``."""
    import shutil
    import subprocess

    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("The TypeScript SDK test needs Node.js and npm (Debian: apt-get install nodejs npm).")
    if not (TS_SDK / "node_modules" / "@anthropic-ai" / "sdk").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS_SDK, check=True, capture_output=True, timeout=300)
    return node

