"""Every view option of every stage, and the scenario ``s`` and ``embed``, against a catalogue of
hostile values: each answer is the page's 400 (the HTML error page) or, on ``/learn/<slug>/data``,
a JSON 400; never a 500. A value the option's own parser accepts may also be a 200 (or a 400 once
the page knows the run's real bound).

The options come from the registry (every built stage's page module and its ``OPTIONS``), so a
new stage or option is attacked without touching this file.
"""
from __future__ import annotations

from urllib.parse import quote

import pytest
from django.http import QueryDict

from explainer.stages.options import OptionError, parse_options, single, whole_number
from explainer.stages.registry import built
from explainer.tutorial.lessons import lessons

# Decoded values, sent percent-encoded.
HOSTILE = [
    # digits of other scripts: str.isdigit() is true for the first two, int() refuses "²"
    "²", "³", "٣", "١٢", "５", "𝟓", "½", "Ⅻ",
    # signs
    "--5", "+-1", "-+1", "−5", "-", "+", "++5", "5-",
    # other spellings of numbers
    "1e3", "1E3", "0x10", "0o7", "0b1", "1_000", "1,5", "1.5", ".5", "5.", "nan", "NaN", "inf", "-inf", "Infinity",
    "true", "null", "[]", "{}", "1/2",
    # sizes
    "9" * 400, "9" * 25, "0" * 30, "999999999999", "-999999999999", "2147483648", "18446744073709551616",
    "x" * 10_240,
    # blanks and controls
    " ", "  ", " 5", "5 ", "\t5", "5\n", "\u00a05", "\u20005", "\x00", "5\x00", "\x005", "\u202e5", "\ufeff5",
]
# Sent exactly as written: broken escapes, bytes that are not UTF-8, a raw "+" (a space).
RAW = ["%00", "%ff", "%ED%A0%80", "%C0%B0", "%", "%zz", "%2", "+5", "5+", "+"]


CASES = [(s.slug, name) for s in built() for name in [*s.page.OPTIONS, "s", "embed"]]


def _accepts(slug: str, name: str, value: str) -> bool:
    """Whether the option's own parser takes ``value`` (then the page may show it)."""
    opts = {s.slug: s.page.OPTIONS for s in built()}[slug]
    if name not in opts:
        return name == "embed" and value in ("", "0", "1")
    try:
        opts[name].parse(name, value)
        return True
    except OptionError:
        return False


def _check(client, slug: str, query: str, may_pass: bool, failures: list) -> None:
    page = f"/learn/{slug}/?{query}"
    data = f"/learn/{slug}/data?{query}"
    try:
        r = client.get(page)
    except Exception as exc:  # the test client re-raises what would have been a 500
        failures.append((page[:120], f"raised {exc!r}"[:200]))
        return
    ok = {200, 400} if may_pass else {400}
    if r.status_code not in ok:
        failures.append((page[:120], r.status_code))
    elif r.status_code == 400:
        html = r.content.decode()
        if 'class="card error-page"' not in html:
            failures.append((page[:120], "400 without the error page"))
    try:
        r = client.get(data)
    except Exception as exc:
        failures.append((data[:120], f"raised {exc!r}"[:200]))
        return
    if r.status_code not in ok:
        failures.append((data[:120], r.status_code))
    elif not r["Content-Type"].startswith("application/json"):
        failures.append((data[:120], f"{r.status_code} as {r['Content-Type']}"))
    elif r.status_code == 400:
        err = r.json().get("error", {})
        if err.get("type") != "invalid_request_error" or not err.get("message"):
            failures.append((data[:120], r.json()))


@pytest.mark.parametrize("slug, name", CASES)
@pytest.mark.slow
def test_hostile_values_are_a_400_never_a_500(client, slug, name):
    failures: list = []
    for value in HOSTILE:
        _check(client, slug, f"{name}={quote(value, safe='')}", _accepts(slug, name, value), failures)
    for raw in RAW:
        # what Django reads from the raw text: the parser decides, the status must follow
        decoded = QueryDict(f"{name}={raw}").get(name, "")
        _check(client, slug, f"{name}={raw}", _accepts(slug, name, decoded), failures)
    assert not failures, failures


@pytest.mark.parametrize("slug, name", CASES)
@pytest.mark.slow
def test_a_repeated_key_is_refused(client, slug, name):
    for query in (f"{name}=1&{name}=2", f"{name}=&{name}=x", f"{name}=&{name}=", f"{name}=0&{name}=0"):
        r = client.get(f"/learn/{slug}/?{query}")
        assert r.status_code == 400, (query, r.status_code)
        assert "times in this link; give it once." in r.content.decode().replace("&ldquo;", "“")
        r = client.get(f"/learn/{slug}/data?{query}")
        assert r.status_code == 400 and r["Content-Type"].startswith("application/json")
        assert r.json()["error"]["message"] == f"“{name}” is given 2 times in this link; give it once."


@pytest.mark.parametrize("lesson", [x.id for x in lessons()])
@pytest.mark.slow
def test_the_tutorial_check_reads_options_the_same_way(client, lesson):
    from explainer.tutorial.lessons import by_id

    st = by_id()[lesson].stage
    for name in [*st.page.OPTIONS, "s"]:
        for value in ("²", "--5", "٣", "1e3", "9" * 400, "\x00", "nan"):
            r = client.get(f"/tutorial/check/{lesson}?{name}={quote(value, safe='')}")
            assert r.status_code in ((200, 400) if _accepts(st.slug, name, value) else (400,)), (name, value, r.status_code)
            assert r["Content-Type"].startswith("application/json")
        r = client.get(f"/tutorial/check/{lesson}?{name}=1&{name}=2")
        assert r.status_code == 400 and "give it once" in r.json()["error"]


# ---- the parser itself ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [("0", 0), ("7", 7), ("-3", -3), ("+3", 3), ("007", 7), ("-0", 0)])
def test_whole_numbers_are_ascii_digits_with_one_optional_sign(raw, expected):
    assert whole_number("k", raw, -10, 10) == expected


@pytest.mark.parametrize("raw", ["²", "٣", "５", "--5", "+-1", "−5", "1e3", "0x10", "1_000", " 5", "5 ", "5\n", "1.5", "nan",
                                 "\x00", "", "9" * 400])
def test_everything_else_is_refused_in_one_sentence(raw):
    with pytest.raises(OptionError) as info:
        whole_number("k", raw, 0, None)
    msg = str(info.value)
    assert msg.startswith("“k” ") and msg.endswith(".") and msg.count(". ") == 0


def test_a_number_with_no_bound_of_its_own_is_still_bounded():
    assert whole_number("step", "999999999", 0, None) == 999_999_999
    with pytest.raises(OptionError, match="at most 999,999,999"):
        whole_number("step", "1000000000", 0, None)


def test_an_empty_value_is_the_default_and_a_plain_dict_works_too():
    from explainer.stages.pages import transformer

    assert parse_options(transformer.OPTIONS, QueryDict("layer=&head=1")) == parse_options(transformer.OPTIONS, {"head": "1"})
    assert single({"k": "1"}, "k") == "1" and single({}, "k") is None
    with pytest.raises(OptionError, match="given 3 times"):
        single(QueryDict("k=1&k=1&k=1"), "k")


# ---- the stream socket's own options (JSON numbers, not query text) -------------------------------

BODY = '{"model": "claude-haiku-4-5", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}], "explainer": %s}'


@pytest.mark.parametrize("options", [
    '{"pace_ms": "5"}', '{"pace_ms": "²"}', '{"pace_ms": 1.5}', '{"pace_ms": 1e3}', '{"pace_ms": 1e400}', '{"pace_ms": -1e400}',
    '{"pace_ms": NaN}', '{"pace_ms": Infinity}', '{"pace_ms": true}', '{"pace_ms": null}', '{"pace_ms": -5}',
    '{"pace_ms": 2001}', '{"pace_ms": 18446744073709551616}', '{"pace_ms": [5]}', '{"seed": -1}', '{"seed": 4294967296}',
    '{"seed": "٣"}', '{"seed": 1.0}', '"--5"', '5', '[]',
])
async def test_the_stream_socket_refuses_hostile_pace_and_seed(options):
    from channels.testing import WebsocketCommunicator

    from explainer.asgi import application

    comm = WebsocketCommunicator(application, "/ws/stream/", headers=[(b"origin", b"http://127.0.0.1:8000")])
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from())["type"] == "explainer.hello"
    await comm.send_to(text_data=BODY % options)
    err = await comm.receive_json_from(timeout=30)
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error", err
    assert err["error"]["message"].startswith("explainer")
    await comm.disconnect()
