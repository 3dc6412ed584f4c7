"""A hostile client against one Daphne process: event-loop stalls, starved admission, memory growth.

    .venv/bin/python bench/abuse.py [--big 12] [--sockets 50] [--scenarios 300]

Prints three figures, each beside a reference measured in the same run (this machine is shared
and noisy, so the reference says what "quiet" looked like at the time):

1. **Stall**: a WebSocket client pings the server every 20 ms. A pong is written by the same
   event loop that runs every view and socket, so the longest round trip is the longest time
   the loop could not serve anyone. Measured while nothing else happens (reference), then
   while 1 MB bodies hit ``/v1/messages``, ``/v1/messages/count_tokens`` and 64 KB frames (the
   socket's limit) of one unbroken word hit ``ws/stream/``. Target: under 100 ms.
2. **Admission**: the time a normal API request takes alone (reference), then while
   ``--sockets`` stream sockets each replay a run at 2 s a token. Target: under 1 s.
3. **Memory**: the server's resident memory while ``--scenarios`` distinct long scenarios are
   opened, one stage after another in walk-through order, plus 20 requests of 1 MB. Target:
   under 400 MB, and flat after warm-up (the caches are bounded in bytes).
4. **Hostile model folders** (``bench/abuse_folders.py``): for each folder (a licence linked to a
   secret, chat templates without bounds, a config claiming 10 million layers, a million-tensor
   header, a backtracking pre-tokenizer pattern), the time to answer, the peak memory and the
   longest event-loop stall while its card, ``/scenario/encode`` and an API call ask for it.
5. **Lock-out**: whether wrong keys and room codes from an address lock out the right key and a
   joined student there, and how many of 100 concurrent wrong ones are checked.

6. **JSON depth scan**: the time ``jsonlimits.check_text`` (run on every JSON the app reads) takes
   on 1, 2 and 4 MB of the texts that would hurt a scan that recurses or backtracks (escaped strings,
   then nothing but brackets), in this process. Target: linear (the same ms per MB at every size),
   about 10 ms per MB on a quiet machine (tests/test_json_depth.py once asked for 2 s on 1.6 MB).

``--only folders`` runs 4 and 5 alone; ``--only json`` runs 6 alone (no server).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explainer.settings")

import django  # noqa: E402

django.setup()

import websockets  # noqa: E402

from explainer.lifecycle.scenario import Scenario  # noqa: E402
from explainer.stages.registry import built  # noqa: E402
from tests.api import raw  # noqa: E402
from tests.live_server import daphne  # noqa: E402
from tests.urls import stage_url  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import abuse_folders  # noqa: E402

MB = 1024 * 1024
HI = [{"role": "user", "content": "What is a foreign key?"}]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def ping_while(url: str, origin: str, work) -> list[float]:
    """Round trips (ms) of a ping every 20 ms while ``work()`` (a coroutine function) runs."""
    rtts: list[float] = []
    async with websockets.connect(url, origin=origin, max_size=None) as ws:
        await ws.recv()  # hello
        task = asyncio.create_task(work())
        while not task.done():
            t = time.perf_counter()
            pong = await ws.ping()
            await pong
            rtts.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.02)
        await task
    return rtts


def post(srv, path, body_bytes: bytes):
    return raw.request("POST", srv["url"] + path, content=body_bytes,
                       headers={"x-api-key": srv["api_key"], "content-type": "application/json"}, timeout=300)


def _post_big(url: str, key: str, path: str) -> int:
    return raw.request("POST", url + path, content=big_body(path),
                       headers={"x-api-key": key, "content-type": "application/json"}, timeout=300).status_code


def big_body(path: str) -> bytes:
    word = "x" * (MB - 300)  # one unbroken run of letters: the worst case for BPE
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": word}]}
    if path.endswith("/messages"):
        body["max_tokens"] = 16
    return json.dumps(body).encode()


async def stall(srv, n_big: int) -> dict:
    ws_url = srv["url"].replace("http", "ws") + "/ws/stream/"

    async def idle():
        await asyncio.sleep(3)

    async def attack():
        statuses: list[int] = []


        async def frames():
            async with websockets.connect(ws_url, origin=srv["url"], max_size=None) as ws:
                await ws.recv()
                frame = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 8,
                                    "messages": [{"role": "user", "content": "y" * (64 * 1024 - 200)}]})
                for _ in range(n_big):
                    await ws.send(frame)
                    statuses.append(json.loads(await ws.recv()).get("type") == "error" and 400 or 200)
                    await asyncio.sleep(0.5)  # stay under the socket's frame-rate limit

        # The bodies go out from other processes: building and sending them here would compete with
        # the pinger for this process's interpreter lock and count as the server's stall.
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=4) as pool:
            futures = [loop.run_in_executor(pool, _post_big, srv["url"], srv["api_key"], p)
                       for p in ("/v1/messages", "/v1/messages/count_tokens") for _ in range(n_big)]
            await frames()
            statuses += await asyncio.gather(*futures)
        return statuses

    quiet = await ping_while(ws_url, srv["url"], idle)
    result = {}

    async def attack_and_keep():
        result["statuses"] = await attack()
    loud = await ping_while(ws_url, srv["url"], attack_and_keep)
    return {"quiet_max_ms": max(quiet), "quiet_p50_ms": statistics.median(quiet),
            "attack_max_ms": max(loud), "attack_p50_ms": statistics.median(loud), "pings": len(loud),
            "statuses": sorted(set(result["statuses"]))}


async def admission(srv, n_sockets: int) -> dict:
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 16, "messages": HI}).encode()

    def timed():
        t = time.perf_counter()
        r = post(srv, "/v1/messages", body)
        return r.status_code, (time.perf_counter() - t) * 1000

    alone = [await asyncio.to_thread(timed) for _ in range(3)]
    ws_url = srv["url"].replace("http", "ws") + "/ws/stream/"
    socks = []
    for _ in range(n_sockets):
        ws = await websockets.connect(ws_url, origin=srv["url"], max_size=None)
        await ws.recv()
        await ws.send(json.dumps({"model": "claude-haiku-4-5", "max_tokens": 60, "messages": HI,
                                  "explainer": {"pace_ms": 2000}}))
        socks.append(ws)
    await asyncio.sleep(2)
    busy = [await asyncio.to_thread(timed) for _ in range(3)]
    for ws in socks:
        await ws.close()
    return {"alone_ms": min(t for _, t in alone), "with_sockets_ms": max(t for _, t in busy),
            "statuses": sorted({s for s, _ in alone + busy})}


def memory(srv, n_scenarios: int) -> dict:
    stages = [s.slug for s in built()]
    samples = []
    statuses = set()
    filler = ("Explain how PostgreSQL plans a query with several joins, which statistics it reads, "
              "and how an index changes the plan. ")
    for i in range(n_scenarios):
        prompt = f"Question {i}: " + filler * 8  # about 1,000 characters, well inside the window
        sc = Scenario(messages=[{"role": "user", "content": prompt}], seed=i % 7, max_tokens=24)
        r = raw.request("GET", srv["url"] + stage_url(stages[i % len(stages)], sc), timeout=120)
        statuses.add(r.status_code)
        if i % 50 == 49:
            samples.append((i + 1, round(rss_mb(srv["pid"]), 1)))
    for path in ("/v1/messages", "/v1/messages/count_tokens") * 10:
        statuses.add(post(srv, path, big_body(path)).status_code)
    samples.append(("+20 x 1 MB", round(rss_mb(srv["pid"]), 1)))
    return {"rss_mb": samples, "statuses": sorted(statuses)}


def three_figures(srv, args) -> None:
    s = asyncio.run(stall(srv, args.big))
    print(f"1. stall: longest event-loop stall {s['attack_max_ms']:.1f} ms under attack "
          f"(median ping {s['attack_p50_ms']:.1f} ms, {s['pings']} pings); quiet reference: longest "
          f"{s['quiet_max_ms']:.1f} ms, median {s['quiet_p50_ms']:.1f} ms; ratio of longest stalls "
          f"{s['attack_max_ms'] / max(s['quiet_max_ms'], 0.001):.1f}x; statuses {s['statuses']}. Target: under 100 ms.")
    a = asyncio.run(admission(srv, args.sockets))
    print(f"2. admission: a normal request took {a['with_sockets_ms']:.0f} ms with {args.sockets} paced sockets open, "
          f"{a['alone_ms']:.0f} ms alone ({a['with_sockets_ms'] / a['alone_ms']:.1f}x); statuses {a['statuses']}. "
          "Target: under 1 s.")
    m = memory(srv, args.scenarios)
    print(f"3. memory: server RSS (MB) by scenarios opened {m['rss_mb']}; statuses {m['statuses']}. "
          "Target: under 400 MB, flat after warm-up.")


def json_scan() -> None:
    from explainer.llm import jsonlimits

    def texts(mb: int) -> dict[str, str]:
        n = mb * MB
        return {"valid, many strings": json.dumps([["ab", {"x": 1}] for _ in range(n // 18)]),
                "strings then brackets": '"\\\\", ' * (n // 16) + "[" * (n // 2)}

    print("6. JSON depth scan (jsonlimits.check_text, median of 5): ms per MB by size")
    for mb in (1, 2, 4):
        for name, text in texts(mb).items():
            times = []
            for _ in range(5):
                t = time.perf_counter()
                try:
                    jsonlimits.check_text(text)
                except jsonlimits.TooDeep:
                    pass
                times.append(time.perf_counter() - t)
            size = len(text) / MB
            print(f"   {name:>22}: {size:4.1f} MB in {statistics.median(times) * 1000:6.1f} ms "
                  f"({statistics.median(times) * 1000 / size:5.1f} ms per MB)")
    print("   Target: the same ms per MB at every size (linear), about 10 ms per MB on a quiet machine.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", type=int, default=12, help="1 MB bodies per endpoint (and 64 KB socket frames)")
    ap.add_argument("--sockets", type=int, default=50)
    ap.add_argument("--scenarios", type=int, default=300)
    ap.add_argument("--only", choices=("all", "folders", "json"), default="all",
                    help="folders: figures 4 and 5 only; json: figure 6 only")
    args = ap.parse_args()
    if args.only in ("all", "json"):
        json_scan()
    if args.only == "json":
        return
    env = {"EXPLAINER_RATE_REQUESTS_PER_MINUTE": "100000", "EXPLAINER_RATE_INPUT_TOKENS_PER_MINUTE": "100000000",
           "EXPLAINER_RATE_OUTPUT_TOKENS_PER_MINUTE": "100000000", "EXPLAINER_WS_SOCKETS_PER_ADDRESS": "1000",
           "EXPLAINER_WS_RUNS_PER_ADDRESS": "1000"}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        cases = abuse_folders.make_folders(models)
        with daphne(Path(tmp), EXPLAINER_MODELS_DIR=str(models), **env) as srv:
            print(f"server RSS at start: {rss_mb(srv['pid']):.0f} MB")
            if args.only == "all":
                three_figures(srv, args)
            abuse_folders.folders(srv, cases)
        lockout_dir = Path(tmp) / "lockout"  # a fresh server with the default failure limits
        lockout_dir.mkdir()
        with daphne(lockout_dir, EXPLAINER_MODELS_DIR=str(models)) as srv:
            abuse_folders.lockout(srv)


if __name__ == "__main__":
    main()
