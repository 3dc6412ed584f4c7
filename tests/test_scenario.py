import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explainer.lifecycle.scenario import (
    MAX_BLOB_CHARS,
    Scenario,
    ScenarioCodec,
    ScenarioError,
)

codec = ScenarioCodec(b"test-key")

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=150, deadline=None)
@given(
    system=texts, prompt=texts, temperature=st.floats(0, 1), max_tokens=st.integers(1, 4096),
    top_k=st.none() | st.integers(0, 500), seed=st.integers(0, 2**32 - 1), stops=st.lists(texts.filter(bool), max_size=3),
)
@pytest.mark.slow
def test_it_round_trips(system, prompt, temperature, max_tokens, top_k, seed, stops):
    s = Scenario(system=system, messages=[{"role": "user", "content": prompt}], temperature=temperature,
                 max_tokens=max_tokens, top_k=top_k, seed=seed, stop_sequences=stops)
    assert codec.decode(codec.encode(s)) == s


def test_the_default_scenario_is_the_empty_link():
    assert codec.encode(Scenario()) == "" and codec.decode("") == Scenario()


def test_a_link_only_stores_what_differs_from_the_defaults():
    blob = codec.encode(Scenario(seed=3))
    payload = blob.split(".")[0]
    import base64
    raw = zlib.decompress(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert json.loads(raw) == {"seed": 3}


@pytest.mark.parametrize("mangle", [
    lambda b: b[:-3],                      # cut off
    lambda b: b.replace(".", ""),          # separator lost
    lambda b: "A" + b[1:],                 # a changed character
    lambda b: b + "x",                     # junk appended
    lambda b: b.split(".")[0] + ".!!!",    # not base64
    lambda b: "<script>." + b,             # hostile
])
def test_tampered_links_are_refused_with_a_clear_message(mangle):
    blob = codec.encode(Scenario(messages=[{"role": "user", "content": "Hello there"}], seed=9))
    with pytest.raises(ScenarioError) as e:
        codec.decode(mangle(blob))
    assert e.value.args[0].startswith("This link")


def test_a_link_from_another_server_is_refused():
    blob = ScenarioCodec(b"other-key").encode(Scenario(seed=1))
    with pytest.raises(ScenarioError, match="altered or was made by another server"):
        codec.decode(blob)


# A link made by the 0.1 release (HMAC cut to 9 bytes, keyed with SHA-256 of the salt and the secret), encoded by
# that release's code with SECRET_KEY = RELEASE_SECRET. Links already shared must keep opening.
RELEASE_SECRET = "a-secret-of-the-0.1-release"
RELEASE_LINK = ("eNodjcEJwkAURFtZ5hxCEEHYi2ADFmAkrHEMYrIb9-8eJKQAW_BiHZ5tyBL8ehve8GYmyE0SB1hsaA7xzFOJAgNFXEeB3U2Ioaf2WRi1aoNP9EnB9v0ylGR6ZzoXadbm83zcMe8L6OLI6FKOalblQkkYmwvssiogvyy8Zvr2f4Ha1x6qCXmEXc1fIQMy_w"
                ".2KHV6B6jdYei")
RELEASE_SCENARIO = Scenario(system="Be brief.", messages=[{"role": "user", "content": "Où est la gare ? 🚉"}],
                            temperature=0.2, top_k=40, stop_sequences=["\n\n"], seed=7)


def test_a_link_made_by_the_previous_release_still_opens():
    assert ScenarioCodec(RELEASE_SECRET).decode(RELEASE_LINK) == RELEASE_SCENARIO
    assert ScenarioCodec("a-new-secret", [RELEASE_SECRET]).decode(RELEASE_LINK) == RELEASE_SCENARIO  # rotated out


@pytest.mark.parametrize("mangle", [
    lambda b: b[:-1] + ("A" if b[-1] != "A" else "B"),  # a changed signature
    lambda b: "A" + b[1:],                                # a changed payload
    lambda b: b[:-2],                                     # cut off
])
def test_a_tampered_link_of_the_previous_release_is_refused(mangle):
    with pytest.raises(ScenarioError, match="^This link"):
        ScenarioCodec(RELEASE_SECRET).decode(mangle(RELEASE_LINK))
    with pytest.raises(ScenarioError, match="altered or was made by another server"):
        ScenarioCodec("another-secret").decode(RELEASE_LINK)


def test_new_links_are_signed_with_the_current_key_and_old_keys_still_open_theirs():
    old, new = ScenarioCodec("old"), ScenarioCodec("new", ["old"])
    s = Scenario(seed=11, temperature=0.3)
    assert new.decode(old.encode(s)) == s  # made before the rotation, opened after it
    assert new.encode(s) != old.encode(s)
    assert ScenarioCodec("new").decode(new.encode(s)) == s  # signed with the current key, not a fallback
    with pytest.raises(ScenarioError, match="altered or was made by another server"):
        ScenarioCodec("new").decode(old.encode(s))  # the old key removed from the fallbacks: its links close


@pytest.mark.slow
def test_the_site_opens_links_signed_with_a_fallback_key(client, settings):
    from explainer.stages.runs import codec as site_codec

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the-new-secret", [RELEASE_SECRET]
    assert site_codec().decode(RELEASE_LINK) == RELEASE_SCENARIO
    assert client.get("/learn/overview/", {"s": RELEASE_LINK}).status_code == 200
    assert client.get("/learn/overview/data", {"s": RELEASE_LINK}).status_code == 200
    assert site_codec().decode(site_codec().encode(RELEASE_SCENARIO)) == RELEASE_SCENARIO
    settings.SECRET_KEY_FALLBACKS = []
    r = client.get("/learn/overview/data", {"s": RELEASE_LINK})
    assert r.status_code == 400 and "altered" in r.json()["error"]["message"]


def test_a_signed_but_invalid_scenario_is_refused():
    def signed(obj) -> str:
        return codec.seal(zlib.compress(json.dumps(obj).encode()))

    for obj in ({"temperature": 3}, {"max_tokens": 0}, {"messages": "hi"}, {"nope": 1}, [1, 2], {"seed": -1},
                {"messages": [{"role": "system", "content": "x"}]}):
        with pytest.raises(ScenarioError):
            codec.decode(signed(obj))


def test_a_decompression_bomb_is_refused():
    payload = zlib.compress(json.dumps({"system": "a" * 3_000_000}).encode(), 9)
    blob = codec.seal(payload)
    assert len(blob) < MAX_BLOB_CHARS
    with pytest.raises(ScenarioError, match="too large"):
        codec.decode(blob)


def test_size_limits():
    import random

    rnd = random.Random(0)
    noise = "".join(chr(rnd.randrange(0x4E00, 0x9FFF)) for _ in range(8000))  # does not compress
    with pytest.raises(ScenarioError, match="too large for a link"):
        codec.encode(Scenario(messages=[{"role": "user", "content": noise}]))
    with pytest.raises(ScenarioError, match="too long"):
        codec.decode("a" * (MAX_BLOB_CHARS + 1))


def test_the_request_body_is_a_valid_messages_request():
    from explainer.lifecycle.payload import parse_request

    s = Scenario(system="Be brief.", top_p=0.9, top_k=40, stop_sequences=["\n\n"], seed=4)
    req = parse_request(s.request_body())
    assert req.system == "Be brief." and req.top_k == 40 and req.stop_sequences == ("\n\n",) and req.stream
