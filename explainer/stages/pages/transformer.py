"""Transformer: what the scenario's model computes for the prompt, block by block and head by head.

One forward pass over the prompt's token ids, asking the model for its named intermediates
(``embedding``, ``block_{l}_attn_head_{h}_weights``, ``block_{l}_mlp_hidden``,
``block_{l}_resid_out``; see ``explainer/llm/interface.py``), turned into what the page draws:

- the embedding matrix of the shown tokens [W, d];
- attention maps [W, W] (lower triangle only: the upper one is the causal mask), and for every
  head two habits over the shown queries (weight on the previous token, on the first token);
- mean |activation| of each MLP per token, and the L2 norm of the residual stream after
  the embedding and after every block;
- the logit lens: the residual stream at each depth decoded through the final norm and
  the output matrix, top-5 tokens per position, and the probability and rank of the real next token.

Long prompts are shown through a window of ``WINDOW`` consecutive tokens that holds the
selected one. Only the tokens up to the window's end are run, and those before it without
asking for intermediates, so a 2,048-token prompt keeps [W, S] attention rows, never [S, S].
Large arrays travel as base64 uint16 (``pack``). A model whose maps would not fit ``ATTN_BYTES``
(30 layers x 9 heads make 270 maps, ~1.5 MB) ships one layer's maps at a time: the page fetches
another layer's from ``/learn/transformer/data?layer=N``. Results are kept in a small LRU per
(model fingerprint, scenario, window), so revisits, token clicks and layer switches are cheap.
"""
from __future__ import annotations

import base64
import math
from collections.abc import Iterator

import numpy as np

from explainer.lifecycle import lru
from explainer.llm.sampling import softmax
from explainer.llm.threads import blas_threads
from explainer.stages.options import ChoiceOption, IntOption, OptionError
from explainer.stages.words import token_label, token_row, visible_token

WINDOW = 64  # tokens shown at once (attention maps are W x W); fewer for a model whose logit lens is costly
MIN_WINDOW = 16
LENS_FLOPS = 2.5e11  # the logit lens of one window, at most: (L+1) x W x d x V multiply-adds, twice
TOP = 5  # logit-lens candidates per depth
LAST = -1  # the "token" option's default: the prompt's last token, whose prediction is the reply's first token
ATTN_BYTES = 400_000  # base64 attention a page ships at most: past it, only the selected layer's maps
THUMBS = (8, 6)  # at most this many layers and heads get one thumbnail per head; more get a compact grid
ROWS_BYTES = 128 << 20  # attention weights one chunk of ``attention_rows`` may hold (bigger chunks: faster BLAS)
LENS_BYTES = 64 << 20  # float32 vocabulary scores one pass may hold (logit lens, prefill)

DATA = {"tf-data": "data", "tf-tokens": "tokens", "tf-parts": "cut_parts", "tf-view": "view"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS = {
    "layer": IntOption(0, 0, label="selected layer"),
    "head": IntOption(0, 0, label="selected head"),
    "token": IntOption(LAST, 0, label="selected token position"),
    "scale": ChoiceOption("linear", ("linear", "log")),  # colour scale of the attention maps
}
HEADS = ("block_*_attn_head_*_weights",)
NAMES = ("embedding", *HEADS, "block_*_mlp_hidden", "block_*_resid_out")

_CACHE = lru.LRU("transformer page")  # per model, scenario and window, bounded by bytes


def window_size(c) -> int:
    """Tokens a page shows at once for a model of config ``c``: ``WINDOW``, or fewer (a multiple of 8, at least
    ``MIN_WINDOW``) when reading every depth of so many through the output matrix would pass ``LENS_FLOPS``.

    Example: SmolLM2-135M (30 layers, d 576, 49,152 tokens) gets 64; Qwen2.5-0.5B (24, 896, 151,936) gets 32.
    """
    per_token = 2 * (c.n_layer + 1) * c.d_model * c.vocab_size
    return max(MIN_WINDOW, min(WINDOW, int(LENS_FLOPS // per_token) // 8 * 8))


def window_start(n_tokens: int, token: int, size: int = WINDOW) -> int:
    """First position of the shown window: the last ``size`` tokens, or a window centred on ``token``.

    Example: ``window_start(500, 499) == 436``; ``window_start(500, 10) == 0``.
    """
    if n_tokens <= size or token >= n_tokens - size:
        return max(0, n_tokens - size)
    return max(0, token - size // 2)


def pack(values: np.ndarray, lo: float, hi: float) -> dict:
    """Quantise ``values`` in [lo, hi] to uint16 (little-endian) and base64 them; JS reads ``lo + q/65535*(hi-lo)``."""
    return {"lo": lo, "hi": hi, "b64": base64.b64encode(quantise(values, lo, hi).tobytes()).decode("ascii")}


def quantise(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` in [lo, hi] as little-endian uint16 steps of (hi - lo) / 65535 (what ``pack`` sends)."""
    span = (hi - lo) or 1.0
    return np.rint((np.clip(values, lo, hi) - lo) / span * 65535).astype("<u2")


def unpack(packed: dict) -> np.ndarray:
    """The inverse of ``pack`` (for tests and tools), flat float64."""
    q = np.frombuffer(base64.b64decode(packed["b64"]), dtype="<u2").astype(np.float64)
    return packed["lo"] + q / 65535 * (packed["hi"] - packed["lo"])


def head_names(n_layer: int, n_head: int, layers: list[int] | range | None = None) -> list[str]:
    """The trace names of every head of ``layers`` (all by default), layer by layer: the order maps are packed in."""
    return [f"block_{l}_attn_head_{h}_weights" for l in (range(n_layer) if layers is None else layers) for h in range(n_head)]


def attention_rows(model, ids: list[int], budget: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Every head's attention weights over ``ids``, a chunk of query rows at a time: yields
    ``(first row's position, {head name: weights [rows, keys]})``.

    One pass asking for every head would hold L x H x T x T weights at once (4.5 GB for 30 x 9 heads
    at 2,048 tokens); chunks of rows run through the KV cache keep at most ``budget`` bytes of them,
    and cost the same arithmetic. ``budget`` defaults to ``ROWS_BYTES``.
    """
    c = model.config
    T = len(ids)
    rows = max(1, (budget or ROWS_BYTES) // (c.n_layer * c.n_head * max(T, 1) * 4))  # float32 weights per row: L*H*T
    cache = model.new_cache()
    for q0 in range(0, T, rows):
        yield q0, model.forward(ids[q0:q0 + rows], cache, want=HEADS).trace


def choose_layers(n_layer: int, n_head: int, size: int, layer: int) -> list[int]:
    """The layers whose maps a page ships: all of them when they fit ``ATTN_BYTES``, else the selected one."""
    per_map = math.ceil(size * (size + 1) / 2 * 2 / 3) * 4  # base64 of the lower triangle's uint16s
    return list(range(n_layer)) if n_layer * n_head * per_map <= ATTN_BYTES else [layer]


def attention_payload(data: dict, layers: list[int]) -> dict:
    """The packed maps of ``layers`` (names in the same order) from a ``compute`` result."""
    a = data["maps"]
    L, H = a["n_layer"], a["n_head"]
    q = a["q"][layers]  # [len(layers), H, W(W+1)/2] uint16
    return {"names": head_names(L, H, layers), "layers": layers, "n_layer": L, "n_head": H, "size": a["size"],
            "packing": "lower-triangle, row-major", "lo": 0.0, "hi": 1.0,
            "b64": base64.b64encode(q.tobytes()).decode("ascii")}


def top_k(scores: np.ndarray, k: int = TOP, block: int = 64) -> np.ndarray:
    """Each row's ``k`` largest scores' indices, largest first. They lie in at most ``k`` blocks of ``block``
    scores, and those blocks have the ``k`` largest maxima: searching those is ~20x faster than argpartition
    over a 49,152-token vocabulary.

    Example: ``top_k(np.array([[0.1, 0.9, 0.3, 0.7]]), 2, block=2).tolist() == [[1, 3]]``.
    """
    n, V = scores.shape
    full = V // block * block
    maxima = scores[:, :full].reshape(n, -1, block).max(axis=-1)
    if full < V:  # a short last block
        maxima = np.concatenate([maxima, scores[:, full:].max(axis=-1, keepdims=True)], axis=1)
    kb = min(k, maxima.shape[1])
    blocks = np.argpartition(maxima, maxima.shape[1] - kb, axis=-1)[:, -kb:]
    cand = (blocks[:, :, None] * block + np.arange(block)).reshape(n, -1)
    vals = np.take_along_axis(scores, np.minimum(cand, V - 1), -1)
    vals[cand >= V] = -np.inf  # past the end of a short last block
    best = np.argpartition(vals, vals.shape[1] - k, axis=-1)[:, -k:]
    order = np.argsort(-np.take_along_axis(vals, best, -1), axis=-1, kind="stable")
    return np.take_along_axis(cand, np.take_along_axis(best, order, -1), -1)


def _lens(model, resid: np.ndarray, nxt: list[int | None]) -> tuple[list[dict], set[int]]:
    """Logit-lens rows per position (top ``TOP`` with probabilities, the next token's probability and rank)
    and every token id they name. In float32, a few depths at a time (``LENS_BYTES`` of scores): never the
    whole [depths, W, V] (780 MB in float64 for 31 depths, 64 tokens and 49,152 tokens of vocabulary)."""
    depth, W, _ = resid.shape
    V = model.config.vocab_size
    has_next = np.array([n is not None for n in nxt])
    nxt_ids = np.array([n if n is not None else 0 for n in nxt], dtype=np.int64)
    per_pass = max(1, LENS_BYTES // (W * V * 4))  # depths whose scores fit the budget together
    depths: list[list[dict]] = [[] for _ in range(W)]
    seen: set[int] = set()
    for d0 in range(0, depth, per_pass):
        k = min(per_pass, depth - d0)
        with blas_threads(getattr(model, "threads", 1)):  # one product of k*W rows: BLAS is faster on a few big ones
            logits = np.asarray(model.logit_lens(resid[d0:d0 + k].reshape(k * W, -1)), dtype=np.float32)  # [k*W, V]
        top = top_k(logits)
        z = logits.max(axis=-1, keepdims=True)
        total = np.exp(logits - z).sum(axis=-1, dtype=np.float64)  # [k*W]: the softmax's denominators
        p_top = np.exp(np.take_along_axis(logits, top, -1) - z) / total[:, None]
        rows = np.arange(k * W)
        l_next = logits[rows, np.tile(nxt_ids, k)]
        p_next = np.exp(l_next - z[:, 0]) / total
        rank = (logits > l_next[:, None]).sum(axis=-1) + 1
        for r in rows:
            i = r % W
            depths[i].append({
                "top": [[int(t), round(float(p), 4)] for t, p in zip(top[r], p_top[r])],
                "next": round(float(p_next[r]), 4) if has_next[i] else None,
                "next_rank": int(rank[r]) if has_next[i] else None,
            })
        seen.update(top.ravel().tolist())
    seen.update(int(n) for n in nxt if n is not None)
    return [{"next": n, "depths": per} for n, per in zip(nxt, depths)], seen


def compute(model, label, ids: list[int], start: int, size: int = WINDOW, next_after: int | None = None) -> dict:
    """Everything the page draws for tokens ``ids[start:start+size]``; JSON-ready except ``maps``
    (every head's quantised map, which ``attention_payload`` packs a few layers of).

    ``label(id) -> str`` names a token; ``next_after`` is the token the model sampled after the
    prompt (the "actual next token" for the last position), when there is one.
    """
    c = model.config
    L, H, T = c.n_layer, c.n_head, len(ids)
    end = min(T, start + size)
    W = end - start
    cache = model.new_cache()
    step = max(WINDOW, LENS_BYTES // (4 * c.vocab_size))  # a pass's [rows, V] scores stay under LENS_BYTES
    for a in range(0, start, step):  # the keys and values the window attends to; no intermediates
        model.forward(ids[a:min(start, a + step)], cache)
    tr = model.forward(ids[start:end], cache, want=NAMES).trace  # rows: the window's tokens; keys: 0..end

    names = head_names(L, H)
    rows, cols = np.tril_indices(W)  # row-major lower triangle: row i holds keys start..start+i
    maps = np.stack([tr[n][:, start:end][rows, cols] for n in names])  # [L*H, W(W+1)/2]

    emb = tr["embedding"]  # [W, d]
    emb_max = float(np.ceil(np.abs(emb).max() * 1000) / 1000) or 1.0

    mlp_names = [f"block_{l}_mlp_hidden" for l in range(L)]
    mlp = np.stack([np.abs(tr[n]).mean(axis=-1) for n in mlp_names])  # [L, W]

    resid_names = ["embedding"] + [f"block_{l}_resid_out" for l in range(L)]
    resid = np.stack([tr[n] for n in resid_names])  # [L+1, W, d]
    norms = np.linalg.norm(resid, axis=-1)  # [L+1, W]

    # Two habits a head can have, measured over the shown queries (the first token, which can only see
    # itself, left out): the weight a token gives the token right before it, and the weight it gives the
    # prompt's very first token. The "Try this" fold and the compact head grid show them.
    q0 = max(start, 1)
    q = np.arange(q0, end)
    prev_share = [float(tr[n][q - start, q - 1].mean()) if end > q0 else 0.0 for n in names]
    first_share = [float(tr[n][q - start, 0].mean()) if end > q0 else 0.0 for n in names]

    nxt = list(ids[start + 1:end + 1])
    if end == T:
        nxt.append(next_after)
    lens, seen = _lens(model, resid, nxt)

    return {
        "start": start, "end": end, "n_tokens": T,
        "maps": {"n_layer": L, "n_head": H, "size": W, "q": quantise(maps, 0.0, 1.0).reshape(L, H, -1)},
        "embedding": {"name": "embedding", "rows": W, "cols": c.d_model, **pack(emb, -emb_max, emb_max)},
        "habits": {"prev": [round(v, 4) for v in prev_share], "first": [round(v, 4) for v in first_share],
                   "queries": end - q0},
        "mlp": {"names": mlp_names, "mean_abs": np.round(mlp, 4).tolist(), "max": round(float(mlp.max()), 4)},
        "resid": {"names": resid_names, "norm": np.round(norms, 3).tolist()},
        "lens": {"depth_names": resid_names, "rows": lens},
        "labels": {str(t): label(t) for t in sorted(seen)},
    }


def cached_compute(key: str, model, label, ids: list[int], start: int, next_after: int | None, size: int = WINDOW) -> dict:
    """``compute`` through the page's LRU; ``key`` must name the model's weights and the scenario."""
    return _CACHE.get_or_compute((key, start, size), lambda: compute(model, label, ids, start, size, next_after))


def _check(name: str, value: int, count: int, why: str) -> None:
    if value >= count:
        raise OptionError(f"“{name}” must be from 0 to {count - 1}: {why}; got {value}.")


def _try_heads(page, data: dict, c, opts) -> list[dict]:
    """The heads the "Try this" fold suggests, each with its figure as measured for this prompt."""
    habits = data["habits"]
    if habits["queries"] < 3:
        return []
    out = []
    for key, what in (("prev", "the token right before it"), ("first", "the prompt's first token")):
        shares = habits[key]
        m = int(np.argmax(shares))
        l, h = divmod(m, c.n_head)
        keep = {"token": opts["token"] if opts["token"] != LAST else None, "scale": opts["scale"] if opts["scale"] != "linear" else None}
        out.append({"layer": l, "head": h, "share": shares[m], "what": what, "kind": key,
                    "url": page.url(layer=l or None, head=h or None, **keep)})
    return out


def _parts(c, tok) -> dict:
    """How this model's parts are built, in the words the page's explanation uses."""
    arch = getattr(c, "architecture", "gpt2")  # the bundled model is built like GPT-2
    llama = arch != "gpt2"
    return {
        "rope": llama,
        "norm": "RMSNorm" if llama else "LayerNorm",
        "mlp": "SwiGLU" if llama else "GELU",
        "tied": getattr(c, "tie_word_embeddings", True),
        "kv_heads": getattr(c, "n_kv_head", c.n_head),
        "specials": list(tok.specials[:4]),
    }


def _unavailable(c, T: int) -> str | None:
    """Why the forward pass cannot be shown (no tokens, or more than the window holds), or None."""
    if T == 0:
        return ("The request is refused before it is tokenized, so there are no token ids to run "
                "through the model. Fix the request on the Compose stage to see the forward pass.")
    if T > c.n_ctx:
        return (f"The prompt is {T:,} tokens long and the model's context window holds {c.n_ctx:,}. "
                "The model cannot read it at all, so the API refuses the request before the "
                "forward pass. Shorten the prompt or the history on the Compose stage.")
    return None


def _checked_token(opts: dict, T: int) -> None:
    if opts["token"] != LAST:
        if T == 0:
            raise OptionError("“token” cannot be chosen: this scenario has no prompt tokens.")
        _check("token", opts["token"], T, f"the prompt has {T} tokens")


def _lens_table(c, data: dict, lens_row: dict) -> list[dict]:
    """The logit lens at the chosen token: the top predictions after the embedding and after each layer."""
    depth_labels = ["after the embedding"] + [f"after layer {l}" for l in range(c.n_layer)]
    return [{
        "label": depth_labels[d], "name": data["lens"]["depth_names"][d], "final": d == c.n_layer,
        "top": [{"id": t, "text": data["labels"][str(t)], "p": p} for t, p in row["top"]],
        "next": row["next"], "next_rank": row["next_rank"],
    } for d, row in enumerate(lens_row["depths"])]


def _forward(page, ids: list[int], token: int) -> tuple[dict, list[int], int, int]:
    """(the script's data: the window's forward pass with the chosen layers' attention, those layers, the window's
    start, its size), computed once per scenario and model."""
    e, c, opts = page.engine, page.engine.model.config, page.opts
    size = window_size(c)
    start = window_start(len(ids), token, size)
    first = page.run.steps[0]["token"] if page.run.steps else None
    key = f"{e.loaded.fingerprint}:{page.scenario.key()}"  # two models never share an entry
    computed = cached_compute(key, e.model, lambda t: token_label(e.tokenizer, t), ids, start, first, size)
    layers = choose_layers(c.n_layer, c.n_head, computed["end"] - start, opts["layer"])
    data = {k: v for k, v in computed.items() if k != "maps"} | {"attention": attention_payload(computed, layers)}
    return data, layers, start, size


def context(page) -> dict:
    model, opts, run, e = page.engine.model, page.opts, page.run, page.engine
    c = model.config
    _check("layer", opts["layer"], c.n_layer, f"the model has {c.n_layer} layers")
    _check("head", opts["head"], c.n_head, f"the model has {c.n_head} heads per layer")
    ids = list(run.prompt_ids)
    T = len(ids)
    base = {
        "wide": True,
        "cfg": c,
        "n_params": model.n_params,
        "n_tokens": T,
        "refused": bool(run.error),
        "head_dim": c.head_dim,
        "n_maps": c.n_layer * c.n_head,
        "parts": _parts(c, e.tokenizer),
    }
    _checked_token(opts, T)
    why = _unavailable(c, T)
    if why:
        return base | {"unavailable": why}
    token = T - 1 if opts["token"] == LAST else opts["token"]
    data, layers, start, size = _forward(page, ids, token)
    lens_row = data["lens"]["rows"][token - start]
    nxt = lens_row["next"]
    row = token_row(e.tokenizer, ids)  # each token's text from its bytes: a byte of a cut character is ‹E4›, never U+FFFD
    grid = "thumbs" if len(layers) == c.n_layer and c.n_layer <= THUMBS[0] and c.n_head <= THUMBS[1] else "compact"
    return base | {
        "layers": range(c.n_layer),
        "heads": range(c.n_head),
        "grid": grid,
        "try_heads": _try_heads(page, data, c, opts),
        "data": data,
        "tokens": [[t["id"], t["text"]] for t in row],
        # the tokens that hold part of a character, by position: "" or, on the last token of a run that
        # makes whole characters, those characters (words.token_runs)
        "cut_parts": {str(i): t["joins"] or "" for i, t in enumerate(row) if t["part"]},
        "view": {"layer": opts["layer"], "head": opts["head"], "token": token, "default_token": T - 1,
                 "scale": opts["scale"], "default_scale": OPTIONS["scale"].default, "grid": grid,
                 "specials": sorted(e.tokenizer.special_id(s) for s in e.tokenizer.specials)},
        "token": token,
        "token_text": row[token]["text"],
        "window": {"start": start, "end": data["end"], "size": data["end"] - start, "windowed": T > size,
                   "limit": size if size < WINDOW else None},
        "lens_table": _lens_table(c, data, lens_row),
        "lens_next": None if nxt is None else {"id": nxt, "text": token_label(e.tokenizer, nxt), "sampled": token == T - 1},
        "attn_name": f"block_{opts['layer']}_attn_head_{opts['head']}_weights",
    }


def _top_next(page, k: int = 5) -> list[dict]:
    """The model's top predictions at the end of the prompt, from the first step's real logits."""
    if not page.run.steps:
        return []
    p = softmax(np.asarray(page.run.steps[0]["logits"], dtype=np.float64))
    order = np.argsort(-p)[:k]
    return [{"text": (text := token_label(page.engine.tokenizer, t)), "label": visible_token(text), "id": int(t), "p": float(p[t])}
            for t in order]


def recap(page) -> dict:
    """Transformer's row and card on the recap: the model's shape and its favourites for the first token."""
    m = page.engine.model
    return {
        "model_info": {"layers": m.config.n_layer, "heads": m.config.n_head, "d_model": m.config.d_model,
                       "params": m.n_params, "n_ctx": m.config.n_ctx, "maps": m.config.n_layer * m.config.n_head},
        "vocab": page.engine.tokenizer.vocab_size,
        "top_next": _top_next(page),
    }
