"""Hostile and broken requests: each a 4xx with the API's envelope, never a 500."""
import json

import pytest

from tests.api import raw

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml


def post(srv, path="/v1/messages", content=b"", headers=None):
    h = {"x-api-key": srv["api_key"], "content-type": "application/json", "anthropic-version": "2023-06-01", **(headers or {})}
    return raw.request("POST", srv["url"] + path, content=content, headers=h)


GOOD = {"model": "claude-haiku-4-5", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("content, status, kind", [
    (b"{not json", 400, "invalid_request_error"),
    (b"", 400, "invalid_request_error"),
    (b"\xff\xfe\x00garbage", 400, "invalid_request_error"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_request_error"),
    (json.dumps({**GOOD, "max_tokens": "4"}).encode(), 400, "invalid_request_error"),
    (json.dumps({**GOOD, "messages": {"role": "user"}}).encode(), 400, "invalid_request_error"),
    (json.dumps({**GOOD, "messages": []}).encode(), 400, "invalid_request_error"),
    (json.dumps({**GOOD, "system": [{"type": "image"}]}).encode(), 400, "invalid_request_error"),
    (json.dumps({**GOOD, "unknown_field": 1}).encode(), 400, "invalid_request_error"),
    (json.dumps({**GOOD, "temperature": 1.5}).encode(), 400, "invalid_request_error"),
    (json.dumps({**GOOD, "thinking": {"type": "enabled", "budget_tokens": 1000}}).encode(), 400, "invalid_request_error"),
    (json.dumps({**GOOD, "messages": [{"role": "user", "content": "\ud800"}]}).encode(), 400, "invalid_request_error"),
    (b"x" * (10 * 1024 * 1024), 413, "request_too_large"),
])
def test_bad_bodies(api_server, content, status, kind):
    r = post(api_server, content=content)
    assert r.status_code == status, r.text[:300]
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    assert r.headers["request-id"].startswith("req_")


def test_unknown_paths_and_methods(api_server):
    r = raw.request("GET", api_server["url"] + "/v1/nothing-here", headers={"x-api-key": api_server["api_key"]})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = raw.request("GET", api_server["url"] + "/v1/messages", headers={"x-api-key": api_server["api_key"]})
    assert r.status_code == 405 and r.json()["type"] == "error"


def test_the_413_states_the_limit(api_server):
    r = post(api_server, content=b"x" * (2 * 1024 * 1024))
    assert r.status_code == 413 and "1,048,576" in r.json()["error"]["message"]


def test_no_traceback_reaches_the_log(api_server):
    for content in (b"{", b"[" * 50_000, json.dumps({**GOOD, "max_tokens": -1}).encode()):
        post(api_server, content=content)
    assert "Traceback" not in api_server["log"].read_text()
