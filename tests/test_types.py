"""The type checker is clean: mypy, configured in pyproject.toml ([tool.mypy]), strict on the model core
(explainer.llm, training aside), the engine (explainer.lifecycle) and the inspector (explainer.inspect, with
django-stubs' plugin).

mypy keeps its cache in .mypy_cache/ (git-ignored): a run after a small change takes a few seconds,
the first about half a minute."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mypy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_the_model_core_the_engine_and_the_inspector_type_check():
    r = _mypy()  # the files and the settings are pyproject.toml's
    assert r.returncode == 0, "mypy found type errors:\n" + r.stdout[-8000:] + r.stderr[-2000:]


def test_the_checker_is_strict_on_every_checked_package(tmp_path):
    """A function without annotations is an error in each package (strict), read through a shadow of one of its files."""
    untyped = tmp_path / "untyped.py"
    untyped.write_text("def double(x):\n    return 2 * x\n")
    targets = ("explainer/llm/tokentext.py", "explainer/lifecycle/tool_format.py", "explainer/inspect/jsonish.py")
    shadows = [arg for target in targets for arg in ("--shadow-file", target, str(untyped))]
    r = _mypy(*shadows, *targets)
    assert r.returncode == 1, r.stdout + r.stderr
    for target in targets:
        assert f"{target}:1: error: Function is missing a type annotation  [no-untyped-def]" in r.stdout, r.stdout
