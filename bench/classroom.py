"""A classroom under load: N students in one room, the presenter streams a reply of up to 300 tokens.

    .venv/bin/python bench/classroom.py [--students 50 200 500] [--pace-ms 100]

For each N, on one Daphne process (in-memory channel layer) and on two processes sharing
Redis (channel layer) and PostgreSQL (rooms), prints per-student delivery lag (from the
presenter's broadcast to the student's socket: median, p99, max), frames lost (each
student must see every token frame, in order) and server memory per connected socket
(growth of the servers' resident memory while the students connect, divided by N).
The students are WebSocket clients in this process, on the same two cores as the servers,
so the lag includes the time this process takes to read its sockets.
Targets: 200 students on one process with p99 lag under 100 ms; 500 over two processes
on Redis with nothing lost.

    .venv/bin/python bench/classroom.py --outage

Instead: a room on a private redis-server that is killed while the presenter and the students only
listen, then started again. Prints how long after Redis died each socket was told (``room.interrupted``,
closed with 4503: the server's probe asks Redis every second) and how long after Redis came back a
student got in again. Target: told within a few seconds (the test suite once asked for 8 s; it now
checks only that they are told, and mid-run).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explainer.settings")

import django  # noqa: E402

django.setup()

from explainer.lifecycle.engine import run_request  # noqa: E402
from explainer.lifecycle.scenario import Scenario  # noqa: E402
from explainer.stages.runs import codec  # noqa: E402
from explainer.web.runner import get_engine  # noqa: E402
from tests.live_server import daphne  # noqa: E402
from tests.room_client import connect_presenter, connect_student, start_room, until_closed, wait_for_students  # noqa: E402

TOKENS = 300
REDIS_URL = os.environ.get("EXPLAINER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("EXPLAINER_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def scenario_of_300_tokens() -> Scenario:
    """A scenario whose reply runs the full 300 tokens, or the longest the first seeds give.

    The bundled model now ends its replies (most within 100 tokens), so a reply that runs to
    max_tokens is rare: the bench takes the longest of the first 300 seeds and counts lost
    frames against that reply's own length (``expected_tokens``)."""
    global TOKENS
    base = Scenario().replace(max_tokens=TOKENS, temperature=1.0,
                              messages=[{"role": "user", "content": "Write a long tutorial about PostgreSQL indexes."}])
    engine = get_engine()
    best, best_n = None, 0
    for seed in range(300):
        sc = base.replace(seed=seed)
        n = len(run_request(engine, sc.request_body(), seed=seed).steps)
        if n > best_n:
            best, best_n = sc, n
        if n == TOKENS:
            break
    TOKENS = best_n
    return best


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs))) - 1))]


async def one_room(servers: list[dict], n: int, href: str, pace_ms: int) -> dict:
    urls = [s["url"] for s in servers]
    code, secret = start_room(urls[0])
    presenter = await connect_presenter(urls[0], code, secret)
    await presenter.send(json.dumps({"type": "state", "href": href}))
    await asyncio.sleep(0.3)
    before = sum(rss_kib(s["pid"]) for s in servers)
    students = []
    for i in range(0, n, 25):  # connect in batches, as a class does when the code goes up
        students += await asyncio.gather(*(connect_student(urls[(i + j) % len(urls)], code) for j in range(min(25, n - i))))
    await wait_for_students(presenter, n, timeout=120)
    await asyncio.sleep(0.5)
    after = sum(rss_kib(s["pid"]) for s in servers)

    async def drain_presenter():
        while True:
            f = json.loads(await presenter.recv())
            if f["type"] == "room.run" and f["phase"] == "end":
                return f

    gc.collect()
    gc.disable()  # the students' clients share this process: their garbage collections would show up as lag
    started = time.perf_counter()
    cpu0 = sum(cpu_seconds(s["pid"]) for s in servers), time.process_time()
    await presenter.send(json.dumps({"type": "run", "pace_ms": pace_ms}))
    ends = await asyncio.gather(drain_presenter(), *(s.read_until(lambda f: f["type"] == "room.run" and f["phase"] == "end", timeout=600)
                                                     for s in students))
    wall = time.perf_counter() - started
    gc.enable()
    cpu = sum(cpu_seconds(s["pid"]) for s in servers) - cpu0[0], time.process_time() - cpu0[1]
    lost = 0
    lags: list[float] = []
    for s in students:
        run_frames = s.frames[next(i for i, f in enumerate(s.frames) if f["type"] == "room.run" and f["phase"] == "start"):]
        tokens = [f for f in run_frames if f["type"] == "room.token"]
        seqs = [f["seq"] for f in run_frames]
        gaps = sum(1 for a, b in zip(seqs, seqs[1:]) if b != a + 1)
        lost += max(0, TOKENS - len(tokens)) + gaps
        lags += s.lags
    for ws in [presenter, *(s.ws for s in students)]:
        await ws.close()
    return {"n": n, "lost": lost, "lags": lags, "per_socket_kib": (after - before) / n, "wall": wall,
            "tokens": ends[0].get("usage", {}).get("output_tokens"), "cpu": cpu}


def report(label: str, r: dict) -> None:
    lag = [x * 1000 for x in r["lags"]]
    print(f"{label:<28} {r['n']:>4} students: lag median {statistics.median(lag):6.1f} ms  p99 {pct(lag, 0.99):7.1f} ms  "
          f"max {max(lag):7.1f} ms | frames lost {r['lost']} | {r['per_socket_kib']:5.1f} KiB per socket | "
          f"{r['tokens']} tokens in {r['wall']:.1f} s; CPU busy: servers {100 * r['cpu'][0] / r['wall']:.0f}%, "
          f"students' clients {100 * r['cpu'][1] / r['wall']:.0f}%", flush=True)


async def outage_times(base_url: str, redis, students: int) -> dict:
    from tests.test_rooms_interrupted import join_when_back

    code, secret = start_room(base_url)
    presenter = await connect_presenter(base_url, code, secret)
    listeners = [await connect_student(base_url, code) for _ in range(students)]
    redis.kill()
    died = time.perf_counter()

    async def told(ws) -> float:
        await until_closed(ws, 60)
        return time.perf_counter() - died

    times = await asyncio.gather(told(presenter), *(told(s.ws) for s in listeners))
    redis.start()
    back = time.perf_counter()
    ws, _ = await join_when_back(base_url, code, 60)
    again = time.perf_counter() - back
    await ws.close()
    return {"told_s": sorted(times), "again_s": again}


def outage(students: int) -> None:
    from tests.live_server import free_port
    from tests.test_rooms_interrupted import Redis

    redis = Redis(free_port())
    redis.start()
    try:
        with tempfile.TemporaryDirectory() as tmp, daphne(Path(tmp), REDIS_URL=redis.url) as srv:
            r = asyncio.run(outage_times(srv["url"], redis, students))
    finally:
        redis.kill()
    told = r["told_s"]
    print(f"Redis outage, an idle room (a presenter and {students} students listening): told after "
          f"median {statistics.median(told):.1f} s, max {max(told):.1f} s; a student got in again "
          f"{r['again_s']:.1f} s after Redis came back. Target: told within a few seconds.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, nargs="+", default=[50, 200, 500])
    ap.add_argument("--two-process-students", type=int, nargs="+", default=None, help="default: the same as --students")
    ap.add_argument("--pace-ms", type=int, default=100, help="the presenter's pace between tokens (a room's default is 300)")
    ap.add_argument("--outage", action="store_true", help="only: how soon an idle room of 5 students is told that Redis died")
    args = ap.parse_args()
    if args.outage:
        outage(students=5)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # 500 sockets, twice (client and server ends)

    sc = scenario_of_300_tokens()
    href = f"/learn/streaming/?s={codec().encode(sc)}"
    print(f"presenter streams {TOKENS} tokens at a pace of {args.pace_ms} ms (seed {sc.seed}); students are WebSocket clients in this process")
    # every simulated student connects from 127.0.0.1: lift the per-address caps a real class never meets
    limits = {"EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S": "1000", "EXPLAINER_ROOM_SOCKETS_PER_ADDRESS": "100000"}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        (Path(tmp) / "one").mkdir()
        one = stack.enter_context(daphne(Path(tmp) / "one", **limits))
        for n in args.students:
            report("one process, in-memory", asyncio.run(one_room([one], n, href, args.pace_ms)))
        stack.close()

        import psycopg

        db = f"explainer_bench_{secrets.token_hex(4)}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        try:
            env = {**limits, "REDIS_URL": REDIS_URL, "DATABASE_URL": urlsplit(POSTGRES_URL)._replace(path="/" + db).geturl(),
                   "EXPLAINER_CHANNEL_PREFIX": f"explainer-bench-{secrets.token_hex(4)}"}
            with ExitStack() as two:
                servers = []
                for name in ("a", "b"):
                    (Path(tmp) / name).mkdir()
                    servers.append(two.enter_context(daphne(Path(tmp) / name, **env)))
                for n in args.two_process_students or args.students:
                    report("two processes, Redis", asyncio.run(one_room(servers, n, href, args.pace_ms)))
        finally:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
