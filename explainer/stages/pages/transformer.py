"""Transformer: what the bundled model computes for the prompt, block by block and head by head.

One forward pass over the prompt's token ids, asking the model for its named intermediates
(``embedding``, ``block_{l}_attn_head_{h}_weights``, ``block_{l}_mlp_hidden``,
``block_{l}_resid_out``; see ``explainer/llm/model.py``), turned into what the page draws:

- the embedding matrix of the shown tokens [W, d];
- every attention map [W, W] (lower triangle only: the upper one is the causal mask);
- mean |activation| of each MLP per token, and the L2 norm of the residual stream after
  the embedding and after every block;
- the logit lens: the residual stream at each depth decoded through the final LayerNorm and
  the output matrix, top-5 tokens per position.

Long prompts are shown through a window of ``WINDOW`` consecutive tokens that holds the
selected one. Large arrays travel as base64 uint16 (``pack``) to keep the payload small.
Results are kept in a small LRU per (scenario, window), so revisits and token clicks are cheap.
"""
from __future__ import annotations

import base64

import numpy as np

from explainer.lifecycle import lru
from explainer.stages.options import ChoiceOption, IntOption, OptionError

WINDOW = 64  # tokens shown at once (attention maps are W x W)
TOP = 5  # logit-lens candidates per depth
LAST = -1  # the "token" option's default: the prompt's last token, whose prediction is the reply's first token

DATA = {"tf-data": "data", "tf-tokens": "tokens", "tf-view": "view"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS = {
    "layer": IntOption(0, 0, label="selected layer"),
    "head": IntOption(0, 0, label="selected head"),
    "token": IntOption(LAST, 0, label="selected token position"),
    "scale": ChoiceOption("linear", ("linear", "log")),  # colour scale of the attention maps
}

_CACHE = lru.LRU("transformer page")  # per scenario and window, bounded by bytes


def window_start(n_tokens: int, token: int, size: int = WINDOW) -> int:
    """First position of the shown window: the last ``size`` tokens, or a window centred on ``token``.

    Example: ``window_start(500, 499) == 436``; ``window_start(500, 10) == 0``.
    """
    if n_tokens <= size or token >= n_tokens - size:
        return max(0, n_tokens - size)
    return max(0, token - size // 2)


def pack(values: np.ndarray, lo: float, hi: float) -> dict:
    """Quantise ``values`` in [lo, hi] to uint16 (little-endian) and base64 them; JS reads ``lo + q/65535*(hi-lo)``."""
    span = (hi - lo) or 1.0
    q = np.rint((np.clip(values, lo, hi) - lo) / span * 65535).astype("<u2")
    return {"lo": lo, "hi": hi, "b64": base64.b64encode(q.tobytes()).decode("ascii")}


def unpack(packed: dict) -> np.ndarray:
    """The inverse of ``pack`` (for tests and tools), flat float64."""
    q = np.frombuffer(base64.b64decode(packed["b64"]), dtype="<u2").astype(np.float64)
    return packed["lo"] + q / 65535 * (packed["hi"] - packed["lo"])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def compute(model, label, ids: list[int], start: int, size: int = WINDOW, next_after: int | None = None) -> dict:
    """Everything the page draws for tokens ``ids[start:start+size]``; JSON-ready.

    ``label(id) -> str`` names a token; ``next_after`` is the token the model sampled after the
    prompt (the "actual next token" for the last position), when there is one.
    """
    c = model.config
    L, H, T = c.n_layer, c.n_head, len(ids)
    end = min(T, start + size)
    W = end - start
    win = slice(start, end)
    out = model.forward(ids, want=("embedding", "block_*_attn_head_*_weights", "block_*_mlp_hidden", "block_*_resid_out"))
    tr = out.trace

    names = [f"block_{l}_attn_head_{h}_weights" for l in range(L) for h in range(H)]
    rows, cols = np.tril_indices(W)  # row-major lower triangle: row i holds keys start..start+i
    att = np.stack([tr[n][win, win][rows, cols] for n in names])  # [L*H, W(W+1)/2]

    emb = tr["embedding"][win]  # [W, d]
    emb_max = float(np.ceil(np.abs(emb).max() * 1000) / 1000) or 1.0

    mlp_names = [f"block_{l}_mlp_hidden" for l in range(L)]
    mlp = np.stack([np.abs(tr[n][win]).mean(axis=-1) for n in mlp_names])  # [L, W]

    resid_names = ["embedding"] + [f"block_{l}_resid_out" for l in range(L)]
    resid = np.stack([tr[n][win] for n in resid_names])  # [L+1, W, d]
    norms = np.linalg.norm(resid, axis=-1)  # [L+1, W]

    # Two habits a head can have, measured over the shown queries (the first token, which can only see
    # itself, left out): the weight a token gives the token right before it, and the weight it gives the
    # prompt's very first token. The "Try this" fold points at the head strongest at each.
    q0 = max(start, 1)
    prev_share = [float(np.mean(tr[n][np.arange(q0, end), np.arange(q0, end) - 1])) if end > q0 else 0.0 for n in names]
    first_share = [float(np.mean(tr[n][q0:end, 0])) if end > q0 else 0.0 for n in names]

    probs = _softmax(model.logit_lens(resid).astype(np.float64))  # [L+1, W, V]
    top = np.argsort(-probs, axis=-1)[..., :TOP]  # [L+1, W, TOP]
    nxt = list(ids[start + 1:end + 1])
    if end == T:
        nxt.append(next_after)
    lens, seen = [], set()
    for i in range(W):
        n = nxt[i]
        per_depth = []
        for d in range(L + 1):
            per_depth.append({
                "top": [[int(t), round(float(probs[d, i, t]), 4)] for t in top[d, i]],
                "next": None if n is None else round(float(probs[d, i, n]), 4),
                "next_rank": None if n is None else int((probs[d, i] > probs[d, i, n]).sum()) + 1,
            })
            seen.update(int(t) for t in top[d, i])
        lens.append({"next": n, "depths": per_depth})
        if n is not None:
            seen.add(int(n))

    return {
        "start": start, "end": end, "n_tokens": T,
        "attention": {"names": names, "n_layer": L, "n_head": H, "size": W, "packing": "lower-triangle, row-major",
                      **pack(att, 0.0, 1.0)},
        "embedding": {"name": "embedding", "rows": W, "cols": c.d_model, **pack(emb, -emb_max, emb_max)},
        "habits": {"prev": [round(v, 4) for v in prev_share], "first": [round(v, 4) for v in first_share],
                   "queries": end - q0},
        "mlp": {"names": mlp_names, "mean_abs": np.round(mlp, 4).tolist(), "max": round(float(mlp.max()), 4)},
        "resid": {"names": resid_names, "norm": np.round(norms, 3).tolist()},
        "lens": {"depth_names": resid_names, "rows": lens},
        "labels": {str(t): label(t) for t in sorted(seen)},
    }


def cached_compute(key: str, model, label, ids: list[int], start: int, next_after: int | None) -> dict:
    return _CACHE.get_or_compute((key, start), lambda: compute(model, label, ids, start, next_after=next_after))


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


def context(page) -> dict:
    model = page.engine.model
    c = model.config
    opts = page.opts
    _check("layer", opts["layer"], c.n_layer, f"the model has {c.n_layer} layers")
    _check("head", opts["head"], c.n_head, f"the model has {c.n_head} heads per layer")
    run = page.run
    ids = list(run.prompt_ids)
    T = len(ids)
    base = {
        "wide": True,
        "cfg": c,
        "n_params": model.n_params,
        "n_tokens": T,
        "refused": bool(run.error),
        "head_dim": c.head_dim,
    }
    if opts["token"] != LAST:
        if T == 0:
            raise OptionError("“token” cannot be chosen: this scenario has no prompt tokens.")
        _check("token", opts["token"], T, f"the prompt has {T} tokens")
    if T == 0:
        return base | {"unavailable": "The request is refused before it is tokenized, so there are no token ids to run "
                                      "through the model. Fix the request on the Compose stage to see the forward pass."}
    if T > c.n_ctx:
        return base | {"unavailable": f"The prompt is {T:,} tokens long and the model's context window holds {c.n_ctx}. "
                                      "The model cannot read it at all, so the API refuses the request before the "
                                      "forward pass. Shorten the prompt or the history on the Compose stage."}
    token = T - 1 if opts["token"] == LAST else opts["token"]
    start = window_start(T, token)
    first = run.steps[0]["token"] if run.steps else None
    data = cached_compute(page.scenario.key(), model, page.engine.token_label, ids, start, first)

    e = page.engine
    lens_row = data["lens"]["rows"][token - start]
    depth_labels = ["after the embedding"] + [f"after layer {l}" for l in range(c.n_layer)]
    lens_table = [{
        "label": depth_labels[d], "name": data["lens"]["depth_names"][d], "final": d == c.n_layer,
        "top": [{"id": t, "text": data["labels"][str(t)], "p": p} for t, p in row["top"]],
        "next": row["next"], "next_rank": row["next_rank"],
    } for d, row in enumerate(lens_row["depths"])]
    nxt = lens_row["next"]
    return base | {
        "layers": range(c.n_layer),
        "heads": range(c.n_head),
        "try_heads": _try_heads(page, data, c, opts),
        "data": data,
        "tokens": [[t["id"], t["text"]] for t in run.prompt_tokens],
        "view": {"layer": opts["layer"], "head": opts["head"], "token": token, "default_token": T - 1,
                 "scale": opts["scale"], "default_scale": OPTIONS["scale"].default,
                 "specials": sorted(e.tokenizer.special_id(s) for s in e.tokenizer.specials)},
        "token": token,
        "token_text": run.prompt_tokens[token]["text"],
        "window": {"start": start, "end": data["end"], "size": data["end"] - start, "windowed": T > WINDOW},
        "lens_table": lens_table,
        "lens_next": None if nxt is None else {"id": nxt, "text": e.token_label(nxt), "sampled": token == T - 1},
        "attn_name": f"block_{opts['layer']}_attn_head_{opts['head']}_weights",
    }
