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
    # np.add.reduce(..) / n is np.mean's own arithmetic (a float32 sum, divided by the count), without the Python
    # wrapper around it: a decode step of a batch calls this nine times, under the interpreter lock each time.
    n = x.shape[-1]
    d = x - np.add.reduce(x, axis=-1, keepdims=True) / n
    var = np.add.reduce(d * d, axis=-1, keepdims=True) / n  # the same as x.var(), without centring twice
    out: np.ndarray = d / np.sqrt(var + eps) * w + b  # (numpy's stubs type this arithmetic as Any)
    return out


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """As transformers' LlamaRMSNorm in float32: x / sqrt(mean(x^2) + eps), times the gain."""
    out: np.ndarray = x * (1.0 / np.sqrt(np.add.reduce(x * x, axis=-1, keepdims=True) / x.shape[-1] + eps)) * w
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


def attend_one(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """A decode step's attention for one request: its single query over all its S cached keys (no mask: every
    cached position is earlier). q: [h, hd]; k and v: [kv, S, hd]. Returns the output [h * hd].

    The same arithmetic as :func:`attend` for one new position, with fewer steps: a batch runs it once per
    request, so its overhead is paid per row."""
    kv, S, hd = k.shape
    g = q.shape[0] // kv
    scores = k @ q.reshape(kv, g, hd).transpose(0, 2, 1)  # [kv, S, g]
    scores *= scale
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    out: np.ndarray = (scores.transpose(0, 2, 1) @ v).reshape(-1)  # [kv, g, hd] -> [h * hd]
    return out


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """[T, n_head * hd] -> [n_head, T, hd]."""
    T = x.shape[0]
    return x.reshape(T, n_head, -1).transpose(1, 0, 2)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """[n_head, T, hd] -> [T, n_head * hd]."""
    h, T, hd = x.shape
    return x.transpose(1, 0, 2).reshape(T, h * hd)


# ---- weight matrices: one layout for a prompt's pass and for a batch of decode steps ---------------------

ROW_BLOCK = 4  # rows per product of a short prompt (up to PROMPT_ROWS rows): in groups of 4, padded
COL_BLOCK = 64  # columns per block of a stored weight matrix
PER_ROW_MAX_PARAMS = 16_000_000  # up to this many parameters, a decode step multiplies row by row (``per_row_for``)
PROMPT_ROWS = 16  # past this many rows, a prompt's product goes block by block into the output's columns


def per_row_for(n_params: int) -> bool:
    """Does a model of ``n_params`` parameters multiply a decode step's rows one at a time?

    A small model's weights stay in the processor's caches, so reading them again for each row costs little,
    and a matrix-vector product of one row is the fastest way to multiply it: on some processors a product of
    4 rows costs 4-5 times one of 1 row (measured on an AMD EPYC: 48 against 9 microseconds for 4 rows against 1
    of the bundled model's attention weights), which made a request alone half as fast as before batching. A
    large model's step is bound by reading its weights from memory: its rows share each read, a column
    block at a time (``Dense.rows``).
    Both ways a row's result is computed by the same call, with the same shape, whatever the batch."""
    return n_params <= PER_ROW_MAX_PARAMS


class Dense:
    """A weight matrix [n_in, n_out] and its bias, stored as contiguous blocks of ``COL_BLOCK`` columns.

    Two ways to multiply by it:

    * ``dense(x)`` for the rows of a prompt (any number of rows);
    * ``dense.rows(x)`` for a decode step's rows, one per request, **batch-invariant**: the result of a
      row does not depend on how many other rows share the step, nor on which. BLAS picks its kernel by
      the shape of the product (a single row is a matrix-vector product, a few rows a small-matrix
      kernel, more rows the general one), and each kernel sums in its own order, so the same row can
      come out a few units in the last place apart in a batch of 1, 3 or 16, and a sampled token can flip.
      Here every product has one shape whatever the batch: one row times one ``[n_in, COL_BLOCK]`` block
      (or, ``per_row``, one row times the whole matrix). Each row goes through the same call, with the
      same shape, whether the batch has 1 row or 32.

    The column blocks are also what makes a batch cheap: numpy multiplies every row by one block before
    it moves to the next, so a block is read from memory once per step and reused from the processor's
    cache for every row (a 135M-parameter model's decode step reads 538 MB of weights, whether for one
    request or for sixteen). (Until this release the rows went in groups of ``ROW_BLOCK``, padded: on an
    AMD EPYC a group cost a lone row 3-4 times its own product, for no gain at 16 rows.)

    Example:
        >>> w = np.arange(6 * 70, dtype=np.float32).reshape(6, 70) / 100
        >>> d = Dense(w)
        >>> x = np.ones((3, 6), np.float32)
        >>> bool(np.allclose(d(x), x @ w)), bool(np.array_equal(d.rows(x)[1:2], d.rows(x[1:2])))
        (True, True)
        >>> bool(np.array_equal(d.columns([3, 65]), w[:, [3, 65]].T))
        True
    """

    def __init__(self, w: np.ndarray, bias: np.ndarray | None = None, per_row: bool = False):
        n_in, n_out = w.shape
        self.shape: tuple[int, int] = (int(n_in), int(n_out))
        # ``per_row``: W is kept whole, and a decode step multiplies each row by it on its own (a matrix-vector
        # product, the same call for a row alone or in any batch); see ``per_row_for``.
        self.per_row = per_row
        self.w = np.ascontiguousarray(w, np.float32) if per_row else None
        nb = 0 if per_row else n_out // COL_BLOCK
        self.split = nb * COL_BLOCK  # columns in whole blocks; the rest (if any) is the tail
        self.blocks = np.ascontiguousarray(w[:, :self.split].reshape(n_in, nb, COL_BLOCK).transpose(1, 0, 2), np.float32)
        self.tail = np.ascontiguousarray(w[:, self.split:], np.float32) if self.split < n_out and not per_row else None
        self.bias = None if bias is None else np.asarray(bias, np.float32)
        # An all-zero bias (the bundled model has none) is kept, but not added: an addition per product for nothing.
        self.added = self.bias if self.bias is not None and self.bias.any() else None

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        parts = (self.w, self.blocks, self.tail, self.bias)
        return sum(int(a.nbytes) for a in parts if a is not None)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x @ W + b`` for ``x`` [..., n_in] (a prompt's rows). A few rows go in groups of ``ROW_BLOCK`` (each
        column block read once, while it is in the processor's cache, for every group); more rows go block by
        block straight into the output's columns: one product of all the rows per block, large enough for BLAS
        to split across cores (groups of 16 rows were 1.5-3x slower on a chunk of 64 to 256 positions of a
        135M model, mostly on two threads), and no copy to regroup the result."""
        lead, n_in = x.shape[:-1], x.shape[-1]
        x2 = np.ascontiguousarray(x.reshape(-1, n_in), np.float32)
        T = len(x2)
        if self.w is not None:
            out_w: np.ndarray = x2 @ self.w
            if self.added is not None:
                out_w += self.added
            return out_w.reshape(*lead, self.shape[1])
        if T <= PROMPT_ROWS:
            return self._product(x2, ROW_BLOCK).reshape(*lead, self.shape[1])
        out = np.empty((T, self.shape[1]), np.float32)
        for k in range(len(self.blocks)):
            np.matmul(x2, self.blocks[k], out=out[:, k * COL_BLOCK:(k + 1) * COL_BLOCK])
        if self.tail is not None:
            out[:, self.split:] = x2 @ self.tail
        if self.added is not None:
            out += self.added
        return out.reshape(*lead, self.shape[1])

    def rows(self, x: np.ndarray) -> np.ndarray:
        """``x @ W + b`` for a decode step's rows ``x`` [B, n_in], each row's result independent of the others."""
        if self.w is not None:
            x = np.ascontiguousarray(x, np.float32)
            out = np.empty((len(x), self.shape[1]), np.float32)
            for i in range(len(x)):
                np.matmul(x[i], self.w, out=out[i])
            if self.added is not None:
                out += self.added
            return out
        # A large model: each row against each column block on its own (one [1, n_in] x [n_in, 64] product, the
        # same call alone or in any batch), block by block, so a block read from memory serves every row from the
        # processor's cache. numpy runs the whole loop in C. Groups of 4 rows against a block did the same reuse,
        # but on some processors a lone row paid for its group: 4x the time of its own product (an AMD EPYC).
        x = np.ascontiguousarray(x, np.float32)
        B = len(x)
        parts = []
        if self.split:
            y = np.matmul(x[None, :, None, :], self.blocks[:, None])  # [blocks, B, 1, COL_BLOCK]
            parts.append(y[:, :, 0, :].transpose(1, 0, 2).reshape(B, self.split))
        if self.tail is not None:
            parts.append(np.matmul(x[:, None, :], self.tail)[:, 0, :])
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if self.added is not None:
            out += self.added
        return out

    def _product(self, x: np.ndarray, group: int) -> np.ndarray:
        B, n_in = x.shape
        padded = -(-B // group) * group
        if padded == B and x.flags.c_contiguous and x.dtype == np.float32:
            xp = x
        else:
            xp = np.zeros((padded, n_in), np.float32)
            xp[:B] = x
        groups = xp.reshape(padded // group, group, n_in)
        parts = []
        if self.split:
            # [blocks, groups, group, COL_BLOCK]: block-major, so each block is reused by every group in turn
            y = np.matmul(groups[None], self.blocks[:, None])
            parts.append(y.transpose(1, 2, 0, 3).reshape(padded, self.split))
        if self.tail is not None:
            parts.append(np.matmul(groups, self.tail).reshape(padded, -1))
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if self.added is not None:
            out += self.added
        return out[:B]

    def columns(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Columns ``ids`` of W as rows [len(ids), n_in] (a tied head's columns are the token embeddings)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self.w is not None:
            return np.ascontiguousarray(self.w[:, ids].T)
        out = np.empty((len(ids), self.shape[0]), np.float32)
        whole = ids < self.split
        if whole.any():
            out[whole] = self.blocks[ids[whole] // COL_BLOCK, :, ids[whole] % COL_BLOCK]
        if (~whole).any():
            assert self.tail is not None
            out[~whole] = self.tail[:, ids[~whole] - self.split].T
        return out
