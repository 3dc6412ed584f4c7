"""The arithmetic every architecture's forward pass is made of, one function per named step.

The architectures (``explainer.llm.hf.gpt2`` for the GPT-2 family, the bundled model included,
and ``explainer.llm.hf.llama`` for the Llama family) are written as a sequence of these steps,
so each reads like a textbook block: norm, attention, residual, norm, MLP, residual.

All functions take and return float32 arrays; a scale passed in is a Python float, never a
numpy float64 scalar, which would promote the whole pass to float64 (NumPy 2 promotion rules).

Example:
    >>> import numpy as np
    >>> softmax(np.array([0.0, 0.0], np.float32)).tolist()
    [0.5, 0.5]
    >>> x = np.arange(8, dtype=np.float32).reshape(1, 1, 8)
    >>> rotate_half(x).tolist()
    [[[-4.0, -5.0, -6.0, -7.0, 0.0, 1.0, 2.0, 3.0]]]
"""
from __future__ import annotations

import numpy as np


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis: centre, divide by the standard deviation, then gain and bias."""
    d = x - x.mean(axis=-1, keepdims=True)
    var = (d * d).mean(axis=-1, keepdims=True)  # the same as x.var(), without centring twice
    out: np.ndarray = d / np.sqrt(var + eps) * w + b  # (numpy's stubs type this arithmetic as Any)
    return out


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """As transformers' LlamaRMSNorm in float32: x / sqrt(mean(x^2) + eps), times the gain."""
    out: np.ndarray = x * (1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)) * w
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """tanh approximation, as ``torch.nn.functional.gelu(approximate="tanh")`` (GPT-2's ``gelu_new``)."""
    out: np.ndarray = 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    return out


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), the sigmoid written with tanh: no overflow (and no warning) for very negative x."""
    out: np.ndarray = x * (0.5 + 0.5 * np.tanh(0.5 * x))
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities from scores along ``axis``; the maximum is subtracted first, so large scores cannot overflow."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out


def rotate_half(x: np.ndarray) -> np.ndarray:
    """[x1, x2] -> [-x2, x1] along the last axis (transformers' ``rotate_half``)."""
    half = x.shape[-1] // 2
    out: np.ndarray = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return out


def apply_rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotary positions: ``x * cos + rotate_half(x) * sin``, written without building ``rotate_half(x)``.

    x: [T, heads, hd]; cos and sin: [T, 1, hd] (the half-width angle table repeated twice).
    """
    half = x.shape[-1] // 2
    out: np.ndarray = x * cos
    out[..., :half] -= x[..., half:] * sin[..., :half]
    out[..., half:] += x[..., :half] * sin[..., half:]
    return out


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Causal attention of T new queries over S cached keys, grouped-query style.

    q: [h, T, hd]; k and v: [kv, S, hd] with h a multiple of kv (query head i reads key/value head
    i // (h // kv), as transformers' ``repeat_kv``; kv == h is ordinary multi-head attention);
    query t sits at position ``start + t`` and sees keys 0..start+t.
    Returns (output [h, T, hd], weights [h, T, S]).
    """
    h, T, hd = q.shape
    kv, S = k.shape[0], k.shape[1]
    g = h // kv
    # The g query heads sharing a key head become g*T rows of one product: no copy of the keys per head.
    qg = q.reshape(kv, g * T, hd)
    if T <= 8:  # decoding: OpenBLAS computes k @ q^T about twice as fast as q @ k^T for so few rows
        scores = (k @ qg.transpose(0, 2, 1)).transpose(0, 2, 1).reshape(h, T, S)  # a (small) C-order copy
    else:  # a prompt: here the transposed copy of [h, T, S] would cost more than it saves
        scores = (qg @ k.transpose(0, 2, 1)).reshape(h, T, S)
    scores *= scale
    if T > 1:  # the causal mask: a query never sees a later position
        scores[:, np.arange(S)[None, :] > (start + np.arange(T))[:, None]] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)  # softmax, in place
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    out = (scores.reshape(kv, g * T, S) @ v).reshape(h, T, hd)
    return out, scores


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """[T, n_head * hd] -> [n_head, T, hd]."""
    T = x.shape[0]
    return x.reshape(T, n_head, -1).transpose(1, 0, 2)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """[n_head, T, hd] -> [T, n_head * hd]."""
    h, T, hd = x.shape
    return x.transpose(1, 0, 2).reshape(T, h * hd)
