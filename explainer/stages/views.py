from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET

from explainer.lifecycle.engine import BUNDLED_MODEL_NAME
from explainer.llm.model import load_model
from explainer.stages.registry import BY_SLUG, REQUEST_STEPS, STAGES

MODEL_NAMES = ("claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-5-5")
DEFAULT_PROMPT = "How does Apache Airflow schedule DAGs in production?"


@require_GET
def overview(request):
    model = load_model()
    return render(request, "stages/overview.html", {
        "stages": STAGES,
        "pipeline": [BY_SLUG[s] for s in REQUEST_STEPS if s != "recap"],
        "model_names": MODEL_NAMES,
        "default_prompt": DEFAULT_PROMPT,
        "bundled": {"name": BUNDLED_MODEL_NAME, "parameters": model.n_params, "context_window": model.config.n_ctx,
                    "layers": model.config.n_layer, "heads": model.config.n_head, "d_model": model.config.d_model},
    })


def _error(request, status: int, title: str, message: str):
    return render(request, "error.html", {"title": title, "message": message}, status=status)


def bad_request(request, exception=None):
    return _error(request, 400, "Bad request", "This address could not be understood.")


def not_found(request, exception=None):
    return _error(request, 404, "Page not found", "There is no page at this address.")


def server_error(request):
    return _error(request, 500, "Something went wrong", "The server hit an error. It has been logged; try again.")
