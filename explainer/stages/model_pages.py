"""The models' pages: ``/models/`` lists what this server can serve, ``/models/<name>/`` is one model's card,
generated from its config and files, with its memory and its speed measured here.

Both read untrusted folders (the card opens its model and runs it), so they run in the local models'
workers, under the request's deadline, never where the bundled model's pages run (``runner.model_view``)."""
from __future__ import annotations

import time

from django.http import Http404
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from explainer.lifecycle.engine import Engine
from explainer.lifecycle.scenario import Scenario
from explainer.llm.catalog import BUNDLED_NAME
from explainer.llm.interface import ModelLoadError
from explainer.stages.runs import codec, stamp
from explainer.web.pages import bundled_info, error_page
from explainer.web.runner import LOCAL_MODELS, catalog, engine_for, get_engine, model_view, refused_page

_SPEED: dict[tuple[str, str], dict] = {}  # (name, fingerprint) -> measured once per process


def measure(engine: Engine, prompt_tokens: int = 64, decode_tokens: int = 16) -> dict:
    """Prefill and decode speed of ``engine``'s model on this machine, measured once and kept."""
    key = (engine.name, engine.loaded.fingerprint)
    if key not in _SPEED:
        m, tok = engine.model, engine.tokenizer
        text = "The request travels through the gateway, the tokenizer and the model before a reply streams back. " * 8
        ids = tok.encode(text)[:prompt_tokens]
        m.forward(ids[:8])  # warm up: the first pass pays for allocations the later ones reuse
        t0 = time.perf_counter()
        out = m.forward(ids)
        t1 = time.perf_counter()
        nxt = int(out.logits[-1].argmax())
        for _ in range(decode_tokens):
            nxt = int(m.forward([nxt], cache=out.cache).logits[-1].argmax())
        t2 = time.perf_counter()
        _SPEED[key] = {"prefill_tokens": len(ids), "prefill_ms": round((t1 - t0) * 1000, 1),
                       "prefill_tps": round(len(ids) / (t1 - t0)), "decode_tps": round(decode_tokens / (t2 - t1), 1)}
    return _SPEED[key]


def _kv_bytes_per_token(engine: Engine) -> int:
    c = engine.model.config
    kv_heads = getattr(c, "n_kv_head", c.n_head)
    return 2 * c.n_layer * kv_heads * c.head_dim * 4


@model_view(lambda request: LOCAL_MODELS, refused_page)  # reads every folder's config
@require_GET
def models_index(request):
    rows = [{"name": BUNDLED_NAME, "summary": f"bundled · {get_engine().model.n_params / 1e6:.1f}M parameters · answers every Claude name", "ok": True}]
    rows += [{"name": e.name, "summary": e.summary, "ok": e.ok} for e in catalog().entries()]
    return render(request, "stages/models.html", {"rows": rows, "models_dir": catalog().root, "bundled": None})


@model_view(lambda request, name: name, refused_page)
@require_GET
def model_card(request, name: str):
    if name != BUNDLED_NAME and not catalog().has(name):
        raise Http404
    try:
        engine = engine_for(name) if name != BUNDLED_NAME else get_engine()
    except ModelLoadError as exc:
        return error_page(request, 400, "This model cannot be opened", str(exc), back=reverse("models"))
    card = dict(engine.loaded.card)
    kv = _kv_bytes_per_token(engine)
    scenario = stamp(Scenario(model=name)) if name != BUNDLED_NAME else Scenario()
    blob = codec().encode(scenario)
    ctx = {
        "name": name, "loaded": engine.loaded, "card": card, "speed": measure(engine),
        "memory_mb": round(card.get("memory_bytes", engine.model.n_params * 4) / 2**20, 1),
        "kv_mb_per_1k": round(kv * 1000 / 2**20, 1), "kv_mb_window": round(kv * engine.model.config.n_ctx / 2**20, 1),
        "compose_url": reverse("stage", args=["compose"]) + (f"?s={blob}" if blob else ""),
        "overview_url": reverse("stage", args=["overview"]) + (f"?s={blob}" if blob else ""),
        "bundled": bundled_info(engine),
    }
    return render(request, "stages/model_card.html", ctx)
