"""What a view's uncaught failure becomes, for every web app (settings.MIDDLEWARE).

- The database is busy or unreachable (SQLite locked by another process past the busy
  timeout, PostgreSQL down or restarting: Django's ``OperationalError`` and ``InterfaceError``):
  a 503 with ``Retry-After``, since trying again soon will work; never a 500. Pages get the
  error page, the JSON endpoints their own JSON error, the API its error envelope.
- Anything else on a JSON endpoint (``/learn/<slug>/data``, ``/scenario/encode``, the
  tutorial's check and lessons): a JSON 500, so a script reading it gets JSON, never the HTML
  error page; and an error its view did not write itself (a 405) is JSON too. Pages keep
  Django's own 500 handling (``handler500``), which logs and shows the error page.

The API's views envelope their own failures (``explainer.api.views.api_view``); its branch here
only covers what escapes them.
"""
from __future__ import annotations

import logging
import re

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.utils.deprecation import MiddlewareMixin

from explainer.web.pages import error_page

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
UNAVAILABLE = "The database is busy or cannot be reached right now; try again in a few seconds."
_JSON_PATH = re.compile(r"/(learn/[^/]+/data|scenario/encode|tutorial/check/|tutorial/lessons\.json)")


def database_unavailable(exc: BaseException) -> bool:
    """A failure of the database itself, which retrying later can cure (not a bug in a query)."""
    return isinstance(exc, (OperationalError, InterfaceError))


def _json_error(request, status: int, kind: str, message: str) -> JsonResponse | None:
    """The error in the shape the endpoint at ``request.path`` answers its own errors in; None for a page."""
    path = request.path
    if path.startswith("/v1/"):  # the API's envelope (explainer.lifecycle.errors)
        body = {"type": "error", "error": {"type": kind, "message": message}}
        if rid := getattr(request, "request_id", None):
            body["request_id"] = rid
        return JsonResponse(body, status=status)
    if not _JSON_PATH.match(path):
        return None
    if path.startswith("/learn/"):  # as explainer.stages.views.stage_data answers a refused link
        return JsonResponse({"error": {"type": kind, "message": message}}, status=status)
    return JsonResponse({"error": message}, status=status)  # /scenario/encode and the tutorial read a sentence


class FailureMiddleware(MiddlewareMixin):
    def process_exception(self, request, exception):
        if database_unavailable(exception):
            log.warning("%s %s: the database is unavailable (%s)", request.method, request.path[:200], exception)
            resp = _json_error(request, 503, "api_error", UNAVAILABLE)
            if resp is None:
                resp = error_page(request, 503, "Busy: try again in a few seconds", UNAVAILABLE)
            resp["Retry-After"] = str(RETRY_AFTER_S)
            resp["Cache-Control"] = "no-store"
            return resp
        if settings.DEBUG:
            return None  # Django's debug page
        resp = _json_error(request, 500, "api_error", "The server hit an error. It has been logged; try again.")
        if resp is not None:
            log.error("%s %s failed", request.method, request.path[:200], exc_info=exception)
        return resp

    def process_response(self, request, response):
        """An error a JSON endpoint's view did not write itself (a 405 from ``require_GET``, an empty
        body) is put in the endpoint's JSON too."""
        status = response.status_code
        if status < 400 or response.get("Content-Type", "").startswith("application/json"):
            return response
        if status == 405:
            message = f"{request.method[:20]} is not allowed here; use {response.get('Allow', 'GET')}."
        elif status == 404:
            message = "There is nothing at this address."
        else:
            message = "This request cannot be answered."
        resp = _json_error(request, status, "invalid_request_error" if status < 500 else "api_error", message)
        if resp is None:
            return response
        for name in ("Allow", "Retry-After", "Cache-Control"):
            if name in response:
                resp[name] = response[name]
        return resp
