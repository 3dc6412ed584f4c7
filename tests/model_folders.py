"""Hostile model folders for the tests: a copy of a tiny fixture checkpoint, then one thing changed."""
from __future__ import annotations

import json
import shutil
import threading

from tests.conftest import FIXTURE_MODELS


def copy_of(tmp_path, name="m", source="tiny-llama"):
    """A copy of fixture ``source`` (tests/fixtures/models/) as ``tmp_path/name``, without its golden outputs."""
    folder = tmp_path / name
    shutil.copytree(FIXTURE_MODELS / source, folder, ignore=shutil.ignore_patterns("golden.npz"))
    return folder


def edit_json(path, change):
    """Rewrite the JSON file at ``path`` after ``change(data)``."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def within(seconds, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a thread, as a hang guard: it must finish at all within ``seconds`` (its
    result, or what it raised, is handed back)."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: no limit stopped it"
    if "error" in out:
        raise out["error"]
    return out["value"]
