"""Page helpers every web app's views share: the error page, the bundled model's facts that pages
print, and the framing rule for embeddable pages."""
from __future__ import annotations

import logging

from django.shortcuts import render

from explainer.web.runner import get_engine

log = logging.getLogger(__name__)
MAX_QUERY_CHARS = 8000  # a longer query string (a hostile link) is refused before it is read


def bundled_info(engine=None) -> dict | None:
    """Facts pages print about the model serving them: the bundled one, or ``engine``'s local model."""
    try:
        engine = engine or get_engine()
        m = engine.model
    except Exception:  # error pages must render even if the model cannot load
        log.exception("model unavailable")
        return None
    return {"name": engine.name, "parameters": m.n_params, "context_window": m.config.n_ctx,
            "layers": m.config.n_layer, "heads": m.config.n_head, "d_model": m.config.d_model,
            "is_bundled": engine.loaded.bundled, "limits": engine.loaded.limits, "card": engine.loaded.card}


def error_page(request, status: int, title: str, message: str, back: str = "/", embed: bool = False):
    ctx = {"title": title, "message": message, "back": back, "bundled": bundled_info(), "embed": embed}
    return frameable(render(request, "error.html", ctx, status=status), embed)


def frameable(response, embed: bool):
    """An embedded page may be framed by any site (course pages, slides); every other page stays
    SAMEORIGIN (settings.X_FRAME_OPTIONS), so only embed responses are exempted, one by one."""
    if embed:
        response.xframe_options_exempt = True
        # What django-csp's @csp_replace sets: the site's policy, with only frame-ancestors widened.
        response._csp_replace = {"frame-ancestors": ["*"]}
    return response
