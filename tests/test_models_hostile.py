"""A damaged or hostile model folder, and hostile requests to a local model: a sentence, never a 500."""
import shutil

import pytest

from explainer.lifecycle.engine import Engine
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.llm import catalog as catalog_module
from explainer.llm.catalog import Catalog
from explainer.llm.hf.loader import load_folder
from explainer.llm.interface import ModelLoadError
from explainer.stages.runs import codec
from tests.conftest import FIXTURE_MODELS
from tests.model_folders import copy_of, edit_json


@pytest.mark.parametrize("config_text, why", [
    ("[" * 200_000 + "]" * 200_000, "cannot be opened"),  # json.loads recurses: RecursionError
    (None, "cannot be opened"),  # a 400-digit number where a float belongs: OverflowError
])
def test_a_hostile_config_is_a_sentence(tmp_path, config_text, why):
    folder = copy_of(tmp_path)
    if config_text is None:
        edit_json(folder / "config.json", lambda d: d.update(rms_norm_eps=int("9" * 400)))
    else:
        (folder / "config.json").write_text(config_text)
    with pytest.raises(ModelLoadError, match=why):
        load_folder(folder)
    entries = Catalog(tmp_path).entries()
    assert [e.ok for e in entries] == [False]


def test_a_huge_vocabulary_fails_on_the_embeddings_shape_before_any_allocation(tmp_path):
    folder = copy_of(tmp_path)
    edit_json(folder / "config.json", lambda d: d.update(vocab_size=4_000_000))  # under the ceiling: the tensors say no
    with pytest.raises(ModelLoadError, match="shape"):
        load_folder(folder)
    edit_json(folder / "config.json", lambda d: d.update(vocab_size=100_000_000_000))
    with pytest.raises(ModelLoadError, match=r"'vocab_size' is 100,000,000,000, above the 4,194,304 this app accepts"):
        load_folder(folder)


def test_a_folder_that_failed_is_not_read_again_until_it_changes(tmp_path, monkeypatch):
    folder = copy_of(tmp_path, "broken")
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:1000])
    cat = Catalog(tmp_path)
    calls = []
    real = load_folder

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr("explainer.llm.hf.loader.load_folder", counting)
    for _ in range(3):
        with pytest.raises(ModelLoadError, match="model.safetensors"):
            cat.load("broken")
    assert len(calls) == 1
    shutil.copy(FIXTURE_MODELS / "tiny-llama" / "model.safetensors", folder / "model.safetensors")  # mended
    assert cat.load("broken").name == "broken" and len(calls) == 2


def test_reserved_and_odd_folder_names_are_not_models(tmp_path):
    copy_of(tmp_path, "claude-x")
    copy_of(tmp_path, "Upper")
    copy_of(tmp_path, "fine")
    cat = Catalog(tmp_path)
    assert cat.names() == ["fine"] and not cat.has("claude-x") and not cat.has("fine\n")
    with pytest.raises(ModelLoadError, match="not a usable model name"):
        catalog_module.check_name("x\n")


def test_a_conversation_the_template_refuses_is_the_clients_400(tmp_path):
    folder = copy_of(tmp_path)
    edit_json(folder / "tokenizer_config.json", lambda d: d.update(chat_template=(
        "{% for m in messages %}{% if 'forbidden' in m['content'] %}{{ raise_exception('That word is not allowed here.') }}"
        "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")))
    engine = Engine(load_folder(folder))
    ok = parse_request({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]})
    assert engine.prompt_ids(ok)
    bad = parse_request({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "a forbidden word"}]})
    with pytest.raises(APIError) as exc:
        engine.prompt_ids(bad)
    assert exc.value.status == 400 and "not allowed" in exc.value.body()["error"]["message"]


def test_a_link_to_a_model_nothing_here_answers_is_refused(client):
    blob = codec().encode(Scenario(model="installed-later"))
    r = client.get(f"/learn/overview/?s={blob}")
    assert r.status_code == 400 and b"not installed on this server" in r.content
    r = client.post("/scenario/encode", data=b'{"model": "installed-later"}', content_type="application/json")
    assert r.status_code == 400 and "not installed" in r.json()["error"]


def test_overlapping_large_passes_leave_one_blas_thread_behind():
    from threadpoolctl import threadpool_info

    from explainer.llm.threads import blas_threads

    def threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = threads()
    a, b = blas_threads(2), blas_threads(2)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert threads() == {2}  # b still runs wide
    b.__exit__(None, None, None)
    assert threads() == before


def test_the_models_page_survives_a_broken_folder(client, models_dir, own_services):
    own_services()  # a catalog of this test's own, which forgets the broken folder with it
    folder = copy_of(models_dir, "zz-broken")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    try:
        r = client.get("/models/")
        assert r.status_code == 200 and b"Cannot be opened" in r.content and str(models_dir).encode() not in r.content
        assert client.get("/models/zz-broken/").status_code == 400
    finally:
        shutil.rmtree(folder)
