"""The inspector's relay: time to first token through a session against the same local upstream called directly.

    .venv/bin/python bench/inspector.py [--runs 60]

A stand-in of the public API (tests/inspect/upstream.py) answers a streamed call; the same request is
timed direct to it and through an inspector session under a real Daphne (the README's run command),
alternating, each with a kept-alive HTTP client, from sending the request to reading the first
``content_block_delta``. Prints the medians (and p90s) in ms and the difference; the target is under
5 ms more at the median. The session's lookup, the relay and the start of the recording are all in
the figure; the call's database write comes after its stream ends, so it is not.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explainer.settings")

import django  # noqa: E402

django.setup()
import httpx2  # noqa: E402

from tests.inspect.conftest import new_session  # noqa: E402
from tests.inspect.upstream import StandIn  # noqa: E402
from tests.live_server import daphne  # noqa: E402

logging.getLogger("httpx2").setLevel(logging.WARNING)
TARGET_MS = 5.0
BODY = {"model": "claude-sonnet-4-6", "max_tokens": 200, "stream": True,
        "system": "You answer in one short paragraph.", "messages": [{"role": "user", "content": "How does a B-tree index stay balanced?"}]}
HEADERS = {"x-api-key": "sk-ant-bench-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}


def first_token_ms(client: httpx2.Client, url: str) -> float:
    start = time.perf_counter()
    seen, took = b"", None
    with client.stream("POST", url, json=BODY, headers=HEADERS) as r:
        for chunk in r.iter_raw():  # read to the end, so the connection is reused
            seen += chunk
            if took is None and b"content_block_delta" in seen:
                took = (time.perf_counter() - start) * 1000
    if took is None:
        raise RuntimeError(f"no content_block_delta from {url}: {seen[:200]!r}")
    return took


def p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    with StandIn() as up, daphne(Path(tempfile.mkdtemp(prefix="bench-inspector-")), EXPLAINER_UPSTREAM_URL=up.url) as srv:
        base = new_session(srv)
        direct, proxied = [], []
        with httpx2.Client(timeout=30) as a, httpx2.Client(timeout=30) as b:
            for _ in range(args.warmup):
                first_token_ms(a, up.url + "/v1/messages")
                first_token_ms(b, base + "/v1/messages")
            for _ in range(args.runs):
                direct.append(first_token_ms(a, up.url + "/v1/messages"))
                proxied.append(first_token_ms(b, base + "/v1/messages"))
    d, p = statistics.median(direct), statistics.median(proxied)
    print(f"time to first token, median of {args.runs} (p90):")
    print(f"  direct to the local upstream   {d:7.2f} ms  ({p90(direct):.2f})")
    print(f"  through an inspector session   {p:7.2f} ms  ({p90(proxied):.2f})")
    print(f"  difference                     {p - d:+7.2f} ms  (target: under {TARGET_MS:g} ms)")
    if p - d >= TARGET_MS:
        sys.exit(1)


if __name__ == "__main__":
    main()
