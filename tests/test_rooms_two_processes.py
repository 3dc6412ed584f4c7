"""The classroom across two Daphne processes: channel layer on Redis, database on PostgreSQL,
the presenter on one process and students on both; every frame reaches every student, in order.

Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (scripts/test.sh sees to both);
EXPLAINER_TEST_REDIS_URL and EXPLAINER_TEST_POSTGRES_URL point elsewhere."""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from contextlib import ExitStack
from urllib.parse import urlsplit

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.runs import codec
from tests.live_server import daphne
from tests.room_client import check_in_order, connect_presenter, connect_student, start_room, wait_for_students

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

REDIS_URL = os.environ.get("EXPLAINER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("EXPLAINER_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def postgres_db():
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    import psycopg

    name = f"explainer_test_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(POSTGRES_URL)
    yield parts._replace(path="/" + name).geturl()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory, postgres_db):
    env = {"DATABASE_URL": postgres_db, "REDIS_URL": REDIS_URL,
           # pub/sub channels are global to a Redis server: keep this run's rooms to itself
           "EXPLAINER_CHANNEL_PREFIX": f"explainer-test-{secrets.token_hex(4)}"}
    with ExitStack() as stack:
        a = stack.enter_context(daphne(tmp_path_factory.mktemp("daphne-a"), **env))
        b = stack.enter_context(daphne(tmp_path_factory.mktemp("daphne-b"), **env))
        yield a, b


def test_the_app_runs_on_postgresql(postgres_db, two_servers):
    """DATABASE_URL really selects PostgreSQL: the servers' migrations created the tables there."""
    import psycopg

    env = {**os.environ, "DATABASE_URL": postgres_db, "DJANGO_SETTINGS_MODULE": "explainer.settings"}
    out = subprocess.run([sys.executable, "manage.py", "showmigrations", "rooms", "--plan"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "[X]  rooms.0001_initial" in out
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute("select count(*) from information_schema.tables where table_name = 'rooms_room'").fetchone()[0] == 1


def test_a_room_spans_two_processes(two_servers):
    a, b = two_servers
    code, secret = start_room(a["url"])  # created through process A, stored in PostgreSQL
    href = f"/learn/sampling/?s={codec().encode(Scenario().replace(max_tokens=40, temperature=0.9, seed=7))}"

    async def scenario():
        presenter = await connect_presenter(a["url"], code, secret)
        students = [await connect_student(b["url"] if i % 3 else a["url"], code) for i in range(9)]
        await wait_for_students(presenter, len(students))  # presence crosses processes too
        await presenter.send(json.dumps({"type": "state", "href": href}))
        for s in students:
            f = await s.read_until(lambda f: f["type"] == "room.state")
            assert f["state"]["href"] == href
        await presenter.send(json.dumps({"type": "run", "pace_ms": 0}))
        runs = []
        for s in students:
            await s.read_until(lambda f: f["type"] == "room.run" and f["phase"] == "end", timeout=120)
            tokens = check_in_order(s.frames)
            assert s.frames[-1].get("stop_reason") in ("end_turn", "max_tokens")
            runs.append([t["token"] for t in tokens])
        assert len(runs[0]) > 0 and all(r == runs[0] for r in runs)
        for ws in [presenter, *(s.ws for s in students)]:
            await ws.close()
        return runs[0]

    tokens = asyncio.run(scenario())
    assert 0 < len(tokens) <= 40


def test_everyone_asks_across_two_processes(two_servers):
    """Issue 23, item 4 with the class on two processes: questions reach the presenter's process and are taken back
    across Redis, each phone streams its own reply from its own process, and the presenter's timeline draws the rows
    its own process batched while the round's count says how many questions were answered in all."""
    from tests.test_rooms_ask import alone

    a, b = two_servers
    code, secret = start_room(a["url"])
    questions = ["What does a tokenizer do?", "What is a logit?", "Why do models need a KV cache?", "How is a token sampled?"]

    async def scenario():
        presenter = await connect_presenter(a["url"], code, secret)
        students = [await connect_student(a["url"] if i % 2 else b["url"], code) for i in range(len(questions))]
        await wait_for_students(presenter, len(students))
        await presenter.send(json.dumps({"type": "ask", "op": "open"}))
        for s, q in zip(students, questions, strict=True):
            await s.read_until(lambda f: f["type"] == "room.ask" and f["phase"] == "open")
            await s.ws.send(json.dumps({"type": "question", "text": q}))
            asked = await s.read_until(lambda f: f["type"] in ("room.asked", "error"))
            assert asked == {"type": "room.asked", "round": 1, "text": q}
        await presenter.send(json.dumps({"type": "ask", "op": "send"}))
        for s, q in zip(students, questions, strict=True):
            end = await s.read_until(lambda f: f["type"] == "room.reply" and f["phase"] == "end", timeout=120)
            assert "error" not in end
            assert [f["piece"] for f in s.frames if f["type"] == "room.reply" and f["phase"] == "token"] == alone(q)
        seen = []
        while not seen or not (seen[-1]["type"] == "room.timeline" and seen[-1]["done"]):
            seen.append(json.loads(await asyncio.wait_for(presenter.recv(), 60)))
        final = seen[-1]
        listed = [f for f in seen if f["type"] == "room.questions"][-1]
        assert listed["answered"] == len(questions) and {q["status"] for q in listed["questions"]} == {"done"}
        assert len(final["highlight"]) == len(questions) // 2  # the students on the presenter's process
        for ws in [presenter, *(s.ws for s in students)]:
            await ws.close()

    asyncio.run(scenario())
