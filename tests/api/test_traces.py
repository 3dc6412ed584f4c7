"""Every API call leaves a trace that opens in the walk-through."""
import re

import pytest

from tests.api import raw

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

MODEL = "claude-haiku-4-5"


def test_a_call_s_trace_opens_and_replays_in_the_walk_through(client, api_server):
    resp = client.messages.with_raw_response.create(model=MODEL, max_tokens=12, messages=[{"role": "user", "content": "What is WAL?"}],
                                                   system="Be brief.")
    msg = resp.parse()
    url = resp.headers["x-explainer-trace"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/traces/[\w-]{20,}/", url)
    page = raw.request("GET", url)
    assert page.status_code == 200
    html = page.text
    assert api_server["api_key"] not in html and "…redacted" in html
    assert "What is WAL?" in html and MODEL in html
    assert "block_0_attn_head_0_weights" in html  # attention summary
    # the walk-through link replays the same tokens: the recap shows the same reply
    recap = re.search(r'href="(/learn/recap/\?s=[^"]+)"', html).group(1)
    page = raw.request("GET", api_server["url"] + recap.replace("&amp;", "&"))
    assert page.status_code == 200
    from html import unescape
    assert unescape(msg.content[0].text).strip() in unescape(page.text)


def test_streamed_and_failed_calls_are_traced_too(client, api_server):
    with client.messages.with_streaming_response.create(model=MODEL, max_tokens=6, stream=True,
                                                       messages=[{"role": "user", "content": "Hi"}]) as resp:
        url = resp.headers["x-explainer-trace"]
        for _ in resp.iter_lines():
            pass
    html = raw.request("GET", url).text
    assert "content_block_delta" in html
    bad = raw.request("POST", api_server["url"] + "/v1/messages", json_body={"model": MODEL, "max_tokens": 0, "messages": []},
                      headers={"x-api-key": api_server["api_key"]})
    assert bad.status_code == 400
    html = raw.request("GET", bad.headers["x-explainer-trace"]).text
    assert "valid" in html and "max_tokens" in html and api_server["api_key"] not in html
    # a call without a valid key leaves no trace (tests/api/test_trace_safety.py)
    unauthenticated = raw.request("POST", api_server["url"] + "/v1/messages", json_body={"model": MODEL, "max_tokens": 1, "messages": []},
                                  headers={"x-api-key": "sk-exp-nope"})
    assert unauthenticated.status_code == 401 and "x-explainer-trace" not in unauthenticated.headers


def test_the_list_is_local_and_traces_can_be_deleted(client, api_server):
    resp = client.messages.with_raw_response.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}])
    url = resp.headers["x-explainer-trace"]
    listing = raw.request("GET", api_server["url"] + "/traces/")
    assert listing.status_code == 200 and url.split("/")[-2] in listing.text
    assert raw.request("GET", api_server["url"] + "/traces/not-a-real-trace-id/").status_code == 404
    deleted = raw.request("POST", url + "delete")
    assert deleted.status_code == 403  # CSRF: a plain POST without the token is refused
