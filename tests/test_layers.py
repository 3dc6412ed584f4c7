"""The model core and the engine import no Django (DESIGN.md: imports point web -> lifecycle -> llm)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = re.compile(r"^\s*(from|import)\s+(django|channels|daphne)\b", re.M)


def test_it_keeps_django_out_of_llm_and_lifecycle_sources():
    for layer in ("explainer/llm", "explainer/lifecycle"):
        for path in (ROOT / layer).rglob("*.py"):
            assert not FORBIDDEN.search(path.read_text()), f"{path} imports a web framework"


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
