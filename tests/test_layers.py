"""The model core and the engine import no Django (DESIGN.md: imports point web -> lifecycle -> llm)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = re.compile(r"^\s*(from|import)\s+(django|channels|daphne)\b", re.M)


def test_it_keeps_django_out_of_llm_and_lifecycle_sources():
    for layer in ("explainer/llm", "explainer/lifecycle"):
        for path in (ROOT / layer).rglob("*.py"):
            assert not FORBIDDEN.search(path.read_text()), f"{path} imports a web framework"


@pytest.mark.slow
def test_it_runs_the_engine_without_loading_django():
    code = (
        "import sys\n"
        "from explainer.lifecycle.engine import Engine\n"
        "from explainer.lifecycle.payload import parse_request\n"
        "req = parse_request({'model': 'claude-sonnet-4-5', 'max_tokens': 3, 'messages': [{'role': 'user', 'content': 'Hi'}]})\n"
        "assert any(e['type'] == 'message_stop' for e in Engine().stream(req))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'channels', 'daphne')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _lint(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(cwd / "pyproject.toml")], cwd=cwd, capture_output=True, text=True,
                          env=env)


def test_the_layers_contracts_hold():
    """pyproject.toml's import-linter contracts: entry points > web apps > web layer > engine > model core, no web framework
    below the web layer, and no training code in the app."""
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in r.stdout


@pytest.mark.slow
def test_an_upward_import_breaks_the_contracts(tmp_path):
    """The same contracts on a copy of the package where the engine imports a web app: the linter fails and says where."""
    import os
    import shutil

    shutil.copytree(ROOT / "explainer", tmp_path / "explainer", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "explainer" / "lifecycle" / "upward.py").write_text("from explainer.stages import registry  # upward\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = _lint(tmp_path, env)
    assert r.returncode != 0
    assert "explainer.lifecycle.upward -> explainer.stages.registry" in r.stdout


@pytest.mark.slow
def test_no_app_imports_another_apps_private_names():
    import ast

    apps = {"api", "live", "rooms", "shares", "stages", "tutorial"}
    bad = []
    for path in (ROOT / "explainer").rglob("*.py"):
        mine = path.relative_to(ROOT / "explainer").parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("explainer."):
                theirs = node.module.split(".")[1]
                if theirs != mine and theirs in apps:
                    bad += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad
