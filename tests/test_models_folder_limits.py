"""A model folder is untrusted input: links, claims the weights do not back, oversized headers, templates
that never render, and the catalog's memory budget. Each attack is a real hostile folder built from the
tiny fixtures; each refusal is one sentence naming the file, and no file outside the folder is ever read."""
import json
import os
import shutil
import struct
import threading
import tracemalloc

import pytest

from explainer.llm.catalog import Catalog
from explainer.llm.hf.folder import ModelFolder
from explainer.llm.hf.loader import describe_folder, licence_of, load_folder, recognise_licence
from explainer.llm.hf.weights import MAX_HEADER_BYTES, MAX_TENSORS, fingerprint, weight_files
from explainer.llm.interface import ModelBusy, ModelLoadError
from tests.conftest import FIXTURE_MODELS
from tests.model_folders import copy_of, edit_json, within

SECRET = "SECRET_KEY = 'django-insecure-0123456789abcdef-do-not-show'"




def one_sentence(message: str) -> bool:
    return message.endswith((".", ")", "?")) and message.count(". ") == 0 and "\n" not in message


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.key"
    path.write_text(SECRET + "\n")
    return path


# ---- links -------------------------------------------------------------------------------------
def test_a_licence_linked_to_a_secret_is_refused_everywhere(tmp_path, secret):
    folder = copy_of(tmp_path, "my-model")
    (folder / "LICENSE").symlink_to(secret)
    for call in (lambda: load_folder(folder), lambda: describe_folder(folder), lambda: licence_of(folder),
                 lambda: fingerprint(folder), lambda: weight_files(folder)):
        with pytest.raises(ModelLoadError) as exc:
            call()
        message = str(exc.value)
        assert message == "my-model/LICENSE is a symbolic link; model folders may not contain links (found: LICENSE); " \
            "copy the folder with its links resolved (cp -rL) and add the copy."
    cat = Catalog(tmp_path / "models")
    with pytest.raises(ModelLoadError, match="my-model/LICENSE is a symbolic link") as exc:
        cat.add(folder)
    assert SECRET not in str(exc.value) and cat.names() == []
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_every_link_is_named(tmp_path, secret):
    folder = copy_of(tmp_path, "my-model")
    (folder / "LICENSE").symlink_to(secret)
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to("../secret.key")
    with pytest.raises(ModelLoadError, match=r"model folders may not contain links \(found: LICENSE, README\.md\); copy the folder"):
        load_folder(folder)


def test_a_folder_copied_into_the_models_directory_with_its_links_is_refused_when_served(tmp_path, secret):
    root = tmp_path / "var" / "models"
    folder = copy_of(root, "evil")
    (folder / "LICENSE").symlink_to("../../../secret.key")  # reaches tmp_path/secret.key from var/models/evil/
    assert (folder / "LICENSE").read_text() == SECRET + "\n"
    cat = Catalog(root)
    assert cat.names() == ["evil"]
    with pytest.raises(ModelLoadError) as exc:
        cat.load("evil")
    assert str(exc.value) == "evil/LICENSE is a symbolic link; model folders may not contain links (found: LICENSE); " \
            "copy the folder with its links resolved (cp -rL) and add the copy."
    [entry] = cat.entries()
    assert not entry.ok and "symbolic link" in entry.summary and SECRET not in entry.summary


def test_a_model_folder_that_is_a_link_is_not_a_model(tmp_path):
    elsewhere = copy_of(tmp_path / "elsewhere", "real")
    root = tmp_path / "models"
    root.mkdir()
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    cat = Catalog(root)
    assert cat.names() == [] and not cat.has("linked") and cat.entries() == []
    with pytest.raises(ModelLoadError, match="No model named 'linked'"):
        cat.load("linked")
    with pytest.raises(ModelLoadError, match="linked is a symbolic link; a model folder must be a real folder"):
        load_folder(root / "linked", root=root)


def test_a_folder_outside_the_models_directory_is_refused_when_served(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    outside = copy_of(tmp_path, "outside")
    with pytest.raises(ModelLoadError, match="outside is not a folder of the models directory"):
        load_folder(outside, root=root)


def test_a_file_swapped_for_a_link_after_the_folder_was_opened_is_not_followed(tmp_path, secret):
    folder = copy_of(tmp_path, "my-model")
    with ModelFolder(folder) as f:
        (folder / "config.json").unlink()
        (folder / "config.json").symlink_to(secret)
        assert not f.is_file("config.json")
        with pytest.raises(ModelLoadError, match=r"^my-model/config\.json is a symbolic link"):
            f.open("config.json")
        with pytest.raises(ModelLoadError) as exc:
            load_folder(f)
        assert SECRET not in str(exc.value)


def test_a_fifo_named_like_a_model_file_is_refused_without_waiting(tmp_path):
    folder = copy_of(tmp_path, "my-model")
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    with pytest.raises(ModelLoadError, match="config.json"):
        within(10, load_folder, folder)
    os.unlink(folder / "config.json")
    shutil.copy(FIXTURE_MODELS / "tiny-llama" / "config.json", folder / "config.json")
    os.unlink(folder / "tokenizer.json")
    os.mkfifo(folder / "tokenizer.json")
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        within(10, load_folder, folder)


def test_add_copies_no_link_and_only_the_files_the_app_reads(tmp_path):
    src = copy_of(tmp_path, "src", "tiny-gpt2")
    (src / "notes.txt").write_text("not read")
    (src / "sub").mkdir()
    (src / "sub" / "model.safetensors").write_bytes(b"not read either")
    (src / "LICENSE").write_text("MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy")
    cat = Catalog(tmp_path / "models")
    entry = cat.add(src, "copied")
    copied = tmp_path / "models" / "copied"
    assert entry.ok and sorted(p.name for p in copied.iterdir()) == sorted(
        ["LICENSE", "README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json"])
    assert not any(p.is_symlink() for p in copied.iterdir())
    assert cat.load("copied").card["licence"] == "mit"  # the model card's metadata comes first


# ---- the licence -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, name", [
    ("                                 Apache License\n                           Version 2.0, January 2004\n", "Apache-2.0"),
    ("MIT License\n\nCopyright (c) 2024 Someone\n\nPermission is hereby granted, free of charge, to any person "
     "obtaining a copy of this software", "MIT"),
    ("Copyright 2024\n\nRedistribution and use in source and binary forms, with or without modification, are permitted"
     "\n3. Neither the name of the copyright holder nor", "BSD-3-Clause"),
    ("                    GNU GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007", "GPL-3.0"),
    ("GNU LESSER GENERAL PUBLIC LICENSE\n Version 2.1, February 1999", "LGPL-2.1"),
    ("GNU AFFERO GENERAL PUBLIC LICENSE\nVersion 3, 19 November 2007", "AGPL-3.0"),
    ("Attribution-NonCommercial-ShareAlike 4.0 International\n\nCreative Commons Corporation (\"Creative Commons\") is "
     "not a law firm ... Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International Public License",
     "CC-BY-NC-SA-4.0"),
    ("LLAMA 2 COMMUNITY LICENSE AGREEMENT\nLlama 2 Version Release Date: July 18, 2023", "Llama 2 Community License"),
    ("LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\nLlama 3.2 Version Release Date: September 25, 2024",
     "Llama 3.2 Community License"),
    ("Gemma Terms of Use\n\nLast modified: February 21, 2024", "Gemma Terms of Use"),
    ("BigScience OpenRAIL-M License\ndated August 18, 2022", "BigScience OpenRAIL-M"),
    ("CreativeML Open RAIL-M\ndated August 22, 2022", "CreativeML OpenRAIL-M"),
    ("apache-2.0\n", "Apache-2.0"),
    (SECRET + "\n", None),
    ("django-insecure-0123456789abcdef\n", None),
])
def test_a_licence_is_shown_by_the_name_it_is_recognised_as(text, name):
    assert recognise_licence(text) == name


def test_the_card_shows_a_licence_name_never_a_files_words(tmp_path):
    folder = copy_of(tmp_path, "my-model")
    (folder / "README.md").write_text("# no metadata here\n")
    (folder / "LICENSE").write_text(SECRET + "\n")
    assert licence_of(folder) == "a LICENSE file (not recognised)"
    model = load_folder(folder)
    assert SECRET not in json.dumps(model.card) and model.card["licence"] == "a LICENSE file (not recognised)"
    (folder / "README.md").write_text(f"---\nlicense: {SECRET}\n---\n# card\n")  # not an identifier: not shown
    assert licence_of(folder) == "a LICENSE file (not recognised)"
    (folder / "README.md").write_text("---\nlicense: other\nlicense_name: my-research-licence\n---\n")
    assert licence_of(folder) == "other (my-research-licence)"
    (folder / "README.md").write_text("---\nlicense: llama3.2\n---\n")
    assert licence_of(folder) == "llama3.2"
    (folder / "README.md").unlink()
    (folder / "LICENSE").unlink()
    assert licence_of(folder) == ""


# ---- claims the weights do not back ---------------------------------------------------------------------
def test_ten_million_claimed_layers_cost_nothing(tmp_path):
    folder = copy_of(tmp_path, "my-model")
    edit_json(folder / "config.json", lambda d: d.update(num_hidden_layers=10_000_000))
    tracemalloc.start()
    try:
        for call in (load_folder, describe_folder):
            with pytest.raises(ModelLoadError) as exc:
                within(10, call, folder)
            assert str(exc.value) == ("config.json: 'num_hidden_layers' is 10,000,000, above the 512 this app accepts "
                                      "(no real checkpoint it can run is that large).")
        with pytest.raises(ModelLoadError, match="num_hidden_layers"):
            within(10, Catalog(tmp_path / "models").add, folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.1f} MB"


def test_layers_claimed_under_the_ceiling_are_counted_in_the_weights_first(tmp_path):
    folder = copy_of(tmp_path, "my-model")
    edit_json(folder / "config.json", lambda d: d.update(num_hidden_layers=500))
    with pytest.raises(ModelLoadError) as exc:
        load_folder(folder)
    assert str(exc.value) == "config.json's num_hidden_layers is 500, but model.safetensors holds tensors for 3 layers."
    gpt2 = copy_of(tmp_path, "g", "tiny-gpt2")
    edit_json(gpt2 / "config.json", lambda d: d.update(n_layer=400))
    with pytest.raises(ModelLoadError, match="config.json's n_layer is 400, but model.safetensors holds tensors for 2 layers"):
        load_folder(gpt2)


def test_a_config_over_the_memory_ceiling_is_refused_before_reading_weights(tmp_path):
    folder = copy_of(tmp_path, "my-model")
    edit_json(folder / "config.json", lambda d: d.update(hidden_size=16384, intermediate_size=65536, num_hidden_layers=120,
                                                         num_attention_heads=128, head_dim=128, num_key_value_heads=8))
    with pytest.raises(ModelLoadError, match=r"^my-model/config\.json describes .*M parameters, .* MB of float32 weights, "
                                             r"more than the 16,384 MB this server allows a local model\.$"):
        describe_folder(folder)
    with pytest.raises(ModelLoadError, match=r"^small/config\.json describes 0\.2M parameters, 0\.7 MB of float32 weights, "
                                             r"more than the 0\.5 MB this server allows a local model\.$"):
        load_folder(copy_of(tmp_path, "small"), max_bytes=2**20 // 2)


@pytest.mark.parametrize("key, value", [("hidden_size", 10**6), ("intermediate_size", 10**7), ("num_attention_heads", 5000),
                                        ("num_key_value_heads", 5000), ("max_position_embeddings", 10**9),
                                        ("head_dim", 4096), ("vocab_size", 10**8)])
def test_every_size_has_a_ceiling(tmp_path, key, value):
    folder = copy_of(tmp_path)
    edit_json(folder / "config.json", lambda d: d.update({key: value}))
    with pytest.raises(ModelLoadError, match=f"^config.json: '{key}' is {value:,}, above the"):
        describe_folder(folder)


def write_header(path, header: bytes, data: bytes = b"", length: int | None = None):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header) if length is None else length))
        f.write(header)
        f.write(data)


def test_a_header_claiming_more_bytes_than_the_limit_is_refused_before_it_is_read(tmp_path):
    folder = copy_of(tmp_path)
    write_header(folder / "model.safetensors", b"{}", length=2**40)
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadError) as exc:
            load_folder(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(exc.value) == (f"model.safetensors has a header of {2**40:,} bytes; more than {MAX_HEADER_BYTES:,} are refused "
                              "(a real one is well under a megabyte).")
    assert peak < 10 * 2**20


@pytest.mark.parametrize("tensors, why", [(1_000_000, "has a header of"), (MAX_TENSORS + 50_000, "holds more than 100,000 tensors")])
@pytest.mark.slow
def test_a_header_of_a_million_tensors_is_refused(tmp_path, tensors, why):
    folder = copy_of(tmp_path)
    header = "{" + ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(tensors)) + "}"
    write_header(folder / "model.safetensors", header.encode())
    del header
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadError, match=f"^model.safetensors {why}") as exc:
            within(10, load_folder, folder)
        with pytest.raises(ModelLoadError, match=why):
            within(10, Catalog(tmp_path / "models").add, folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert one_sentence(str(exc.value))
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MB"


@pytest.mark.parametrize("entry, why", [
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "data offsets span 4 bytes, but a F32 tensor of shape [2] takes 8"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "data starts at byte 4 of the data, where the tensor before it ends at 0"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "is not a complete safetensors file (its tensors need 4 bytes of data, and it holds 8)"),
    ({"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}, "is not a dtype, a shape and two data offsets"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "is not a dtype, a shape and two data offsets"),
])
def test_a_header_must_tile_the_files_data(tmp_path, entry, why):
    folder = copy_of(tmp_path)
    write_header(folder / "model.safetensors", json.dumps({"x": entry}).encode(), b"\0" * 8)
    with pytest.raises(ModelLoadError) as exc:
        load_folder(folder)
    assert why in str(exc.value) and str(exc.value).startswith("model.safetensors") and one_sentence(str(exc.value))


@pytest.mark.slow
def test_a_sharded_index_is_bounded(tmp_path):
    folder = copy_of(tmp_path, "q", "tiny-qwen2")
    index = folder / "model.safetensors.index.json"
    edit_json(index, lambda d: d["weight_map"].update({f"x{i}": "model-00001-of-00003.safetensors" for i in range(MAX_TENSORS)}))
    with pytest.raises(ModelLoadError, match=r"^model.safetensors.index.json places 100,.* tensors; more than 100,000 are refused\.$"):
        load_folder(folder)
    with open(index, "w") as f:
        f.write('{"weight_map": {}, "pad": "' + "x" * (17 << 20) + '"}')
    with pytest.raises(ModelLoadError, match=r"^q/model.safetensors.index.json is 17,.* bytes; at most 16,777,216 are read"):
        load_folder(folder)


def test_an_oversized_config_is_refused_unread(tmp_path):
    folder = copy_of(tmp_path, "my-model")
    with open(folder / "config.json", "a") as f:
        f.write(" " * (2 << 20))
    with pytest.raises(ModelLoadError, match=r"^my-model/config.json is 2,.* bytes; at most 1,048,576 are read from this file\.$"):
        describe_folder(folder)


# ---- the chat template at add ----------------------------------------------------------------------
def with_template(tmp_path, template, name="m"):
    folder = copy_of(tmp_path, name)
    edit_json(folder / "tokenizer_config.json", lambda d: d.update(chat_template=template))
    return folder


@pytest.mark.parametrize("template, why", [
    ("{{ raise_exception('Nothing is allowed.') }}", "fails on every sample conversation"),
    ("{{ messages[0]['content'] | no_such_filter }}", "not valid Jinja"),
    ("{% for m in messages %}{{ m['content'] + 1 }}{% endfor %}", "cannot render a sample conversation"),
    ("{{ ''.__class__ }}", "cannot render a sample conversation"),
])
def test_add_refuses_a_template_that_cannot_render_a_sample_conversation(tmp_path, template, why):
    folder = with_template(tmp_path, template)
    cat = Catalog(tmp_path / "models")
    with pytest.raises(ModelLoadError, match=why) as exc:
        within(30, cat.add, folder)
    assert one_sentence(str(exc.value)) and cat.names() == []
    assert not any(p for p in (tmp_path / "models").iterdir()) if (tmp_path / "models").exists() else True


def test_add_accepts_a_template_that_only_refuses_a_system_turn(tmp_path):
    template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
                "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    entry = Catalog(tmp_path / "models").add(with_template(tmp_path, template), "no-system")
    assert entry.ok


# ---- the catalog's memory budget ------------------------------------------------------------------
@pytest.fixture
def three(tmp_path):
    root = tmp_path / "models"
    for name in ("tiny-llama", "tiny-gpt2", "tiny-qwen2"):
        copy_of(root, name, name)
    return root


def sizes(root):
    return {n: load_folder(root / n).card["resident_bytes"] for n in ("tiny-llama", "tiny-gpt2", "tiny-qwen2")}


@pytest.mark.slow
def test_open_models_are_bounded_in_bytes(three):
    size = sizes(three)
    budget = size["tiny-llama"] + size["tiny-qwen2"] + 1000  # any two fit, not three
    cat = Catalog(three, keep=10, max_bytes=budget)
    cat.load("tiny-llama")
    cat.load("tiny-gpt2")
    assert list(cat._open) == ["tiny-llama", "tiny-gpt2"] and cat.open_bytes() <= budget
    cat.load("tiny-llama")  # now the most recently used
    cat.load("tiny-qwen2")  # closes what it must, least recently used first
    assert list(cat._open) == ["tiny-llama", "tiny-qwen2"] and cat.open_bytes() <= budget
    for name in ["tiny-gpt2", "tiny-llama", "tiny-qwen2"] * 3:
        cat.load(name)
        assert cat.open_bytes() <= budget


def test_a_model_larger_than_the_budget_is_refused_in_a_sentence(three):
    cat = Catalog(three, max_bytes=500_000)
    with pytest.raises(ModelLoadError) as exc:
        cat.load("tiny-qwen2")
    assert str(exc.value).startswith("tiny-qwen2/config.json describes 0.2M parameters, 0.8 MB of float32 weights, more than")
    assert one_sentence(str(exc.value)) and cat.open_bytes() == 0
    assert not [e for e in cat.entries() if e.ok]  # models list says so too


def test_a_model_in_use_is_not_closed_and_a_new_open_waits_then_is_refused(three):
    size = sizes(three)
    budget = size["tiny-llama"] + size["tiny-gpt2"] + 1000
    cat = Catalog(three, keep=10, max_bytes=budget, wait_s=0.0)
    with cat.using("tiny-llama") as llama, cat.using("tiny-gpt2"):
        with pytest.raises(ModelBusy) as exc:  # not the folder's fault: not remembered, and a 529 to try again
            cat.load("tiny-qwen2")
        assert str(exc.value).startswith("tiny-qwen2 cannot be opened now: it needs") and one_sentence(str(exc.value))
        assert set(cat._open) == {"tiny-llama", "tiny-gpt2"} and cat.load("tiny-llama") is llama
    assert cat.load("tiny-qwen2").name == "tiny-qwen2"  # released: room is made by closing them


def test_a_waiting_open_goes_ahead_when_a_model_is_released(three):
    size = sizes(three)
    cat = Catalog(three, keep=10, max_bytes=size["tiny-llama"] + size["tiny-gpt2"] + 1000, wait_s=30.0)
    holding, release = threading.Event(), threading.Event()

    def hold():
        with cat.using("tiny-llama"), cat.using("tiny-gpt2"):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    opened = {}
    opener = threading.Thread(target=lambda: opened.setdefault("m", cat.load("tiny-qwen2")))
    opener.start()
    release.set()
    opener.join(20)
    holder.join(10)
    assert opened["m"].name == "tiny-qwen2" and cat.open_bytes() <= cat.max_bytes


def test_attached_objects_go_with_their_model(three):
    size = sizes(three)
    cat = Catalog(three, keep=10, max_bytes=size["tiny-llama"] + 1000)
    llama = cat.load("tiny-llama")
    engine = cat.attach(llama, "engine", lambda m: object())
    assert cat.attach(llama, "engine", lambda m: object()) is engine
    cat.load("tiny-gpt2")  # closes tiny-llama to make room
    assert "tiny-llama" not in cat._open and cat.attach(llama, "engine", lambda m: "fresh") == "fresh"
    assert cat._extras.get("tiny-llama") is None


# ---- served: the card page -----------------------------------------------------------------------
def test_the_card_of_a_hostile_folder_is_a_sentence_and_shows_no_secret(client, models_dir, tmp_path, secret, own_services):
    own_services()  # a catalog of this test's own, which forgets these folders with it
    linked = copy_of(models_dir, "zz-linked")
    (linked / "LICENSE").symlink_to(secret)
    layers = copy_of(models_dir, "zz-layers")
    edit_json(layers / "config.json", lambda d: d.update(num_hidden_layers=10_000_000))
    try:
        for name, why in (("zz-linked", b"is a symbolic link"), ("zz-layers", b"10,000,000")):
            r = within(30, client.get, f"/models/{name}/")
            assert r.status_code == 400 and why in r.content and SECRET.encode() not in r.content
        r = client.get("/models/")
        assert r.status_code == 200 and SECRET.encode() not in r.content
    finally:
        shutil.rmtree(linked)
        shutil.rmtree(layers)


def test_the_tensor_count_is_exact_even_when_the_key_is_spelt_with_escapes(tmp_path, monkeypatch):
    monkeypatch.setattr("explainer.llm.hf.weights.MAX_TENSORS", 10)
    folder = copy_of(tmp_path)
    header = "{" + ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data\\u005foffsets":[0,0]}}' for i in range(20)) + "}"
    write_header(folder / "model.safetensors", header.encode())
    with pytest.raises(ModelLoadError, match="^model.safetensors holds more than 10 tensors"):
        load_folder(folder)


def test_manage_py_models_add_refuses_a_linked_folder_in_a_sentence(tmp_path, settings, secret, own_services):
    from django.core.management import CommandError, call_command

    folder = copy_of(tmp_path, "my-model")
    (folder / "LICENSE").symlink_to(secret)
    settings.EXPLAINER_MODELS_DIR = tmp_path / "models"
    own_services()
    with pytest.raises(CommandError) as exc:
        call_command("models", "add", str(folder))
    assert str(exc.value) == "my-model/LICENSE is a symbolic link; model folders may not contain links (found: LICENSE); " \
        "copy the folder with its links resolved (cp -rL) and add the copy."
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_a_tokenizer_file_swapped_for_a_link_before_the_tokenizer_reads_it_is_refused(tmp_path, secret, monkeypatch):
    folder = copy_of(tmp_path, "my-model")
    from explainer.llm.hf import weights

    real = weights.read_weights

    def then_swap(f, config):  # the moment between the folder's check and the tokenizer's read
        out = real(f, config)
        (folder / "tokenizer_config.json").unlink()
        (folder / "tokenizer_config.json").symlink_to(secret)
        return out

    monkeypatch.setattr("explainer.llm.hf.loader.read_weights", then_swap)
    with pytest.raises(ModelLoadError, match=r"^my-model/tokenizer_config\.json is a symbolic link") as exc:
        load_folder(folder)
    assert SECRET not in str(exc.value)


def test_add_copies_shards_an_index_names_whatever_their_names(tmp_path):
    src = copy_of(tmp_path, "src", "tiny-qwen2")
    index = src / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    renames = {s: f"weights-{i}.safetensors" for i, s in enumerate(sorted(set(data["weight_map"].values())))}
    for old, new in renames.items():
        (src / old).rename(src / new)
    data["weight_map"] = {k: renames[v] for k, v in data["weight_map"].items()}
    index.write_text(json.dumps(data))
    cat = Catalog(tmp_path / "models")
    assert cat.add(src, "renamed").ok and cat.load("renamed").name == "renamed"


def test_a_waiting_open_stops_when_its_request_is_cancelled(three):
    from explainer.llm.budget import Budget, Interrupted, running

    size = sizes(three)
    cat = Catalog(three, keep=10, max_bytes=size["tiny-llama"] + 1000, wait_s=60.0)
    stop = threading.Event()
    stop.set()

    def cancelled_open():
        with running(Budget(cancel=stop)):
            return cat.load("tiny-gpt2")

    with cat.using("tiny-llama"):
        with pytest.raises(Interrupted):
            within(10, cancelled_open)  # the budget is the thread's own: it is set in the thread that waits
    assert cat._reserved == 0
