"""Server time and first-visit bytes of every stage page, for a fixed 200-token scenario.

    .venv/bin/python bench/pages.py [--repeats 30]

For each built stage: median and p95 server time of a request through Django's test
client (the scenario's run is computed once, then cached, as in the app), and the bytes
of HTML, CSS and JavaScript a first visit downloads (stylesheets, scripts and the ES
modules they import). Times are also given as a ratio to a reference page rendered in
the same process (the plain error page), since the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explainer.settings")

import django  # noqa: E402

django.setup()
import logging  # noqa: E402

logging.getLogger("django.request").setLevel(logging.ERROR)  # the reference 404s are expected

from django.conf import settings  # noqa: E402
from django.test import Client  # noqa: E402

from explainer.lifecycle.scenario import Scenario  # noqa: E402
from explainer.stages.registry import built  # noqa: E402
from explainer.stages.runs import codec  # noqa: E402

SYSTEM = "You are a helpful assistant for software engineers. Answer with short, concrete explanations."
QUESTION = (
    "We run Apache Airflow in production with a PostgreSQL metadata database and a Celery executor. "
    "Explain how the scheduler decides when a DAG run starts, what the data interval means, why a run "
    "can appear to start one interval late, how catchup and backfill differ, and what happens to task "
    "instances when the scheduler restarts in the middle of a run. Also explain how pools and priority "
    "weights limit concurrency, how retries are scheduled, and which database tables hold the state of "
    "each task instance. Finally, suggest three settings to check when runs queue up but never start."
)
ASSET = re.compile(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"')
IMPORT = re.compile(r'''(?:import|from)\s*["']([^"']+\.js)["']''')


def scenario_of_about(tokens: int) -> Scenario:
    from explainer.llm.tokenizer import load_tokenizer

    tok = load_tokenizer()
    text = QUESTION
    while len(tok.encode_chat(SYSTEM, [("user", text)])) < tokens:
        text += " " + QUESTION
    words = text.split(" ")
    while len(tok.encode_chat(SYSTEM, [("user", " ".join(words))])) > tokens:
        words.pop()
    return Scenario(system=SYSTEM, messages=[{"role": "user", "content": " ".join(words)}], max_tokens=48, seed=1)


def asset_bytes(html: str) -> tuple[int, int]:
    """(css, js) bytes of the static files a first visit loads, following ES module imports."""
    seen: set[str] = set()
    todo = ASSET.findall(html)
    css = js = 0
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        path = ROOT / "static" / url.removeprefix("/static/")
        data = path.read_text(encoding="utf-8")
        if url.endswith(".css"):
            css += len(data.encode())
        else:
            js += len(data.encode())
            base = url.rsplit("/", 1)[0]
            for imp in IMPORT.findall(data):
                todo.append(os.path.normpath(f"{base}/{imp}") if not imp.startswith("/") else imp)
    return css, js


def timed(client: Client, url: str, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code in (200, 404), (url, r.status_code)
    return out


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    settings.ALLOWED_HOSTS = ["testserver"]
    client = Client()
    scenario = scenario_of_about(200)
    blob = codec().encode(scenario)
    from explainer.stages.runs import run_of

    n = len(run_of(scenario).prompt_ids)
    print(f"scenario: {n} prompt tokens, max_tokens {scenario.max_tokens}; {args.repeats} requests per page after one warm-up")
    ref = timed(client, "/learn/no-such-stage/", args.repeats)
    ref_med = statistics.median(ref)
    print(f"reference page (404): median {ref_med:.1f} ms")
    print(f"{'stage':14} {'median ms':>10} {'p95 ms':>8} {'p95/ref':>8} {'html KB':>8} {'css KB':>7} {'js KB':>7} {'total KB':>9}")
    for st in built():
        url = f"/learn/{st.slug}/?s={blob}"
        client.get(url)  # warm-up: computes and caches the run
        times = timed(client, url, args.repeats)
        html = client.get(url).content.decode()
        css, js = asset_bytes(html)
        total = len(html.encode()) + css + js
        print(f"{st.slug:14} {statistics.median(times):10.1f} {p95(times):8.1f} {p95(times) / ref_med:8.1f} "
              f"{len(html.encode()) / 1024:8.1f} {css / 1024:7.1f} {js / 1024:7.1f} {total / 1024:9.1f}")
    print("targets: p95 under 150 ms per stage; under 500 KB transferred on a first visit")


if __name__ == "__main__":
    main()
