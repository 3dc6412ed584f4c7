"""Open a Hugging Face-layout folder as a :class:`LoadedModel`, all or nothing.

Every file is checked before anything is built: the config (a supported architecture, sizes
under the ceilings, parameters that fit the memory allowed), the tokenizer (byte-level BPE) and
every weight tensor (present, readable, the shape the config implies). The first problem is one
sentence naming the file and what is wrong.

A folder is untrusted input: it is opened through :class:`~explainer.llm.hf.folder.ModelFolder`
(no links, nothing outside it), and the card shows only what was recognised in it (a licence's
name, never a file's text).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np

from explainer.llm.hf.config import HFConfig
from explainer.llm.hf.folder import ModelFolder, opened
from explainer.llm.hf.gpt2 import GPT2Model
from explainer.llm.hf.llama import LlamaModel
from explainer.llm.hf.tokenizer import HFTokenizer
from explainer.llm.hf.weights import fingerprint, read_weights
from explainer.llm.interface import LanguageModel, LoadedModel, ModelLoadError
from explainer.llm.layers import Dense

ARCHITECTURES = {"gpt2": "GPT-2 family: learned positions, LayerNorm, GELU",
                 "llama": "Llama family: RoPE, RMSNorm, SwiGLU",
                 "qwen2": "Qwen2 (Llama family with query/key/value biases): RoPE, RMSNorm, SwiGLU"}
MANY_PARAMETERS = 20_000_000  # from here on a forward pass is large enough for every BLAS thread
# The float32 weights a folder may claim when no smaller ceiling is passed in (the catalog passes its memory
# budget): the parameter count the config implies, times 4 bytes, is checked before any weight is read.
MAX_MODEL_BYTES = 16 << 30
# The files the tokenizer reads; each must be a regular file of the folder (or absent) when it is handed over.
LICENCE_FILES = re.compile(r"^LICEN[CS]E[\w.-]{0,40}$", re.I)  # LICENSE, LICENSE.md, LICENSE-MODEL, …
HEAD_BYTES = 4000  # a licence is stated at its top, and the file may be huge


def _need(folder: ModelFolder, name: str) -> None:
    if not folder.is_file(name):
        raise ModelLoadError(f"{folder.name}/{name} is missing: a model folder needs config.json, tokenizer.json and its *.safetensors weights.")


def _weights_present(folder: ModelFolder) -> None:
    if not (folder.is_file("model.safetensors") or folder.is_file("model.safetensors.index.json")):
        raise ModelLoadError(f"{folder.name}/model.safetensors is missing (and there is no model.safetensors.index.json): "
                             "the weights must be in safetensors format.")


# ---- the licence ----------------------------------------------------------------------------
# A licence file is shown by the name of the licence it is recognised as, from phrases its text is
# known by; never by its own words (a "LICENSE" can be anything: a link to a secret was once shown
# here by its first line). An identifier from a model card's metadata is shown only if it looks like one.
SPDX_LIKE = re.compile(r"^[A-Za-z0-9.+-]{1,64}$")
_LICENCE_TEXTS: list[tuple[re.Pattern[str], str]] = [(re.compile(p, re.I | re.S), name) for p, name in [
    (r"apache license.{0,40}version 2\.0", "Apache-2.0"),
    (r"gnu affero general public license.{0,40}version 3", "AGPL-3.0"),
    (r"gnu lesser general public license.{0,40}version 3", "LGPL-3.0"),
    (r"gnu lesser general public license.{0,40}version 2\.1", "LGPL-2.1"),
    (r"gnu general public license.{0,40}version 3", "GPL-3.0"),
    (r"gnu general public license.{0,40}version 2", "GPL-2.0"),
    (r"mozilla public license.{0,20}(?:version )?2\.0", "MPL-2.0"),
    (r"permission is hereby granted, free of charge, to any person obtaining a copy", "MIT"),
    (r"redistribution and use in source and binary forms.*neither the name", "BSD-3-Clause"),
    (r"redistribution and use in source and binary forms", "BSD-2-Clause"),
    (r"permission to use, copy, modify, and(?:/or)? distribute this software for any purpose", "ISC"),
    (r"boost software license.{0,20}version 1\.0", "BSL-1.0"),
    (r"this is free and unencumbered software released into the public domain", "Unlicense"),
    (r"cc0 1\.0 universal", "CC0-1.0"),
    (r"llama 2 community license", "Llama 2 Community License"),
    (r"llama (3(?:\.\d)?|4) community license", "Llama {0} Community License"),
    (r"gemma terms of use", "Gemma Terms of Use"),
    (r"qwen research license", "Qwen Research License"),
    (r"(?:tongyi qianwen|qwen) license agreement", "Qwen License"),
    (r"creativeml open ?rail-m", "CreativeML OpenRAIL-M"),
    (r"open ?rail\+\+-m", "OpenRAIL++-M"),
    (r"bigscience (?:bloom )?rail license v?1\.0", "BigScience BLOOM RAIL 1.0"),
    (r"bigscience open ?rail-m", "BigScience OpenRAIL-M"),
    (r"open ?rail-m", "OpenRAIL-M"),
    (r"responsible ai license", "a RAIL licence"),
]]
_CC = re.compile(r"creative commons.{0,40}?attribution((?:-noncommercial)?)((?:-sharealike|-noderivatives|-noderivs)?)"
                 r"\s+(\d\.\d)", re.I | re.S)
_SPDX_TAG = re.compile(r"SPDX-License-Identifier:\s*([A-Za-z0-9.+-]{1,64})\s*$", re.M)
# Identifiers a LICENSE file may consist of alone (compared in lower case).
_KNOWN_IDS = {s.lower(): s for s in (
    "Apache-2.0", "MIT", "BSD-2-Clause", "BSD-3-Clause", "ISC", "MPL-2.0", "GPL-2.0", "GPL-3.0", "LGPL-2.1", "LGPL-3.0",
    "AGPL-3.0", "CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0",
    "CC-BY-NC-ND-4.0", "Unlicense", "BSL-1.0", "OpenRAIL", "OpenRAIL-M", "CreativeML-OpenRAIL-M", "BigScience-OpenRAIL-M",
    "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "gemma")}


def recognise_licence(text: str) -> str | None:
    """The name of the licence ``text`` (a licence file's start) is, from its well-known phrases; None if unknown."""
    flat = re.sub(r"\s+", " ", text)
    for pattern, name in _LICENCE_TEXTS:
        m = pattern.search(flat)
        if m:
            return name.format(*m.groups())
    m = _CC.search(flat)
    if m:
        nc = "-NC" if m.group(1) else ""
        rest = {"-sharealike": "-SA", "-noderivatives": "-ND", "-noderivs": "-ND"}.get(m.group(2).lower(), "")
        return f"CC-BY{nc}{rest}-{m.group(3)}"
    m = _SPDX_TAG.search(text)
    if m:
        return m.group(1)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and lines[0].lower() in _KNOWN_IDS:
        return _KNOWN_IDS[lines[0].lower()]
    return None


def _front_matter_licence(readme: str) -> str | None:
    """The model card's ``license:`` (and, for ``other``, ``license_name:``), when it looks like an identifier."""
    m = re.match(r"\A\ufeff?---[ \t]*\r?\n(.*?)^---[ \t]*$", readme, re.S | re.M)
    if not m:
        return None
    meta = m.group(1)

    def field(key: str) -> str | None:
        found = re.search(rf"^{key}:[ \t]*(\S.*?)[ \t]*$", meta, re.M)
        value = found.group(1).strip().strip("'\"") if found else ""
        return value if SPDX_LIKE.fullmatch(value) else None

    lic = field("license")
    if lic is not None and lic.lower() == "other":
        name = field("license_name")
        return f"other ({name})" if name else "other"
    return lic


def licence_of(folder: Path | ModelFolder) -> str:
    """The licence the folder states: its model card's ``license:`` identifier, else the name of the licence
    its LICENSE file is recognised as ("a LICENSE file (not recognised)" otherwise); "" if it states none.

    Only identifiers and recognised names are returned: never text read from a file as it stands."""
    with opened(folder) as f:
        if f.is_file("README.md"):
            lic = _front_matter_licence(f.head("README.md", HEAD_BYTES).decode("utf-8", errors="replace"))
            if lic:
                return lic
        for name in f.names():
            if LICENCE_FILES.fullmatch(name) and f.is_file(name):
                found = recognise_licence(f.head(name, HEAD_BYTES).decode("utf-8", errors="replace"))
                return found or f"a {name} file (not recognised)"
    return ""


def _count_params(c: HFConfig) -> int:
    """Parameters implied by the config (what the card and ``models list`` show without reading the weights)."""
    d, f, L, V = c.d_model, c.d_ff, c.n_layer, c.vocab_size
    if c.architecture == "gpt2":
        block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
        return V * d + c.max_position_embeddings * d + L * block + 2 * d
    hd, kv = c.head_dim, c.n_kv_head
    attn = d * c.n_head * hd + 2 * d * kv * hd + c.n_head * hd * d
    if c.attention_bias:
        attn += c.n_head * hd + 2 * kv * hd
    if c.o_bias:
        attn += d
    block = attn + 3 * d * f + 2 * d + ((2 * f + d) if c.mlp_bias else 0)
    return V * d * (1 if c.tie_word_embeddings else 2) + L * block + d


P = ParamSpec("P")
R = TypeVar("R")


def _as_load_error(fn: Callable[Concatenate[Path | ModelFolder, P], R]) -> Callable[Concatenate[Path | ModelFolder, P], R]:
    """A hostile or damaged folder can raise more than ModelLoadError (a config nested 200,000 levels deep,
    a 400-digit number, an unreadable file): each becomes one sentence naming the folder, never a 500."""
    def wrapped(folder: Path | ModelFolder, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(folder, *args, **kwargs)
        except ModelLoadError:
            raise
        except (RecursionError, OverflowError, MemoryError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            if isinstance(exc, OSError):  # its text names the path on this server: the reason alone
                why = exc.strerror or type(exc).__name__
            else:
                why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            label = folder.name if isinstance(folder, ModelFolder) else Path(folder).name
            raise ModelLoadError(f"{label} cannot be opened: {why}") from None
    wrapped.__doc__, wrapped.__name__ = fn.__doc__, fn.__name__
    return wrapped


def _check_size(config: HFConfig, folder: ModelFolder, max_bytes: int | None) -> int:
    """The parameters config.json implies, refused before anything is read if their float32 weights exceed ``max_bytes``."""
    params = _count_params(config)
    limit = MAX_MODEL_BYTES if max_bytes is None else max_bytes
    if params * 4 > limit:
        raise ModelLoadError(f"{folder.name}/config.json describes {params / 1e6:,.1f}M parameters, {_mb(params * 4)} "
                             f"of float32 weights, more than the {_mb(limit)} this server allows a local model.")
    return params


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:,.0f} MB"


@_as_load_error
def estimate_bytes(folder: Path | ModelFolder, max_bytes: int | None = None, root: Path | None = None) -> int:
    """The float32 weights config.json implies, in bytes, checked against the ceilings (no weights read)."""
    with opened(folder, root) as f:
        _need(f, "config.json")
        return 4 * _check_size(HFConfig.from_folder(f), f, max_bytes)


@_as_load_error
def describe_folder(folder: Path | ModelFolder, max_bytes: int | None = None) -> str:
    """One line about a folder from its config alone (no weights read): for ``models list``."""
    with opened(folder) as f:
        _need(f, "config.json")
        cfg = HFConfig.from_folder(f)
        params = _check_size(cfg, f, max_bytes)
    return (f"{cfg.architecture} · {params / 1e6:.1f}M parameters · {cfg.n_layer} layers × {cfg.n_head} heads"
            f" · vocabulary {cfg.vocab_size:,} · context {cfg.max_position_embeddings:,}")


@_as_load_error
def load_folder(folder: Path | ModelFolder, name: str | None = None, max_context: int = 2048,
                max_bytes: int | None = None, root: Path | None = None) -> LoadedModel:
    """The model in ``folder``: checked file by file, then built; raises ModelLoadError, never half-loads.

    ``max_bytes`` caps the float32 weights config.json may claim (MAX_MODEL_BYTES by default); ``root``, when
    given, is the models directory the folder must really sit in (the catalog passes it when serving)."""
    with opened(folder, root) as f:
        return _load(f, name, max_context, max_bytes)


def _load(f: ModelFolder, name: str | None, max_context: int, max_bytes: int | None) -> LoadedModel:
    _need(f, "config.json")
    config = HFConfig.from_folder(f, max_context=max_context)
    _check_size(config, f, max_bytes)
    _need(f, "tokenizer.json")
    _weights_present(f)
    # The weights' headers are checked against the config before anything is sized by it, so a config
    # claiming a huge vocabulary or more layers than the weights hold fails on the tensors, not on an allocation.
    weights = read_weights(f, config)
    # Read through the folder's open descriptor where the system names one (/proc/self/fd/N): a folder
    # renamed or replaced by a link since it was opened is not followed.
    tokenizer = HFTokenizer.from_folder(f, model_vocab_size=config.vocab_size)  # read inside the open folder
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(f"{f.name}/tokenizer.json has token ids up to {tokenizer.vocab_size - 1:,}, beyond the "
                             f"{config.vocab_size:,} rows of the embedding that config.json's vocab_size gives.")
    model = (GPT2Model if config.architecture == "gpt2" else LlamaModel)(config, weights)
    del weights
    fp = fingerprint(f)
    has_template = bool(getattr(tokenizer, "has_own_template", True))
    card = {
        "architecture": ARCHITECTURES[config.architecture], "model_type": config.architecture,
        "parameters": model.n_params, "layers": config.n_layer, "heads": config.n_head, "kv_heads": config.n_kv_head,
        "d_model": config.d_model, "d_ff": config.d_ff, "vocabulary": config.vocab_size,
        "context": config.n_ctx, "model_context": config.max_position_embeddings,
        "licence": licence_of(f), "memory_bytes": model.n_params * 4, "resident_bytes": model_bytes(model),
        "has_chat_template": has_template,
        "dtype": _dtype_on_disk(f) + " on disk, float32 in memory",
    }
    limits = []
    if config.n_ctx < config.max_position_embeddings:
        limits.append(f"The context window is cut to {config.n_ctx:,} tokens here (the model reads "
                      f"{config.max_position_embeddings:,}): numpy keeps every key and value, and pages draw every position.")
    if not has_template:
        limits.append("The folder has no chat template, so turns are written as plain “User: … / Assistant: …” text "
                      "ending with the end-of-text token; a base model may not stop on its own.")
    limits.append("Tools are described to the model in this app's own words in its system prompt, and a call's JSON is "
                  "decoded under its schema, whatever the model was trained on.")
    threads = (os.cpu_count() or 1) if model.n_params >= MANY_PARAMETERS else 1
    model.threads = threads
    return LoadedModel(name or f.name, model, tokenizer, fp, bundled=False, card=card, limits=limits, threads=threads)


def model_bytes(model: LanguageModel) -> int:
    """The bytes a built model's arrays hold (weights, whether arrays or ``Dense`` matrices, and tables such as
    RoPE's), counted once each."""
    seen: dict[int, int] = {}

    def visit(x: object, depth: int = 0) -> None:
        if isinstance(x, np.ndarray):
            base = x if x.base is None else x.base
            if isinstance(base, np.ndarray):
                seen[id(base)] = base.nbytes
            else:
                seen[id(x)] = x.nbytes
        elif depth < 5 and isinstance(x, (list, tuple)):
            for y in x:
                visit(y, depth + 1)
        elif depth < 3 and isinstance(x, dict):
            for y in x.values():
                visit(y, depth + 1)
        elif depth < 5 and (isinstance(x, Dense) or (dataclasses.is_dataclass(x) and not isinstance(x, type))):
            for y in vars(x).values():  # a weight matrix's blocks, a block's tensors
                visit(y, depth + 1)

    visit(vars(model))
    return sum(seen.values()) or model.n_params * 4


# A sample conversation a chat template must render at ``add``: system, user, assistant, user and a
# generation prompt; then, for a template that refuses a system turn, the same without it.
SAMPLE_CONVERSATIONS = (
    ("You are a helpful assistant.", [("user", "Hello! What is a token?"), ("assistant", "A piece of text the model reads."),
                                      ("user", "Thanks. And a chat template?")]),
    (None, [("user", "Hello! What is a token?"), ("assistant", "A piece of text the model reads."),
            ("user", "Thanks. And a chat template?")]),
)


def check_chat_template(loaded: LoadedModel) -> None:
    """Render the model's chat template on the sample conversations, through its tokenizer, as a request would:
    refused (ModelLoadError, one sentence naming the template's file) if it fails or exceeds its render budget on
    the first, unless it only refuses a system turn (``raise_exception``) and renders the second; a template that
    fails on every conversation is refused."""
    from explainer.llm.budget import Interrupted

    tok = loaded.tokenizer
    first: str | None = None
    for system, messages in SAMPLE_CONVERSATIONS:
        try:
            if tok.encode_chat(system, messages, add_generation_prompt=True):
                return
            why = "the chat template renders the sample conversation as nothing."
        except Interrupted:
            raise
        except Exception as exc:  # untrusted code: whatever it raises is the template's failure
            why = str(exc).strip() or type(exc).__name__
            if not isinstance(exc, ModelLoadError) or "refuses this conversation" not in why:
                raise ModelLoadError(_sentence(f"{loaded.name}: the chat template cannot render a sample conversation "
                                               f"(system, user, assistant, user): {why}")) from None
        first = first or why
    raise ModelLoadError(_sentence(f"{loaded.name}: the chat template fails on every sample conversation, with and "
                                   f"without a system prompt: {first}"))


def _sentence(text: str) -> str:
    """One sentence: the inner message's own full stops become semicolons, and it ends with one."""
    text = re.sub(r"\.\s+(?=\S)", "; ", text.strip()).rstrip(".")
    return text[:600] + "."


_DTYPES = {"float32", "float16", "bfloat16", "float64"}


def _dtype_on_disk(folder: ModelFolder) -> str:
    """The weights' dtype as stored (the config's ``torch_dtype`` / ``dtype``, when it names one)."""
    try:
        data = json.loads(folder.read_text("config.json", 1 << 20))
    except (ModelLoadError, ValueError):
        return "unknown dtype"
    dtype = (data.get("torch_dtype") or data.get("dtype")) if isinstance(data, dict) else None
    return dtype if dtype in _DTYPES else "unknown dtype"
