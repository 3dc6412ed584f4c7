"""The blocklist in its two layers: the text check, and the generation-time ban on every spelling."""
import subprocess
import sys

import numpy as np
import pytest

from explainer.lifecycle.engine import Engine
from explainer.lifecycle.payload import parse_request
from explainer.llm.blocklist import blocked_words, find_blocked, word_ban_for
from explainer.llm.generate import Finish, GenerationConfig, generate
from explainer.llm.model import load_model
from explainer.llm.sampling import SamplingParams
from explainer.llm.tokenizer import load_tokenizer
from explainer.llm.training.evaluate import repeated_trigram_share
from tests.live_server import ROOT


def test_the_text_check_matches_whole_words_in_any_case_and_nothing_inside_other_words():
    assert find_blocked("Well, DAMN. That is Bullshit!") == ["DAMN", "Bullshit"]
    for innocent in ("Sussex", "classes", "Japan", "spice", "Scunthorpe", "cockpit", "assume", "Pakistan", "analyse"):
        assert find_blocked(f"{innocent} is fine") == [], innocent
    assert find_blocked("") == []


def test_the_list_is_lower_case_words():
    words = blocked_words()
    assert len(words) > 50 and all(w == w.lower() and w.isalpha() for w in words)


@pytest.mark.parametrize("word", ["damn", "shit", "bastard", "fucking"])
def test_every_spelling_of_a_blocked_word_is_banned_at_its_last_token(word):
    tok = load_tokenizer()
    ban = word_ban_for(tok)
    context = tok.encode("Well")
    for variant in (" " + word, " " + word.capitalize(), " " + word.upper()):
        canonical = tok.encode(variant)
        assert canonical[-1] in ban.banned_next(context + canonical[:-1]), variant
        # an unusual split: one byte at a time
        by_bytes = list(variant.encode())
        assert by_bytes[-1] in ban.banned_next(context + by_bytes[:-1]), variant
    # at the start of the reply, without a leading space
    start = tok.encode(word)
    assert start[-1] in ban.banned_next(start[:-1])


def test_the_ban_leaves_words_that_merely_contain_a_blocked_word():
    tok = load_tokenizer()
    ban = word_ban_for(tok)
    for text in ("Sussex", "the classes", "Japan"):
        ids = tok.encode(text)
        for i in range(1, len(ids) + 1):
            assert ids[i - 1] not in ban.banned_next(ids[: i - 1]), (text, i)


class _Eager:
    """A stand-in model that wants to write ``text`` token by token (strongly: +30 on the next one)."""

    def __init__(self, model, target: list[int]):
        self.model, self.target, self.config, self.n_params = model, target, model.config, model.n_params
        self.start = None

    def new_cache(self):
        return self.model.new_cache()

    def forward(self, ids, cache=None, want=()):
        out = self.model.forward(ids, cache=cache, want=want)
        if self.start is None:
            self.start = cache.length if cache is not None else len(ids)
        done = (cache.length if cache is not None else len(ids)) - self.start
        logits = np.array(out.logits, dtype=np.float32)
        if done < len(self.target):
            logits[-1, self.target[done]] += 30.0
        out.logits = logits
        return out


def _reply(ban: bool, target_text: str) -> Finish:
    tok, model = load_tokenizer(), load_model()
    eager = _Eager(model, tok.encode(target_text))
    cfg = GenerationConfig(max_tokens=12, sampling=SamplingParams(temperature=0.7), seed=0, ban_words=ban)
    return [x for x in generate(eager, tok, tok.encode_chat(None, [("user", "Hi")]), cfg) if isinstance(x, Finish)][0]


def test_a_model_that_wants_to_swear_cannot():
    unbanned = _reply(False, "Oh damn it, shit happens")
    assert find_blocked(unbanned.text), unbanned.text  # the stand-in really does write the words
    banned = _reply(True, "Oh damn it, shit happens")
    assert find_blocked(banned.text) == [], banned.text


def test_the_engine_reports_a_banned_candidate_that_had_a_real_chance(monkeypatch):
    eng = Engine()
    tok = eng.tokenizer
    eager = _Eager(eng.model, tok.encode("Oh damn"))
    monkeypatch.setattr(eng, "model", eager)
    req = parse_request({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]})
    frames = [e for e in eng.stream(req, seed=0) if e["type"] == "explainer.token"]
    reported = [b for f in frames for b in f.get("banned_words", ())]
    assert reported and reported[0]["word"].lower() == "damn" and reported[0]["probability"] > 0.5
    assert "damn" not in "".join(f["piece"] for f in frames).lower()


def test_repeated_trigrams():
    assert repeated_trigram_share("the cat sat on the cat sat") == pytest.approx(0.2)  # 1 of 5
    assert repeated_trigram_share("") == 0.0


@pytest.mark.parametrize("content", [None, b"not a zip file at all", b"PK\x03\x04broken"])
@pytest.mark.slow
def test_the_evaluation_refuses_bad_weights_in_one_line(tmp_path, content):
    path = tmp_path / "model.npz"
    if content is not None:
        path.write_bytes(content)
    r = subprocess.run([sys.executable, "-m", "explainer.llm.training.evaluate", "--weights", str(path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: ") and "Traceback" not in r.stderr
    assert str(path) in lines[0]
