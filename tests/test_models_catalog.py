"""Choosing a model: the models directory, ``manage.py models``, the API's routing and the model pages."""
import io
import shutil

import pytest
from django.core.management import CommandError, call_command

from explainer.lifecycle.engine import run_request
from explainer.lifecycle.scenario import Scenario
from explainer.llm.catalog import BUNDLED_NAME, Catalog
from explainer.llm.interface import ModelLoadError
from explainer.stages.runs import codec, stamp
from explainer.web.runner import catalog, engine_for, get_engine
from tests.conftest import FIXTURE_MODELS, LOCAL_MODEL


def test_the_suite_has_the_tiny_llama_installed():
    assert catalog().names() == [LOCAL_MODEL]
    eng = engine_for(LOCAL_MODEL)
    assert eng.name == LOCAL_MODEL and not eng.loaded.bundled
    assert engine_for("claude-sonnet-4-6") is get_engine() and get_engine().name == BUNDLED_NAME
    assert engine_for("not-installed") is get_engine()


@pytest.mark.slow
def test_add_copies_only_what_the_app_reads(tmp_path):
    cat = Catalog(tmp_path / "models")
    entry = cat.add(FIXTURE_MODELS / "tiny-qwen2", name="qwen-small")
    assert entry.ok and "qwen2" in entry.summary and cat.names() == ["qwen-small"]
    copied = sorted(p.name for p in (tmp_path / "models" / "qwen-small").iterdir())
    assert "golden.npz" not in copied and "model.safetensors.index.json" in copied
    assert len([n for n in copied if n.endswith(".safetensors")]) == 3  # every shard
    assert cat.load("qwen-small").fingerprint == Catalog(tmp_path / "models").load("qwen-small").fingerprint


@pytest.mark.parametrize("name, why", [("Bad Name", "not a usable model name"), ("claude-mine", "reserved"),
                                       (BUNDLED_NAME, "reserved")])
def test_add_refuses_names_the_app_cannot_carry(tmp_path, name, why):
    with pytest.raises(ModelLoadError, match=why):
        Catalog(tmp_path).add(FIXTURE_MODELS / "tiny-llama", name=name)
    assert not any(tmp_path.iterdir())


def test_add_checks_the_folder_before_copying_anything(tmp_path):
    src = tmp_path / "broken"
    shutil.copytree(FIXTURE_MODELS / "tiny-llama", src)
    (src / "tokenizer.json").unlink()
    cat = Catalog(tmp_path / "models")
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is missing"):
        cat.add(src)
    assert cat.names() == [] and not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_add_refuses_a_second_model_of_the_same_name(tmp_path):
    cat = Catalog(tmp_path)
    cat.add(FIXTURE_MODELS / "tiny-gpt2")
    with pytest.raises(ModelLoadError, match="already installed"):
        cat.add(FIXTURE_MODELS / "tiny-gpt2")


def test_pull_says_why_it_cannot_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # this machine cannot reach the Hub; the error must say so plainly
    with pytest.raises(ModelLoadError, match="Could not download HuggingFaceTB/SmolLM2-135M-Instruct"):
        Catalog(tmp_path).pull("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ModelLoadError, match="not a Hub model id"):
        Catalog(tmp_path).pull("../../etc")
    assert not any(tmp_path.iterdir())


def test_manage_py_models_list_and_add(tmp_path, settings, own_services):
    settings.EXPLAINER_MODELS_DIR = tmp_path
    own_services()
    out = io.StringIO()
    call_command("models", "add", str(FIXTURE_MODELS / "tiny-gpt2"), "--name", "gpt2-small", stdout=out)
    assert "added gpt2-small" in out.getvalue()
    out = io.StringIO()
    call_command("models", "list", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(BUNDLED_NAME) and lines[1].startswith("gpt2-small") and "gpt2" in lines[1]
    (tmp_path / "gpt2-small" / "config.json").write_text('{"model_type": "bert"}')
    out = io.StringIO()
    call_command("models", "list", stdout=out)
    assert "CANNOT OPEN" in out.getvalue() and "bert" in out.getvalue()
    with pytest.raises(CommandError, match="is not a folder"):
        call_command("models", "add", str(tmp_path / "nowhere"))


def test_a_local_model_runs_a_whole_request():
    eng = engine_for(LOCAL_MODEL)
    run = run_request(eng, {"model": LOCAL_MODEL, "max_tokens": 12, "messages": [{"role": "user", "content": "Hello there"}]})
    assert run.error is None and run.done["stop_reason"] in ("end_turn", "max_tokens")
    assert len(run.steps) == run.done["usage"]["output_tokens"] >= 1
    assert run.prompt_tokens[0]["text"] == "<|im_start|>"  # the model's own chat template
    assert all(s["token"] not in eng.tokenizer.banned_ids for s in run.steps)


def test_a_permalink_carries_the_weights_fingerprint(client):
    s = stamp(Scenario(model=LOCAL_MODEL))
    assert s.weights == engine_for(LOCAL_MODEL).loaded.fingerprint
    r = client.get(f"/learn/overview/?s={codec().encode(s)}")
    assert r.status_code == 200 and LOCAL_MODEL.encode() in r.content
    other = codec().encode(s.replace(weights="0123456789ab"))
    r = client.get(f"/learn/overview/?s={other}")
    assert r.status_code == 400 and b"other weights" in r.content
    gone = codec().encode(Scenario(model="my-removed-model", weights="0123456789ab"))
    r = client.get(f"/learn/overview/?s={gone}")
    assert r.status_code == 400 and b"not installed on this server" in r.content


def test_scenario_encode_stamps_the_fingerprint(client):
    r = client.post("/scenario/encode", data=b'{"model": "%s"}' % LOCAL_MODEL.encode(), content_type="application/json")
    assert codec().decode(r.json()["s"]).weights == engine_for(LOCAL_MODEL).loaded.fingerprint


def test_compose_offers_the_installed_models(client):
    html = client.get("/learn/compose/").content.decode()
    assert '<optgroup label="Local models on this server">' in html and f"<option>{LOCAL_MODEL}</option>" in html


def test_model_pages(client):
    html = client.get("/models/").content.decode()
    assert f'href="/models/{LOCAL_MODEL}/"' in html and f'href="/models/{BUNDLED_NAME}/"' in html
    card = client.get(f"/models/{LOCAL_MODEL}/")
    text = card.content.decode()
    assert card.status_code == 200
    for fact in ("Parameters", "Layers", "Vocabulary", "Context window", "Licence", "apache-2.0", "tokens/s", "MB of float32 weights"):
        assert fact in text, fact
    assert client.get("/models/no-such-model/").status_code == 404
    assert client.get("/models/..%2f..%2fetc/").status_code == 404
