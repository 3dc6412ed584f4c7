"""What reaches a trace: non-finite numbers refused at the door, what no database can hold made
storable, no trace for a call without a valid key, and a cap on a trace's size."""
import json
import os
import re
import secrets
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from explainer.shares.traces import MAX_STORED_BODY, MAX_STORED_BODY_COUNT_TOKENS, MAX_TRACE_BYTES
from tests.api import raw
from tests.live_server import daphne
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

MODEL = "claude-haiku-4-5"


def post(srv, content: bytes, path="/v1/messages", key=None, headers=None):
    h = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    if key is not False:
        h["x-api-key"] = key or srv["api_key"]
    return raw.request("POST", srv["url"] + path, content=content, headers={**h, **(headers or {})})


def rows(srv, sql: str, *args):
    db = Path(srv["env"]["EXPLAINER_DATA_DIR"]) / "db.sqlite3"
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def trace_page(url: str, timeout: float = 15.0):
    """The trace page once written: the writer runs after the answer, and a page asked for too early
    answers 202 ("being recorded") and asks again, as the browser's page does."""
    pages = []

    def written() -> bool:
        pages.append(raw.request("GET", url))
        return pages[-1].status_code != 202

    try:
        wait_until(written, timeout, every=0.1)
    except AssertionError:
        pass  # the caller's assertion on the page (still 202) says what is wrong
    return pages[-1]


def trace_id(resp) -> str:
    return resp.headers["x-explainer-trace"].rstrip("/").split("/")[-1]


# 4. NaN, Infinity and numbers that overflow to infinity are refused when the JSON is parsed.

@pytest.mark.parametrize("number, said", [
    ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e999", "1e999"), ("-1e999", "-1e999"),
])
@pytest.mark.parametrize("where", ["temperature", "metadata"])
def test_non_finite_numbers_are_a_400(api_server, number, said, where):
    if where == "temperature":
        text = f'{{"model": "{MODEL}", "max_tokens": 4, "temperature": {number}, "messages": [{{"role": "user", "content": "hi"}}]}}'
    else:  # anywhere in the body, even where no number is read
        text = f'{{"model": "{MODEL}", "max_tokens": 4, "messages": [{{"role": "user", "content": "hi"}}], "tools": [{number}]}}'
    r = post(api_server, text.encode())
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["type"] == "invalid_request_error" and body["request_id"] == r.headers["request-id"]
    assert said in body["error"]["message"] and ("not a JSON number" in body["error"]["message"] or "infinity" in body["error"]["message"])


def test_large_but_finite_numbers_are_still_read(api_server):
    r = post(api_server, f'{{"model": "{MODEL}", "max_tokens": 2, "temperature": 1e-999, "messages": [{{"role": "user", "content": "hi"}}]}}'.encode())
    assert r.status_code == 200, r.text


# 5. What no database can hold is made storable; the trace is saved and its page opens.

@pytest.mark.parametrize("content, status", [('"hi \\ud800 there"', 400), ('"hi \\u0000 there"', 200),
                                             ('"a\\u0000b\\udfff"', 400), ('[{"type": "text", "text": "x\\u0000y"}]', 200)])
def test_a_lone_surrogate_or_a_nul_still_gets_a_viewable_trace(api_server, content, status):
    # a lone surrogate cannot be tokenized (a 400 that says so); a NUL is text like any other
    text = f'{{"model": "{MODEL}", "max_tokens": 3, "messages": [{{"role": "user", "content": {content}}}], "metadata": {{"user_id": "u\\u0000\\ud801"}}}}'
    r = post(api_server, text.encode())
    assert r.status_code == status, r.text
    assert r.headers["request-id"] and "x-explainer-trace" in r.headers
    page = trace_page(r.headers["x-explainer-trace"])
    assert page.status_code == 200, page.text[:500]
    html = page.text
    assert "\ufffd" in html and "U+FFFD" in html  # replaced, and the page says so
    stored = rows(api_server, "SELECT request, notes FROM shares_trace WHERE id = ?", trace_id(r))
    assert stored, "the trace was not saved"
    request = json.loads(stored[0][0])
    assert "\\u0000" not in stored[0][0] and not re.search(r"\\ud[89a-f]", stored[0][0], re.I)
    assert request["body_altered"] is True and json.loads(stored[0][1])
    assert "/learn/recap/?s=" not in html  # the altered body is not the request as sent: no replay


def test_a_surrogate_in_a_key_and_a_nul_in_the_model_name(api_server):
    text = '{"model": "claude-\\u0000x", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}], "metadata": {"\\ud800": 1}}'
    r = post(api_server, text.encode())
    assert r.status_code == 400
    assert trace_page(r.headers["x-explainer-trace"]).status_code == 200


# 6. No trace for a call without a valid key; count_tokens traces stay small.

def test_401s_leave_no_trace(api_server):
    before = rows(api_server, "SELECT count(*) FROM shares_trace")[0][0]
    body = json.dumps({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}).encode()
    unauthenticated = [post(api_server, body, path=path, key=key)
                       for path in ("/v1/messages", "/v1/messages/count_tokens") for key in (False, "sk-exp-wrong-key", "x" * 300)]
    unauthenticated.append(raw.request("POST", api_server["url"] + "/v1/messages", content=body, headers={"authorization": "Bearer nope"}))
    unauthenticated.append(raw.request("GET", api_server["url"] + "/v1/messages"))  # 405, before any key check
    # seven wrong or missing keys (under the ten a minute that turn into 429s), then the GET: 405 before any key check
    assert [r.status_code for r in unauthenticated] == [401] * 7 + [405]
    for r in unauthenticated:
        assert "x-explainer-trace" not in r.headers
        assert r.json()["request_id"] == r.headers["request-id"]
    assert unauthenticated[0].status_code == 401
    ok = post(api_server, body)  # and its trace, written after, is the only new one
    assert trace_page(ok.headers["x-explainer-trace"]).status_code == 200
    assert rows(api_server, "SELECT count(*) FROM shares_trace")[0][0] == before + 1
    assert rows(api_server, "SELECT count(*) FROM shares_trace WHERE status = 401")[0][0] == 0


def test_a_count_tokens_trace_is_small(api_server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "word " * 20_000}]}
    r = post(api_server, json.dumps(body).encode(), path="/v1/messages/count_tokens")
    assert r.status_code == 400 and "prompt is too long" in r.json()["error"]["message"]  # 100 KB cannot fit 512 tokens
    assert trace_page(r.headers["x-explainer-trace"]).status_code == 200
    (request, notes), = rows(api_server, "SELECT request, notes FROM shares_trace WHERE id = ?", trace_id(r))
    request = json.loads(request)
    marker = request["body_truncated"]
    assert request["body"] is None and len(json.dumps(marker["text"])) <= MAX_STORED_BODY_COUNT_TOKENS
    assert marker["of_characters"] > marker["kept_characters"] > MAX_STORED_BODY_COUNT_TOKENS * 0.9
    assert "count_tokens trace keeps at most" in notes


# 5. A very large body's trace is capped.

def test_a_very_large_body_is_stored_truncated_with_a_marker(api_server):
    body = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "é " * 200_000}]}  # ~600 KB of JSON
    sent = json.dumps(body, ensure_ascii=False).encode()
    assert MAX_STORED_BODY < len(sent) < 1024 * 1024
    r = post(api_server, sent)
    assert r.status_code == 400  # far over the 512-token window
    page = trace_page(r.headers["x-explainer-trace"])
    assert page.status_code == 200 and "body_truncated" in page.text and f"{MAX_STORED_BODY:,}" in page.text
    (request, size), = rows(api_server, "SELECT request, length(CAST(request AS BLOB)) FROM shares_trace WHERE id = ?", trace_id(r))
    marker = json.loads(request)["body_truncated"]
    assert marker["bytes"] == len(sent) and json.dumps(body, ensure_ascii=False).startswith(marker["text"])
    assert MAX_STORED_BODY - 16 <= len(json.dumps(marker["text"])) <= MAX_STORED_BODY
    assert size <= MAX_STORED_BODY + 4096 < MAX_TRACE_BYTES  # the marker, the headers and the note are all the rest
    assert "/learn/recap/?s=" not in page.text


# The NUL and surrogate cases on PostgreSQL, whose text and jsonb cannot hold either.

POSTGRES_URL = os.environ.get("EXPLAINER_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3).close()
    except Exception:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"explainer_test_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(POSTGRES_URL)._replace(path="/" + name).geturl()
    try:
        with daphne(tmp_path_factory.mktemp("pg-traces"), DATABASE_URL=url) as srv:
            yield {**srv, "db": url}
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_on_postgresql_a_nul_and_a_surrogate_still_get_a_saved_trace(pg_server):
    import psycopg

    ids = []
    for content, status in (('"hi \\u0000 there"', 200), ('"hi \\ud800 there"', 400)):
        text = f'{{"model": "{MODEL}", "max_tokens": 3, "messages": [{{"role": "user", "content": {content}}}]}}'
        r = post(pg_server, text.encode())
        assert r.status_code == status, r.text
        page = trace_page(r.headers["x-explainer-trace"])
        assert page.status_code == 200 and "U+FFFD" in page.text, page.text[:500]
        ids.append(trace_id(r))
    with psycopg.connect(pg_server["db"]) as conn:
        got = conn.execute("SELECT id, request->'body'->'messages'->0->>'content' FROM shares_trace WHERE id = ANY(%s)", (ids,)).fetchall()
    assert sorted(c for _, c in got) == ["hi \ufffd there", "hi \ufffd there"]
    assert "Traceback" not in pg_server["log"].read_text()
