"""The inspector's pages, its data and its proxy endpoints.

``/inspect/`` starts a session; ``/inspect/<id>/`` explains the calls made through it and
``/inspect/<id>/data`` is the same as JSON; ``/inspect/<id>/v1/…`` is the recording proxy
(``explainer/inspect/proxy.py``), whose every failure is the API's error envelope.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from explainer.inspect import analysis, importing, live, proxy, replay, walk
from explainer.inspect.analysis import analyse
from explainer.inspect.models import Call, Session
from explainer.inspect.record import KEY_HEADERS
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.figures import tokenized_figures
from explainer.lifecycle.pricing import usd
from explainer.stages.runs import engine
from explainer.web.pages import bundled_info, error_page

log = logging.getLogger(__name__)
MAX_CALLS_SHOWN = 500  # a session's page and data read its first calls; a longer session says so


def base_url(request: HttpRequest, session_id: str) -> str:
    public = getattr(settings, "EXPLAINER_PUBLIC_URL", "")
    return (public or request.build_absolute_uri("/").rstrip("/")) + f"/inspect/{session_id}"


def _live(session_id: str) -> Session | None:
    return Session.objects.filter(id=session_id[:32], expires_at__gt=timezone.now()).first()


def _error(request: HttpRequest, status: int, title: str, message: str, back: str) -> HttpResponse:
    page: HttpResponse = error_page(request, status, title, message, back=back)  # the site's error page (web/pages.py)
    return page


def _gone(request: HttpRequest) -> HttpResponse:
    return _error(request, 404, "No such inspector session",
                      "This session does not exist, has expired, or was deleted. Start a new one from the inspector's page.",
                      back=reverse("inspect"))


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "inspect/index.html", {"ttl_hours": settings.EXPLAINER_INSPECT_TTL_HOURS, "upstream": proxy.upstream()})


@require_POST
def new(request: HttpRequest) -> HttpResponse:
    Session.objects.filter(expires_at__lte=timezone.now()).delete()  # expired sessions go when a new one comes
    session = Session.objects.create()
    return HttpResponseRedirect(reverse("inspect-session", args=[session.id]))


def _recorded(session: Session) -> tuple[list[Call], dict[str, Any]]:
    """The session's first calls and their analysis: what its page, its data and each call's page all read."""
    calls = list(Call.objects.filter(session=session)[:MAX_CALLS_SHOWN])
    records = [{"index": n, "path": c.path, "status": c.status, "started_at": c.started_at.timestamp(),
                "request": c.request, "response": c.response, "timings_ms": c.timings} for n, c in enumerate(calls, 1)]
    result = analyse(records)  # type: ignore[arg-type]
    rows = []
    for n, (c, a) in enumerate(zip(calls, result["calls"]), 1):
        usage = c.response.get("usage") if isinstance(c.response, dict) and isinstance(c.response.get("usage"), dict) else None
        rows.append({
            "index": n, "path": c.path, "query": c.query, "method": c.method, "status": c.status, "model": c.model,
            "stream": c.stream, "started_at": c.started_at.isoformat(), "request_id": c.request_id,
            "stop_reason": c.response.get("stop_reason") if isinstance(c.response, dict) else None,
            "usage": usage, "cost_usd": a["cost_usd"], "cumulative_usd": a["cumulative_usd"],
            "most_expensive": a.get("most_expensive", False), "timings_ms": c.timings, "ratelimit": c.ratelimit,
            "context": a["context"], "cache": {k: a["cache"][k] for k in ("outcome", "reason", "first_difference")},
            "cache_around": a["cache"].get("around"), "findings": a["findings"], "notes": c.notes,
        })
    return calls, {"session": session.id, "expires_at": session.expires_at.isoformat(), "total_usd": result["total_usd"],
                   "calls": rows, "complete": len(calls) < MAX_CALLS_SHOWN}


def session_data(session: Session) -> dict[str, Any]:
    """``/inspect/<id>/data``: every call in call order, with the analysis's findings."""
    return _recorded(session)[1]


def _shown(row: dict[str, Any], most: int) -> dict[str, Any]:
    """A call's row with what both pages show of it: its cost as text, its context bar, the first difference split."""
    row["cost_text"] = usd(row["cost_usd"]) if row["cost_usd"] is not None else "–"
    row["cumulative_text"] = usd(row["cumulative_usd"])
    ctx = row["context"]
    if ctx and ctx["input_tokens"]:
        row["bars"] = [{"part": k.replace("_", " "), "key": k, "tokens": ctx[k], "share": round(100 * ctx[k] / ctx["input_tokens"], 2)}
                       for k in ("tools", "system", "history", "new_turn") if ctx[k]]
    around = row["cache_around"]
    if around:  # the two texts split where they first differ, so the page can mark the rest
        at = around["at"]
        row["diff"] = {"before": (around["before"][:at], around["before"][at:]), "after": (around["after"][:at], around["after"][at:])}
    row["width"] = round(100 * ctx["input_tokens"] / most, 2) if ctx and most else 0
    return row


def _most_input(rows: list[dict[str, Any]]) -> int:
    return max((r["context"]["input_tokens"] for r in rows if r["context"]), default=0)


@cache_control(no_store=True)  # someone's own calls: no browser cache or proxy keeps them
@require_GET
def session_page(request: HttpRequest, session_id: str) -> HttpResponse:
    session = _live(session_id)
    if session is None:
        return _gone(request)
    data = session_data(session)
    most = _most_input(data["calls"])
    for row in data["calls"]:
        _shown(row, most)
        row["url"] = reverse("inspect-call", args=[session.id, row["index"]])
    return render(request, "inspect/session.html", {
        "session": session, "data": data, "base_url": base_url(request, session.id), "total_text": usd(data["total_usd"]),
        "calls": data["calls"], "upstream": proxy.upstream(), "socket_path": f"/ws/inspect/{session.id}/",
    })


def _count(text: str) -> int:
    """Tokens of ``text`` by the bundled model's tokenizer (its own merges)."""
    return tokenized_figures(engine().tokenizer, text).tokens


def call_view(session: Session, n: int) -> dict[str, Any] | None:
    """Call ``n`` of the session (1-based), stage by stage: ``/inspect/<id>/call/<n>/`` and its ``data``. None: no such call."""
    calls, data = _recorded(session)
    if not 1 <= n <= len(calls):
        return None
    c, row = calls[n - 1], _shown(data["calls"][n - 1], _most_input(data["calls"]))
    body = c.request if isinstance(c.request, dict) else {}
    usage = analysis.clean_usage(row["usage"])  # the counts as the analysis read them; the page's table shows the same
    previous = next(((k + 1, p.request) for k in range(n - 2, -1, -1) for p in [calls[k]]
                     if p.path == analysis.MESSAGES_PATH and p.status == 200 and isinstance(p.request, dict)), None)
    text, size, cut = walk.body_text(c.request)
    is_messages = c.path == analysis.MESSAGES_PATH
    return {
        "call": row, "of": len(calls), "session_id": session.id,
        "compose": {"headers": walk.headers_sent(c.method, c.path, c.query, c.request_headers), "body": text, "bytes": size, "cut": cut,
                    "shown_chars": walk.MAX_SHOWN_CHARS, "key_header": next((k for k in KEY_HEADERS if k in c.request_headers), "")},
        "gateway": {"status": c.status, "request_id": c.request_id, "rate_limits": walk.rate_limits(c.ratelimit),
                    "other_headers": walk.other_headers(c.ratelimit),
                    "error": c.response.get("error") if isinstance(c.response, dict) and c.response.get("type") == "error" else None},
        "conversation": walk.history(body, previous) if is_messages else None,
        "caching": walk.caching(body, usage, str(body.get("model") or c.model)) if is_messages and c.status == 200 else None,
        "tools": {"defined": walk.tool_names(body), "loop": walk.tool_loop(body, c.response)} if is_messages else None,
        "streaming": {"events": walk.stream_events(c.events), "count": len(c.events)} if c.stream else None,
        "tokens": walk.token_rows(body, c.response, usage, _count) if is_messages and body else None,
        "replay": replay.links(c.request, (session.id, n)) if is_messages else {"links": [], "notes": []},
    }


def _call_of(session_id: str, n: str) -> tuple[Session | None, dict[str, Any] | None]:
    session = _live(session_id)
    if session is None or not n.isdigit() or len(n) > 6:
        return session, None
    return session, call_view(session, int(n))


@cache_control(no_store=True)
@require_GET
def call_page(request: HttpRequest, session_id: str, n: str) -> HttpResponse:
    session, view = _call_of(session_id, n)
    if session is None:
        return _gone(request)
    if view is None:
        more = f" (its pages read its first {MAX_CALLS_SHOWN} calls)" if n.isdigit() and len(n) < 7 and int(n) > MAX_CALLS_SHOWN else ""
        return _error(request, 404, "No such call", f"This session has no call {n[:12]}{more}.", back=reverse("inspect-session", args=[session.id]))
    k = view["call"]["index"]
    return render(request, "inspect/call.html", {
        **view, "session": session, "upstream": proxy.upstream(), "bundled": bundled_info(),
        "prev_url": reverse("inspect-call", args=[session.id, k - 1]) if k > 1 else None,
        "next_url": reverse("inspect-call", args=[session.id, k + 1]) if k < view["of"] else None,
        "session_url": reverse("inspect-session", args=[session.id]) + f"#call-{k}",
        "data_url": reverse("inspect-call-data", args=[session.id, k]),
        "stage_url": {slug: reverse("stage", args=[slug]) for slug in ("compose", "gateway", "conversation", "caching", "tools", "streaming", "tokenize")},
    })


@cache_control(no_store=True)
@require_GET
def call_data(request: HttpRequest, session_id: str, n: str) -> HttpResponse:
    """``/inspect/<id>/call/<n>/data``: what the call's page shows, as JSON (the page's figures, for scripts and tests)."""
    session, view = _call_of(session_id, n)
    if view is None:
        what = "No such inspector session: it does not exist, has expired, or was deleted." if session is None else f"This session has no call {n[:12]}."
        return JsonResponse(APIError("not_found_error", what).body(), status=404)
    for key in ("cost_text", "cumulative_text", "bars", "diff", "width"):
        view["call"].pop(key, None)
    return JsonResponse(view, json_dumps_params={"ensure_ascii": False})


@cache_control(no_store=True)
@require_GET
def data(request: HttpRequest, session_id: str) -> HttpResponse:
    session = _live(session_id)
    if session is None:
        return JsonResponse(APIError("not_found_error", "No such inspector session: it does not exist, has expired, or was deleted.").body(),
                            status=404)
    if "count" in request.GET:  # what the page's poll asks: has a call arrived since it was drawn?
        return JsonResponse({"count": Call.objects.filter(session=session).count()})
    return JsonResponse(session_data(session), json_dumps_params={"ensure_ascii": False})


MAX_IMPORT_BYTES = 16 * 1024 * 1024  # a file dropped on the page; a raw body is held to Django's DATA_UPLOAD_MAX_MEMORY_SIZE


@csrf_exempt  # the session's id is the capability; scripts post the file as the body
@require_POST
def import_calls(request: HttpRequest, session_id: str) -> HttpResponse:
    """``POST /inspect/<id>/import``: a JSON Lines or HAR file, as a form's ``file`` or as the body; all of it or nothing."""
    session = _live(session_id)
    wants_json = "file" not in request.FILES if request.method == "POST" else True
    if session is None:
        return _import_answer(request, wants_json, None, "No such inspector session: it does not exist, has expired, or was deleted.", 404)
    try:
        upload = request.FILES.get("file")
        if upload is not None and (upload.size or 0) > MAX_IMPORT_BYTES:
            raise importing.ImportRefused(f"The file takes {upload.size:,} bytes; at most {MAX_IMPORT_BYTES:,} are read.")
        raw = upload.read() if upload is not None else request.body
        calls = importing.parse(raw.decode("utf-8", "replace"))
    except RequestDataTooBig:
        return _import_answer(request, wants_json, session, "The file is larger than a request body may be here; drop it on the "
                              "session's page instead.", 413)
    except importing.ImportRefused as exc:
        return _import_answer(request, wants_json, session, str(exc), 400)
    now = timezone.now()
    with transaction.atomic():
        Call.objects.bulk_create([Call(
            session=session, started_at=datetime.fromtimestamp(c["started_at"], UTC) if c["started_at"] is not None else now + timedelta(microseconds=n),
            method=c["method"], path=c["path"], query=c["query"], status=c["status"], model=c["model"], stream=c["stream"],
            request_headers=c["headers"], request=c["request"], response=c["response"], events=c["events"], request_id=c["request_id"], ratelimit=c["ratelimit"],
            timings=c["timings"], notes=c["notes"]) for n, c in enumerate(calls)])
    async_to_sync(live.announce)(session.id, len(calls))
    if wants_json:
        return JsonResponse({"imported": len(calls)})
    return HttpResponseRedirect(reverse("inspect-session", args=[session.id]) + "#calls")


def _import_answer(request: HttpRequest, wants_json: bool, session: Session | None, message: str, status: int) -> HttpResponse:
    if wants_json:
        kind = "not_found_error" if status == 404 else "request_too_large" if status == 413 else "invalid_request_error"
        return JsonResponse(APIError(kind, message, status=status).body(), status=status)
    if session is None:
        return _gone(request)
    return _error(request, status, "The file was not imported", message + " Nothing of it was imported.",
                      back=reverse("inspect-session", args=[session.id]))


@require_POST
def delete(request: HttpRequest, session_id: str) -> HttpResponse:
    Session.objects.filter(id=session_id[:32]).delete()
    proxy.forget_session(session_id)
    async_to_sync(live.announce_deleted)(session_id[:32])  # its open pages say so at once
    return HttpResponseRedirect(reverse("inspect"))


def _as_django(out: proxy.Outgoing) -> HttpResponse | StreamingHttpResponse:
    if out.chunks is not None:
        resp: HttpResponse | StreamingHttpResponse = StreamingHttpResponse(out.chunks, status=out.status, content_type=out.content_type)
    else:
        resp = HttpResponse(out.body, status=out.status, content_type=out.content_type)
    for k, v in out.headers.items():
        resp[k] = v
    return resp


def proxy_view(api_path: str) -> Callable[..., Coroutine[Any, Any, HttpResponseBase]]:
    """The recording proxy through Django's request cycle (its test client, a server other than explainer.asgi's);
    under Daphne, ``proxy.asgi_app`` serves these paths with the same core, ahead of Django."""
    @csrf_exempt
    async def view(request: HttpRequest, session_id: str, rest: str | None = None) -> HttpResponseBase:
        try:
            body = request.body if request.method == "POST" else b""
        except RequestDataTooBig:
            return _as_django(proxy.error(proxy.too_large()))
        headers = {k.lower(): v for k, v in request.headers.items()}
        call = proxy.Incoming(request.method or "POST", api_path if rest is None else "/v1/" + rest, request.META.get("QUERY_STRING", ""), headers, body)
        del headers
        return _as_django(await proxy.handle(session_id, call))
    return view


messages = proxy_view("/v1/messages")
count_tokens = proxy_view("/v1/messages/count_tokens")
models = proxy_view("/v1/models")
not_found = proxy_view("")
