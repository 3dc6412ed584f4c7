"""A model folder's chat template and tokenizer.json are untrusted code and data: every attack is a
one-sentence refusal naming the file, quickly and without a large allocation, and a real template
still renders exactly as transformers renders it.

Each hostile call runs in a thread joined with a generous timeout: the timeout is a hang guard (the
attack ran away), not a speed assertion.
"""
from __future__ import annotations

import threading
import tracemalloc

import pytest

from explainer.lifecycle.engine import Engine
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request
from explainer.llm import budget
from explainer.llm.budget import Budget, Interrupted
from explainer.llm.hf import chat_template as chat_template_module
from explainer.llm.hf import tokenizer as tokenizer_module
from explainer.llm.hf.chat_template import ChatTemplate, ChatTemplateBudgetError
from explainer.llm.hf.loader import load_folder
from explainer.llm.hf.tokenizer import HFTokenizer
from explainer.llm.interface import ModelLoadError, TokenizerError
from tests.conftest import FIXTURE_MODELS
from tests.model_folders import copy_of, edit_json, within

HANG_GUARD = 10  # seconds: far beyond any refusal here, short of a hang
BODY = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
OVER_BUDGET = r"^tokenizer_config\.json: the chat template exceeded its render budget \([^\n]*\)\.$"


def _raised(fn):
    """What ``fn()`` raised (None if nothing): for a thread whose failure the test inspects."""
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        return exc
    return None




def with_template(tmp_path, template):
    folder = copy_of(tmp_path)
    edit_json(folder / "tokenizer_config.json", lambda d: d.update(chat_template=template))
    return folder


def with_split_pattern(tmp_path, pattern):
    folder = copy_of(tmp_path, source="tiny-qwen2")
    edit_json(folder / "tokenizer.json", lambda d: d["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=pattern))
    return folder


def request(text):
    return parse_request({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": text}]})


# ---- the chat template ---------------------------------------------------------------------------
ATTACKS = {
    "a huge string": "{{ 'x' * 100000000 }}",
    "a huge string, the other way round": "{{ 100000000 * 'x' }}",
    "lipsum": "{{ lipsum(n=200000) }}",
    "a huge strftime format": "{{ strftime_now('%Y' * 10**6) }}",
    "a long strftime format": "{{ strftime_now('%Y-%m-%d %H:%M:%S' * 20) }}",
    "nested loops that never end": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "center": "{{ 'x'|center(10**9) }}",
    "center, within the numbers": "{{ 'x'|center(200000) }}{{ 'x'|center(200000) }}",
    "indent by a number": "{{ ('\\n' * 100000)|indent(width=100000) }}",
    "indent by a string": "{{ ('\\n' * 100000)|indent(width='x' * 1000) }}",
    "join": "{{ (['x'] * 20000)|join('y' * 1000) }}",
    "format": "{{ '%999999999s'|format('x') }}",
    "format with a star": "{{ '%*s'|format(200000, 'x') ~ '%*s'|format(200000, 'x') }}",
    "the % operator": "{{ '%(a)s%(a)s%(a)s%(a)s%(a)s' % {'a': 'x' * 100000} }}",
    "str.format": "{{ '{0}{0}{0}{0}{0}{0}'.format('x' * 100000) }}",
    "replace": "{{ ('x' * 100000)|replace('x', 'y' * 100000) }}",
    "str.replace": "{{ ('x' * 100000).replace('', 'y' * 1000) }}",
    "wordwrap": "{{ ('x ' * 10000)|wordwrap(1, wrapstring='y' * 100000) }}",
    "a list times a number": "{{ [1, 2, 3] * 100000000 }}",
    "~ in a loop": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "namespace accumulation": ("{% set ns = namespace(s='') %}{% for i in range(100000) %}"
                               "{% set ns.s = ns.s ~ 'xxxxxxxxxx' %}{% endfor %}"),
    "a list nested into itself": ("{% set ns = namespace(s=['x' * 100]) %}{% for i in range(64) %}"
                                  "{% set ns.s = [ns.s, ns.s] %}{% endfor %}"),
    "recursive macros": "{% macro m(n) %}{% if n < 60 %}{{ m(n + 1) }}{{ m(n + 1) }}{% endif %}{% endmacro %}{{ m(0) }}",
    "a huge power": "{{ 9 ** (9 ** 9) }}",
    "a macro's output": ("{% macro m() %}{% for i in range(100000) %}{% for j in range(100000) %}{{ 'y' * 100 }}"
                         "{% endfor %}{% endfor %}{% endmacro %}{% set x = m() %}"),
    "bytes": "{{ (1).to_bytes(1000000000, 'big') }}",
    "batch": "{{ [1]|batch(1000000000, 'x')|list }}",
    "round": "{{ 5|round(-1000000000) }}",
    "sum of lists": "{{ (range(20000)|map('string')|map('list')|list)|sum(start=[])|length }}",
    "tojson indent": "{{ (range(1000)|list)|tojson(indent=100000) }}",
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=list(ATTACKS))
@pytest.mark.slow
def test_a_template_over_its_budget_is_refused_when_the_folder_is_opened(tmp_path, attack):
    folder = with_template(tmp_path, attack + BODY)
    with pytest.raises(ModelLoadError, match=OVER_BUDGET):
        within(HANG_GUARD, load_folder, folder)


def test_a_huge_string_is_refused_before_it_is_built(tmp_path):
    folder = with_template(tmp_path, "{{ 'x' * 100000000 }}" + BODY)
    tracemalloc.start()
    try:
        with pytest.raises(ChatTemplateBudgetError, match=r"the '\*' operator would make 100,000,000 characters"):
            within(HANG_GUARD, load_folder, folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024, f"{peak / 1e6:.0f} MB at the peak"


@pytest.mark.slow
def test_a_template_that_loops_only_on_one_word_is_refused_per_request(tmp_path):
    boom = ("{% for m in messages %}{% if 'BOOM' in m['content'] %}{% for i in range(100000) %}{% for j in range(100000) %}"
            "{% endfor %}{% endfor %}{% endif %}{% endfor %}")
    model = within(HANG_GUARD, load_folder, with_template(tmp_path, boom + BODY))  # the sample conversations pass
    tok = model.tokenizer
    assert tok.decode(tok.encode_chat(None, [("user", "hello")])).endswith("hello<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ChatTemplateBudgetError, match=OVER_BUDGET) as exc:
        within(HANG_GUARD, tok.encode_chat, None, [("user", "BOOM")])
    assert "it ran for over" in str(exc.value)
    assert isinstance(exc.value, TokenizerError) and isinstance(exc.value, ModelLoadError)  # a 400, and refused by add
    engine = Engine(model)
    assert engine.prompt_ids(request("hello"))
    with pytest.raises(APIError) as api:
        within(HANG_GUARD, engine.prompt_ids, request("say BOOM"))
    assert api.value.status == 400 and "render budget" in api.value.body()["error"]["message"]


def cancelled_midway(work):
    """Run ``work`` in a thread under a budget, cancel it once the work has looked at the budget, and return
    what it raised (None if it finished); fails if cancelling does not stop it."""
    started = threading.Event()

    class Watched(Budget):
        def check(self):
            started.set()
            super().check()

    run = Watched()
    box = {}

    def go():
        with budget.running(run):
            box["error"] = _raised(work)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    assert started.wait(HANG_GUARD)
    run.cancel.set()
    thread.join(HANG_GUARD)
    assert not thread.is_alive()
    return box.get("error")


def test_a_cancelled_request_stops_a_render(monkeypatch):
    """Cancelled from another thread while it runs: only the cancel flag can stop this render here."""
    monkeypatch.setattr(chat_template_module, "RENDER_SECONDS", 600)
    template = ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}" + BODY,
                            "tokenizer_config.json", {"eos_token": "<|im_end|>"})
    cancelled_midway(lambda: template.render([("user", "hi")], True))


def test_a_cancelled_request_stops_a_long_encode():
    tok = HFTokenizer.from_folder(FIXTURE_MODELS / "tiny-qwen2")
    error = cancelled_midway(lambda: tok.encode("a" * 2_000_000))  # one chunk: a heap of two million byte pairs to merge
    assert isinstance(error, Interrupted) and error.reason == "cancelled"


def test_encoding_looks_at_the_budget_as_it_goes():
    """Between chunks and during a long chunk's merges: a cancel arriving mid-way is seen."""
    tok = HFTokenizer.from_folder(FIXTURE_MODELS / "tiny-qwen2")

    class CancelOnThird(Budget):
        calls = 0

        def check(self):
            self.calls += 1
            if self.calls == 3:
                self.cancel.set()
            super().check()

    for text in ("Hello, world! " * 5_000, "a" * 200_000):
        run = CancelOnThird()
        with budget.running(run), pytest.raises(Interrupted):
            tok.encode(text)
        assert run.calls == 3


def _tokenizer_json(tmp_path, change, source="tiny-qwen2"):
    folder = copy_of(tmp_path, source=source)
    edit_json(folder / "tokenizer.json", change)
    return folder


@pytest.mark.parametrize("change, why", [
    (lambda d: d.update(added_tokens=[{"id": 5000 + i, "content": f"<t{i}>", "special": True} for i in range(8193)]),
     r"there are 8,193 added tokens; at most 8,192"),
    (lambda d: d.update(added_tokens=[{"id": 999, "content": "<" + "x" * 2000 + ">", "special": True}]),
     r"an added token has 2,002 characters"),
    (lambda d: d["model"]["vocab"].update({"x" * 2000: 1000}), r"the vocab has a token of 2,000 characters"),
    (lambda d: d["model"].update(merges=["Ġ t"] * (1 << 20) + ["Ġ t"]), r"the BPE model has 1,048,577 merges"),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex="a" * 5000), r"the Split pattern has 5,000 characters"),
    (lambda d: d.update(normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}] * 100}),
     r"the normalizer Sequence must be a list of at most 16 normalizers"),
    (lambda d: d["pre_tokenizer"].update(pretokenizers=[{"type": "Digits"}] * 100),
     r"the pre_tokenizer Sequence must be a list of at most 16 pre-tokenizers"),
])
@pytest.mark.slow
def test_what_tokenizer_json_claims_is_bounded(tmp_path, change, why):
    folder = _tokenizer_json(tmp_path, change)
    with pytest.raises(ModelLoadError, match=f"^tokenizer\\.json: {why}"):
        within(HANG_GUARD, load_folder, folder)


def test_a_vocabulary_over_the_ceiling_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """(A real one would be a million entries; the fixture's thousand meet a lowered ceiling the same way.)"""
    monkeypatch.setattr(tokenizer_module, "MAX_VOCAB", 999)
    with pytest.raises(ModelLoadError, match=r"^tokenizer\.json: the BPE model's vocab has 1,000 tokens; at most 999 are accepted"):
        load_folder(copy_of(tmp_path, source="tiny-qwen2"))


@pytest.mark.parametrize("name, limit", [("tokenizer.json", tokenizer_module.MAX_TOKENIZER_JSON_BYTES),
                                         ("tokenizer_config.json", tokenizer_module.MAX_CONFIG_JSON_BYTES),
                                         ("generation_config.json", tokenizer_module.MAX_CONFIG_JSON_BYTES)])
@pytest.mark.slow
def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path, name, limit):
    folder = copy_of(tmp_path)
    path = folder / name
    with open(path, "a") as f:  # still valid JSON: trailing whitespace
        f.write(" " * (limit + 1 - path.stat().st_size))
    with pytest.raises(ModelLoadError, match=f"^{name.replace('.', '[.]')} is larger than {limit:,} bytes"):
        load_folder(folder)
