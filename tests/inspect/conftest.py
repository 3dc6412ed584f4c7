"""The inspector under a real Daphne, relaying to a local stand-in of the public API (tests/inspect/upstream.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.inspect.upstream import StandIn
from tests.live_server import ROOT, daphne

UPSTREAM_TIMEOUT_S = "3"  # the stand-in answers at once, except the model that hangs


@pytest.fixture(scope="package")
def upstream():
    with StandIn() as s:
        yield s


@pytest.fixture(scope="package")
def inspector(tmp_path_factory, upstream):
    with daphne(tmp_path_factory.mktemp("inspectdata"), EXPLAINER_UPSTREAM_URL=upstream.url,
                EXPLAINER_UPSTREAM_TIMEOUT_S=UPSTREAM_TIMEOUT_S) as srv:
        yield srv


def new_session(server) -> str:
    """A session made as a script makes one: ``manage.py inspect new``, whose last line holds the base URL."""
    out = subprocess.run([sys.executable, "manage.py", "inspect", "new"], cwd=ROOT, env=server["env"], check=True,
                         capture_output=True, text=True).stdout
    path = out.strip().splitlines()[-1]
    session_id = path.rsplit("/inspect/", 1)[1]
    return f"{server['url']}/inspect/{session_id}"


@pytest.fixture
def base_url(inspector):
    return new_session(inspector)
