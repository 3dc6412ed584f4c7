"""The bundled model's checkpoint: its file format, and loading it into the GPT-2 forward pass.

The bundled model is a GPT-2-style decoder trained for this app (``explainer/llm/training``): token
+ learned position embeddings, ``n_layer`` pre-LayerNorm blocks (causal multi-head self-attention,
then a tanh-GELU MLP), a final LayerNorm and the token embedding reused as the output layer. Its
linear layers have no biases. It runs through the same code as any GPT-2 checkpoint
(:class:`explainer.llm.hf.gpt2.GPT2Model`): this module renames its tensors to GPT-2's and gives
it zero biases, so there is one forward pass, one KV cache and one attention for the family.

The file, ``weights/model.npz``, holds float16 tensors named as the training code names them
(``blocks.{l}.attn.qkv.weight`` is GPT-2's ``h.{l}.attn.c_attn.weight``, [in, out] already) and
the config and training metadata as JSON. The names of the forward pass's intermediates are listed
in ``explainer.llm.interface``; ask for them with glob patterns.

Example:
    >>> model = load_model()
    >>> out = model.forward([257, 72, 105], want=("embedding",))
    >>> out.logits.shape, out.trace["embedding"].shape
    ((3, 4096), (3, 256))
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from explainer.llm.hf.config import HFConfig
from explainer.llm.hf.gpt2 import GPT2Model

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "model.npz"


@dataclass(frozen=True)
class ModelConfig:
    """The bundled model's shape, as its file stores it."""

    vocab_size: int = 4096
    n_ctx: int = 512
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    d_ff: int = 1024
    ln_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def as_gpt2(self) -> HFConfig:
        """The same shape as a GPT-2 config: tied head, tanh GELU, 1/sqrt(head_dim) attention scale."""
        return HFConfig(architecture="gpt2", vocab_size=self.vocab_size, max_position_embeddings=self.n_ctx, n_ctx=self.n_ctx,
                        n_layer=self.n_layer, n_head=self.n_head, n_kv_head=self.n_head, d_model=self.d_model, d_ff=self.d_ff,
                        head_dim=self.head_dim, norm_eps=self.ln_eps, tie_word_embeddings=True, activation="gelu_new")


# The training code's tensor names (per block) -> GPT-2's, and the bias GPT-2 has beside each (zero here).
_BLOCK_NAMES = {"ln_1.weight": "ln_1.weight", "ln_1.bias": "ln_1.bias", "ln_2.weight": "ln_2.weight", "ln_2.bias": "ln_2.bias",
                "attn.qkv.weight": "attn.c_attn.weight", "attn.proj.weight": "attn.c_proj.weight",
                "mlp.fc.weight": "mlp.c_fc.weight", "mlp.proj.weight": "mlp.c_proj.weight"}


def as_gpt2_weights(config: ModelConfig, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The bundled tensors under GPT-2's names, float32, with a zero bias for every linear layer."""
    out = {k: np.asarray(weights[k], np.float32) for k in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")}
    for l in range(config.n_layer):
        for ours, theirs in _BLOCK_NAMES.items():
            out[f"h.{l}.{theirs}"] = np.asarray(weights[f"blocks.{l}.{ours}"], np.float32)
        for linear in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            out[f"h.{l}.{linear}.bias"] = np.zeros(out[f"h.{l}.{linear}.weight"].shape[1], np.float32)
    return out


def bundled_model(config: ModelConfig, weights: dict[str, np.ndarray]) -> GPT2Model:
    """A forward pass over bundled-format tensors (the shipped file's, or a training checkpoint's)."""
    model = GPT2Model(config.as_gpt2(), as_gpt2_weights(config, weights))
    model.n_params = sum(v.size for v in weights.values())  # the trained parameters, not the zero biases
    return model


def read_weights(path: Path = WEIGHTS_PATH) -> tuple[ModelConfig, dict[str, np.ndarray], dict[str, Any]]:
    """(config, tensors under the training code's names, training metadata) of a bundled-format file."""
    with np.load(path) as data:
        config = ModelConfig(**json.loads(bytes(data["__config__"]).decode()))
        meta = json.loads(bytes(data["__meta__"]).decode()) if "__meta__" in data else {}
        weights = {k: data[k] for k in data.files if not k.startswith("__")}
    return config, weights, meta


def save_weights(config: ModelConfig, weights: dict[str, np.ndarray], path: Path = WEIGHTS_PATH, meta: dict[str, Any] | None = None) -> None:
    """Write tensors (the training code's names) as float16, with the config and ``meta`` as JSON."""
    arrays = {k: np.asarray(v).astype(np.float16) for k, v in weights.items()}
    arrays["__config__"] = np.frombuffer(json.dumps(asdict(config)).encode(), dtype=np.uint8)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta or {}).encode(), dtype=np.uint8)
    np.savez_compressed(path, allow_pickle=False, **arrays)  # (named, so no tensor's name can be taken for the flag)


@lru_cache(maxsize=2)
def load_model(path: Path = WEIGHTS_PATH) -> GPT2Model:
    config, weights, _ = read_weights(path)
    return bundled_model(config, weights)
