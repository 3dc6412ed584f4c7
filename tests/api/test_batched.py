"""Many API calls at once share the model's decode steps (explainer/llm/batching.py), and each reply is still
the one it gets alone: through the official SDK, streamed and not, with a trace that replays the same tokens
while the server is busy with other calls."""
import re
import threading
from html import unescape

import pytest

from tests.api import raw

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

QUESTIONS = ["What is WAL?", "Explain a Python generator.", "How do I sort a list?", "What is a mutex?",
             "Why is the sky blue?", "What does HTTP 404 mean?", "Write a haiku about caches.", "What is a closure?",
             "How does git merge work?", "What is Big-O?", "What is an index?", "Tell me about TLS."]


def ask(client, i: int, stream: bool) -> str:
    kw = {"model": "claude-haiku-4-5", "max_tokens": 20 + 5 * (i % 4),
          "messages": [{"role": "user", "content": QUESTIONS[i]}]}
    if stream:
        with client.messages.stream(**kw) as s:
            return "".join(s.text_stream)
    return "".join(b.text for b in client.messages.create(**kw).content if b.type == "text")


def test_calls_at_once_get_the_replies_they_get_one_at_a_time(client):
    n = len(QUESTIONS)
    alone = [ask(client, i, stream=i % 2 == 0) for i in range(n)]
    got: dict[int, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            start.wait()
            got[i] = ask(client, i, stream=i % 2 == 1)  # the other way round: streaming must not matter either
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert [got[i] for i in range(n)] == alone
    assert len(set(alone)) == n  # varied replies, not one repeated


def test_a_trace_replays_its_tokens_while_other_calls_run(client):
    resp = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=24,
                                                   messages=[{"role": "user", "content": "What is a deadlock?"}])
    text = resp.parse().content[0].text
    page = raw.request("GET", resp.headers["x-explainer-trace"])
    recap = re.search(r'href="(/learn/recap/\?s=[^"]+)"', page.text).group(1)
    base = resp.headers["x-explainer-trace"].split("/traces/")[0]
    busy = threading.Event()
    done = threading.Event()

    def load() -> None:  # other people's calls, decoding while the replay runs
        while not done.is_set():
            busy.set()
            ask(client, 3, stream=True)
    others = [threading.Thread(target=load) for _ in range(4)]
    for t in others:
        t.start()
    try:
        assert busy.wait(30)
        replay = raw.request("GET", base + unescape(recap))
    finally:
        done.set()
        for t in others:
            t.join(60)
    assert replay.status_code == 200
    assert text.strip() in unescape(replay.text)
