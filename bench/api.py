"""The API through the official SDK against a live Daphne, against the engine called directly.

    .venv/bin/python bench/api.py [--repeats 15]

Prints time to first token and tokens/s for a 100-token prompt (median, p95), the cost of
the HTTP/SSE layer as a ratio of the same request's time through the SDK to the engine's
own time in this process, and requests/s for 16 concurrent short non-streaming clients,
checking that no request is lost or duplicated. An extra line gives the same ratio for a
plain HTTP client that reads the event stream without the SDK (the server's share alone).

The server writes each call's trace just after the answer (about 3 ms of its CPU), so that
write is in neither timed figure; the in-process reference records no trace. A 50 ms pause
after each call, to keep the write away from the next measurement, changed no figure beyond
the noise, so there is none. The concurrent requests/s include every trace write.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explainer.settings")

import django  # noqa: E402

django.setup()
import logging  # noqa: E402

for _name in ("httpx", "httpx2"):  # the SDK's HTTP client logs every request at INFO
    logging.getLogger(_name).setLevel(logging.WARNING)

import anthropic  # noqa: E402

from explainer.lifecycle.engine import Engine  # noqa: E402
from explainer.lifecycle.payload import parse_request  # noqa: E402
from tests.live_server import daphne  # noqa: E402

PROMPT = ("Explain how a PostgreSQL query planner chooses between a sequential scan and an index scan, "
          "what statistics it reads, how the cost constants influence it, and when an index-only scan is possible. ")


def prompt_of(tokens: int) -> str:
    from explainer.llm.tokenizer import load_tokenizer

    tok = load_tokenizer()
    words = (PROMPT * 4).split(" ")
    while len(tok.encode_chat(None, [("user", " ".join(words))])) > tokens:
        words.pop()
    return " ".join(words)


class RawStream:
    """POST /v1/messages with ``stream: true`` on one kept-alive connection, reading the events without the SDK."""

    def __init__(self, url: str, api_key: str, body: dict):
        host, port = url.rsplit("/", 1)[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.body = json.dumps({**body, "stream": True}).encode()
        self.headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01", "content-type": "application/json"}

    def __call__(self) -> int:
        """The number of events; raises unless the stream ended with message_stop."""
        self.conn.request("POST", "/v1/messages", body=self.body, headers=self.headers)
        resp = self.conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"raw stream: HTTP {resp.status}: {resp.read()[:200]!r}")
        data = bytearray()
        while chunk := resp.read1(65536):
            data += chunk
        events = data.split(b"\n\n")
        if not events[-2].startswith(b"event: message_stop"):
            raise RuntimeError("raw stream: did not end with message_stop")
        return len(events) - 1


def p95(xs):
    return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    text = prompt_of(100)
    messages = [{"role": "user", "content": text}]
    body = {"model": "claude-haiku-4-5", "max_tokens": args.max_tokens, "messages": messages, "temperature": 0}
    engine = Engine()

    with tempfile.TemporaryDirectory() as tmp, daphne(Path(tmp), EXPLAINER_RATE_REQUESTS_PER_MINUTE="100000",
                                                       EXPLAINER_RATE_INPUT_TOKENS_PER_MINUTE="100000000",
                                                       EXPLAINER_RATE_OUTPUT_TOKENS_PER_MINUTE="100000000") as srv:
        client = anthropic.Anthropic(api_key=srv["api_key"], base_url=srv["url"], max_retries=0, timeout=120)
        client.messages.create(**{k: v for k, v in body.items() if k != "temperature"}, extra_body={"temperature": 0})  # warm-up
        raw = RawStream(srv["url"], srv["api_key"], body)
        raw()  # warm-up
        ttft, tps, http_total, engine_total, raw_total = [], [], [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            first = None
            with client.messages.stream(model=body["model"], max_tokens=args.max_tokens, messages=messages, extra_body={"temperature": 0}) as s:
                for _piece in s.text_stream:
                    if first is None:
                        first = time.perf_counter()
                final = s.get_final_message()
            end = time.perf_counter()
            n = final.usage.output_tokens
            ttft.append(((first or end) - t0) * 1000)
            if first and n > 1:
                tps.append((n - 1) / (end - first))
            http_total.append(end - t0)
            # the same request straight through the engine, in this process
            t1 = time.perf_counter()
            for _event in engine.stream(parse_request(body), seed=0):
                pass
            engine_total.append(time.perf_counter() - t1)
            # the same request over HTTP/SSE without the SDK
            t2 = time.perf_counter()
            raw()
            raw_total.append(time.perf_counter() - t2)

        print(f"prompt: {final.usage.input_tokens} tokens; reply: up to {args.max_tokens} tokens (temperature 0); {args.repeats} runs")
        print(f"time to first token (SDK, streaming)   median {statistics.median(ttft):7.1f} ms   p95 {p95(ttft):7.1f} ms")
        if tps:
            print(f"tokens/s after the first token         median {statistics.median(tps):7.1f}      p95(slowest) {sorted(tps)[max(0, len(tps) // 20)]:7.1f}")
        ratio = statistics.median(http_total) / statistics.median(engine_total)
        print(f"whole request: SDK over HTTP/SSE {statistics.median(http_total) * 1000:7.1f} ms, engine in-process "
              f"{statistics.median(engine_total) * 1000:7.1f} ms -> HTTP layer adds {100 * (ratio - 1):+.0f}% (ratio {ratio:.2f})")
        raw_ratio = statistics.median(raw_total) / statistics.median(engine_total)
        print(f"  (extra) plain HTTP client, no SDK    {statistics.median(raw_total) * 1000:7.1f} ms -> the server's HTTP/SSE layer "
              f"alone adds {100 * (raw_ratio - 1):+.0f}% (ratio {raw_ratio:.2f})")

        def short(i: int):
            r = client.messages.create(model="claude-haiku-4-5", max_tokens=4, messages=[{"role": "user", "content": f"Request {i}: hi"}])
            return r.id, r.usage.input_tokens

        n_req = 16 * 8
        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(short, range(n_req)))
        dt = time.perf_counter() - t0
        ids = [r[0] for r in results]
        print(f"16 concurrent clients, {n_req} short requests: {n_req / dt:.1f} requests/s; "
              f"answered {len(results)}/{n_req}, distinct ids {len(set(ids))} (lost: {n_req - len(results)}, duplicated: {len(ids) - len(set(ids))})")


if __name__ == "__main__":
    main()
