"""Open a Hugging Face-layout folder as a :class:`LoadedModel`, all or nothing.

Every file is checked before anything is built: the config (a supported architecture), the
tokenizer (byte-level BPE) and every weight tensor (present, readable, the shape the config
implies). The first problem is one sentence naming the file and what is wrong.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from explainer.llm.hf.config import HFConfig
from explainer.llm.hf.errors import ModelLoadError
from explainer.llm.hf.gpt2 import GPT2Model
from explainer.llm.hf.llama import LlamaModel
from explainer.llm.hf.tokenizer import HFTokenizer
from explainer.llm.hf.weights import fingerprint, read_weights
from explainer.llm.interface import LoadedModel

ARCHITECTURES = {"gpt2": "GPT-2 family: learned positions, LayerNorm, GELU",
                 "llama": "Llama family: RoPE, RMSNorm, SwiGLU",
                 "qwen2": "Qwen2 (Llama family with query/key/value biases): RoPE, RMSNorm, SwiGLU"}
MANY_PARAMETERS = 20_000_000  # from here on a forward pass is large enough for every BLAS thread


def _need(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise ModelLoadError(f"{folder.name}/{name} is missing: a model folder needs config.json, tokenizer.json and its *.safetensors weights.")
    return path


def _weights_present(folder: Path) -> None:
    if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
        raise ModelLoadError(f"{folder.name}/model.safetensors is missing (and there is no model.safetensors.index.json): "
                             "the weights must be in safetensors format.")


def _head(path: Path, n: int = 4000) -> str:
    with open(path, "rb") as f:  # only the start: a licence is stated at the top, and the file may be huge
        return f.read(n).decode("utf-8", errors="replace")


def licence_of(folder: Path) -> str:
    """The licence the folder states: a model card's ``license:`` front matter, else a LICENSE file's first line."""
    readme = folder / "README.md"
    if readme.is_file():
        head = _head(readme)
        m = re.search(r"^---\s*$(.*?)^---\s*$", head, re.S | re.M)
        if m:
            lic = re.search(r"^license:\s*(\S.*)$", m.group(1), re.M)
            if lic:
                return lic.group(1).strip().strip("'\"")[:80]
    for f in sorted(folder.glob("LICEN[CS]E*")):
        if f.is_file():
            for line in _head(f).splitlines():
                if line.strip():
                    return line.strip()[:80]
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


def _as_load_error(fn):
    """A hostile or damaged folder can raise more than ModelLoadError (a config nested 200,000 levels deep,
    a 400-digit number, an unreadable file): each becomes one sentence naming the folder, never a 500."""
    def wrapped(folder, *args, **kwargs):
        try:
            return fn(folder, *args, **kwargs)
        except ModelLoadError:
            raise
        except (RecursionError, OverflowError, MemoryError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ModelLoadError(f"{Path(folder).name} cannot be opened: {why}") from None
    wrapped.__doc__, wrapped.__name__ = fn.__doc__, fn.__name__
    return wrapped


@_as_load_error
def describe_folder(folder: Path) -> str:
    """One line about a folder from its config alone (no weights read): for ``models list``."""
    cfg = HFConfig.from_file(_need(folder, "config.json"))
    return (f"{cfg.architecture} · {_count_params(cfg) / 1e6:.1f}M parameters · {cfg.n_layer} layers × {cfg.n_head} heads"
            f" · vocabulary {cfg.vocab_size:,} · context {cfg.max_position_embeddings:,}")


@_as_load_error
def load_folder(folder: Path, name: str | None = None, max_context: int = 2048) -> LoadedModel:
    """The model in ``folder``: checked file by file, then built; raises ModelLoadError, never half-loads."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder.")
    config = HFConfig.from_file(_need(folder, "config.json"), max_context=max_context)
    _need(folder, "tokenizer.json")
    _weights_present(folder)
    # The weights' headers are checked against the config before anything vocabulary-sized is built, so a
    # config claiming a huge vocabulary fails on the embedding's shape, not on an allocation.
    weights = read_weights(folder, config)
    tokenizer = HFTokenizer.from_folder(folder, model_vocab_size=config.vocab_size)
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(f"{folder.name}/tokenizer.json has token ids up to {tokenizer.vocab_size - 1:,}, beyond the "
                             f"{config.vocab_size:,} rows of the embedding that config.json's vocab_size gives.")
    model = (GPT2Model if config.architecture == "gpt2" else LlamaModel)(config, weights)
    del weights
    fp = fingerprint(folder)
    has_template = bool(getattr(tokenizer, "has_own_template", True))
    card = {
        "architecture": ARCHITECTURES[config.architecture], "model_type": config.architecture,
        "parameters": model.n_params, "layers": config.n_layer, "heads": config.n_head, "kv_heads": config.n_kv_head,
        "d_model": config.d_model, "d_ff": config.d_ff, "vocabulary": config.vocab_size,
        "context": config.n_ctx, "model_context": config.max_position_embeddings,
        "licence": licence_of(folder), "memory_bytes": model.n_params * 4, "has_chat_template": has_template,
        "dtype": _dtype_on_disk(folder) + " on disk, float32 in memory",
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
    return LoadedModel(name or folder.name, model, tokenizer, fp, bundled=False, card=card, limits=limits, threads=threads)


def _dtype_on_disk(folder: Path) -> str:
    """The weights' dtype as stored (the config's ``torch_dtype`` / ``dtype``)."""
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return "unknown dtype"
    return str(data.get("torch_dtype") or data.get("dtype") or "unknown dtype")
