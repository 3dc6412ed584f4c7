"""Hostile clients against a real Daphne: huge prompts, key guessing, floods of counting, dead Redis.

Each rule is checked by what the client gets back, not by timing (bench/abuse.py measures stalls).
"""
import asyncio
import json

import pytest
import websockets

from explainer.lifecycle.engine import Engine
from explainer.lifecycle.payload import parse_request
from tests.api import raw
from tests.live_server import daphne
from tests.waiting import until_true

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

HI = [{"role": "user", "content": "Hi"}]
MB = 1024 * 1024


def post(srv, path, body, key=None, **kw):
    return raw.request("POST", srv["url"] + path, json_body=body, headers={"x-api-key": key or srv["api_key"]}, **kw)


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """Three requests a minute per key, and three wrong keys a minute per address (a burst of six)."""
    with daphne(tmp_path_factory.mktemp("abuse"), EXPLAINER_RATE_REQUESTS_PER_MINUTE="3",
                EXPLAINER_AUTH_FAILURES_PER_MINUTE="3") as srv:
        yield srv


def test_the_engine_refuses_text_that_cannot_fit_before_any_bpe(monkeypatch):
    eng = Engine()

    def no_bpe(*a, **k):
        raise AssertionError("the tokenizer ran on a prompt that cannot fit")

    monkeypatch.setattr(eng.tokenizer, "encode", no_bpe)
    monkeypatch.setattr(eng.tokenizer, "_bpe", no_bpe)
    req = parse_request({"model": "claude-haiku-4-5", "max_tokens": 4,
                         "messages": [{"role": "user", "content": "a" * MB}]})
    with pytest.raises(Exception) as err:
        eng.prompt_ids(req)
    assert getattr(err.value, "status", None) == 400 and "prompt is too long: at least" in err.value.message


def _textbook_bpe(ids: list[int], ranks: dict, first: int, limit: int) -> tuple[int, ...]:
    """The quadratic loop of the textbook: merge every occurrence of the lowest-ranked pair, look again."""
    while len(ids) > 1:
        r = min((ranks.get(p, limit) for p in zip(ids, ids[1:])), default=limit)
        if r >= limit:
            break
        pair, merged, i = next(p for p, q in ranks.items() if q == r), [], 0
        while i < len(ids):
            if ids[i:i + 2] == list(pair):
                merged.append(first + r)
                i += 2
            else:
                merged.append(ids[i])
                i += 1
        ids = merged
    return tuple(ids)


def test_a_long_word_gets_the_merges_of_the_textbook_loop():
    """The one merge routine (a heap, O(n log n)) makes the textbook loop's merges for the bundled merge list."""
    tok = Engine().tokenizer
    by_rank = {pair: r for r, pair in enumerate(tok.merges)}
    for word in ("pneumonoultramicroscopicsilicovolcanoconiosis" * 4, "ab" * 300, "x" * 500, "naïve café 你好"):
        assert tok._bpe(word.encode(), tok.model_merges) == _textbook_bpe(list(word.encode()), by_rank, tok.first_merge_id,
                                                                         tok.model_merges)


def test_megabyte_prompts_are_refused_at_once_on_both_endpoints(api_server):
    tight = api_server  # default limits: the answer must be the 400 itself, not a 429
    messages = [{"role": "user", "content": "x" * (MB - 200)}]
    for path, body in (("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 4, "messages": messages}),
                       ("/v1/messages/count_tokens", {"model": "claude-haiku-4-5", "messages": messages})):
        r = post(tight, path, body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert "prompt is too long: at least" in r.json()["error"]["message"]


def test_count_tokens_and_refused_requests_cost_a_request(tmp_path):
    with daphne(tmp_path, EXPLAINER_RATE_REQUESTS_PER_MINUTE="3") as srv:
        too_long = {"model": "claude-haiku-4-5", "max_tokens": 4, "messages": [{"role": "user", "content": "y" * 40_000}]}
        count = {"model": "claude-haiku-4-5", "messages": HI}
        got = [post(srv, "/v1/messages", too_long).status_code, post(srv, "/v1/messages/count_tokens", count).status_code,
               post(srv, "/v1/messages", too_long).status_code]
        assert got == [400, 200, 400]
        r = post(srv, "/v1/messages/count_tokens", count)
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        assert int(r.headers["retry-after"]) > 0


def test_wrong_keys_are_limited_per_address(tight):
    codes = [post(tight, "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 2, "messages": HI},
                  key=f"sk-exp-guess-{i}").status_code for i in range(12)]
    assert codes[:6] == [401] * 6, codes  # the burst
    assert codes[-1] == 429, codes
    r = post(tight, "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 2, "messages": HI}, key="sk-exp-guess-x")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error" and "wrong API key" in r.json()["error"]["message"]


def test_a_dead_redis_is_a_503_with_retry_after_and_the_stream_socket_still_works(tmp_path):
    # nothing listens on port 1: the rate-limit store and the channel layer are both unreachable
    with daphne(tmp_path, REDIS_URL="redis://127.0.0.1:1/0") as srv:
        r = post(srv, "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 2, "messages": HI})
        assert r.status_code == 503, r.text
        err = r.json()
        assert err["type"] == "error" and err["error"]["type"] == "api_error" and "Redis" in err["error"]["message"]
        assert int(r.headers["retry-after"]) >= 1

        async def stream():
            url = srv["url"].replace("http", "ws") + "/ws/stream/"
            async with websockets.connect(url, origin=srv["url"]) as ws:
                assert json.loads(await ws.recv())["type"] == "explainer.hello"
                await ws.send(json.dumps({"model": "claude-haiku-4-5", "max_tokens": 3, "messages": HI}))
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if frame["type"] in ("explainer.done", "error"):
                        return frame
        assert asyncio.run(stream())["type"] == "explainer.done"


async def test_an_unreachable_database_is_a_503(monkeypatch):
    from django.db import OperationalError
    from django.test import AsyncClient

    from explainer.api import keys

    def down(key):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(keys, "check", down)
    r = await AsyncClient().post("/v1/messages", data=json.dumps({"model": "claude-haiku-4-5", "max_tokens": 2, "messages": HI}),
                                 content_type="application/json", headers={"x-api-key": "sk-exp-anything"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "api_error" and "database" in r.json()["error"]["message"]
    assert r["retry-after"]


def test_stream_sockets_are_capped_per_address(tmp_path):
    with daphne(tmp_path, EXPLAINER_WS_SOCKETS_PER_ADDRESS="3") as srv:
        url = srv["url"].replace("http", "ws") + "/ws/stream/"

        async def attack():
            held = [await websockets.connect(url, origin=srv["url"]) for _ in range(3)]
            for ws in held:
                assert json.loads(await ws.recv())["type"] == "explainer.hello"
            extra = await websockets.connect(url, origin=srv["url"])
            frame = json.loads(await extra.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(extra.recv(), 10)
            await held[0].close()

            async def slot_free():  # once the server has seen the close, a slot is free again
                ws = await websockets.connect(url, origin=srv["url"])
                first = json.loads(await ws.recv())
                if first["type"] == "explainer.hello":
                    return ws, first
                await ws.close()
                return None

            again, hello = await until_true(slot_free, 30, "no slot was free after a socket closed", every=0.1)
            for ws in held[1:] + [again]:
                await ws.close()
            return frame, closed.value.rcvd.code, hello

        frame, code, hello = asyncio.run(attack())
        assert frame["error"]["type"] == "rate_limit_error" and frame["retry_after"] >= 1
        assert code == 4429 and hello["type"] == "explainer.hello"


async def test_runs_at_once_are_capped_per_address(monkeypatch, settings):
    from channels.testing import WebsocketCommunicator

    from explainer.asgi import application
    from explainer.live import consumers

    settings.EXPLAINER_WS_RUNS_PER_ADDRESS = 2
    comm = WebsocketCommunicator(application, "/ws/stream/", headers=[(b"origin", b"http://127.0.0.1:8000")])
    addr = "10.9.8.7"
    comm.scope["client"] = [addr, 40000]
    assert (await comm.connect())[0]
    await comm.receive_json_from()
    # two runs of this address are still in the engine (held here, deterministically)
    assert consumers.open_runs.acquire(addr, 2) and consumers.open_runs.acquire(addr, 2)
    try:
        await comm.send_json_to({"model": "claude-haiku-4-5", "max_tokens": 2, "messages": HI})
        frame = await comm.receive_json_from(timeout=10)
        assert frame["type"] == "error" and frame["error"]["type"] == "rate_limit_error" and frame["retry_after"] >= 1
    finally:
        consumers.open_runs.release(addr)
        consumers.open_runs.release(addr)
    await comm.send_json_to({"model": "claude-haiku-4-5", "max_tokens": 2, "messages": HI})
    while (frame := await comm.receive_json_from(timeout=30))["type"] not in ("explainer.done", "error"):
        pass
    assert frame["type"] == "explainer.done"
    assert consumers.open_runs.count(addr) == 0
    await comm.disconnect()


def test_paced_sockets_do_not_starve_the_api(tmp_path):
    """Sockets replaying at 2 s a token used to hold the engine's admission slots for minutes."""
    with daphne(tmp_path, EXPLAINER_ENGINE_QUEUE="2", EXPLAINER_ENGINE_WORKERS="1",
                EXPLAINER_WS_SOCKETS_PER_ADDRESS="50", EXPLAINER_WS_RUNS_PER_ADDRESS="50") as srv:
        url = srv["url"].replace("http", "ws") + "/ws/stream/"

        async def scenario():
            socks = []
            for _ in range(6):  # twice the engine's three places
                ws = await websockets.connect(url, origin=srv["url"])
                await ws.recv()
                await ws.send(json.dumps({"model": "claude-haiku-4-5", "max_tokens": 40, "messages": HI,
                                          "explainer": {"pace_ms": 2000}}))
                socks.append(ws)
            seen: list[tuple[int, str]] = []  # (socket, frame type), in the order they arrived

            async def read(i, ws):
                try:
                    async for raw_frame in ws:
                        seen.append((i, json.loads(raw_frame)["type"]))
                except websockets.ConnectionClosed:
                    pass

            readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(socks)]

            async def answered():  # 529 while the engine still runs the sockets' requests
                r = await asyncio.to_thread(post, srv, "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 2, "messages": HI})
                return r if r.status_code != 529 else None

            r = await until_true(answered, 60, "the API stayed overloaded while the sockets replayed", every=0.5)
            replaying = [i for i in range(len(socks)) if any(s == (i, "explainer.token") for s in seen)
                         and not any(s in ((i, "explainer.done"), (i, "error")) for s in seen)]
            for task in readers:
                task.cancel()
            for ws in socks:
                await ws.close()
            return r, replaying, seen

        r, replaying, seen = asyncio.run(scenario())
        assert r.status_code == 200, r.text
        # ... while sockets were still replaying their runs at 2 s a token (their runs had left the engine)
        assert replaying, seen


def test_deep_json_is_a_400_never_a_500(api_server):
    tight = api_server
    deep_schema = {"type": "object"}
    for _ in range(400):
        deep_schema = {"type": "object", "properties": {"x": deep_schema}}
    bodies = [
        b"[" * 30000,
        json.dumps({"model": "claude-haiku-4-5", "max_tokens": 4, "messages": HI,
                    "tools": [{"name": "t", "input_schema": deep_schema}]}).encode(),
        json.dumps({"model": "claude-haiku-4-5", "max_tokens": 4,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "x", "z": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]}]}).encode(),
    ]
    for body in bodies:
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            r = raw.request("POST", tight["url"] + path, content=body,
                            headers={"x-api-key": tight["api_key"], "content-type": "application/json"})
            assert r.status_code == 400, (path, r.status_code, r.text[:200])
            assert r.json()["error"]["type"] == "invalid_request_error"
