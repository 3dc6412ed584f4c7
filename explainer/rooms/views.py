"""Classroom pages: start a room, the presenter's screen, joining by code, the student's screen."""
from __future__ import annotations

from urllib.parse import quote, urlencode

import segno
from django.conf import settings
from django.http import HttpResponseRedirect
from django.http.request import split_domain_port
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from explainer import network
from explainer.lifecycle.scenario import ScenarioError
from explainer.llm.catalog import BUNDLED_NAME
from explainer.rooms import rooms
from explainer.stages.examples import examples
from explainer.stages.registry import built
from explainer.web.pages import bundled_info
from explainer.web.runner import is_local_model

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def _client(request) -> str:
    return request.META.get("REMOTE_ADDR") or "?"


def public_base(request) -> str:
    """The address students use. A presenter browsing at localhost would otherwise hand the
    class a link that points at each student's own phone."""
    if settings.EXPLAINER_PUBLIC_URL:
        return settings.EXPLAINER_PUBLIC_URL
    host = request.get_host()
    name, port = split_domain_port(host)
    if name in LOOPBACK and not settings.EXPLAINER_LOCAL_ONLY and (lan := network.lan_address()):
        return f"{request.scheme}://{lan}{':' + port if port else ''}"
    return f"{request.scheme}://{host}"


def _page(request, template: str, ctx: dict, status: int = 200):
    return render(request, template, {"bundled": bundled_info(), **ctx}, status=status)


def _serving(room) -> dict:
    """What the footer and the live run name: the model of the stage the room shows as the page loads (the
    bundled one, or a local model); live.js follows the model of each run after that. A local model is
    named, never opened here: this runs on the one thread Django gives every synchronous view, and
    opening a folder takes seconds (runs open it in the local models' own workers)."""
    try:
        model = rooms.scenario_of(room.state).model
    except ScenarioError:
        model = None
    info = {"name": model, "is_bundled": False} if is_local_model(model) else bundled_info()
    return {"bundled": info, "bundled_name": BUNDLED_NAME}


def _stages() -> list[dict]:
    """The stages in the one order the pages use, numbered as the pages number them (Overview unnumbered)."""
    return [{"slug": s.slug, "title": s.title, "number": s.number, "label": f"{s.number}. {s.title}" if s.number else s.title}
            for s in built()]


@require_GET
def landing(request):
    return _page(request, "rooms/landing.html", {"room_hours": settings.EXPLAINER_ROOM_TTL_HOURS})


@require_POST
def create(request):
    room, secret = rooms.create_room()
    resp = HttpResponseRedirect(reverse("room-present", args=[room.code]) + "#k=" + secret, status=303)
    rooms.give_pass(resp, room.code, _secure(request))
    return resp


def _secure(request) -> bool:
    return request.is_secure() or settings.CSRF_COOKIE_SECURE  # behind a TLS proxy, cookies are Secure too


def _missing(request, code: str, status: int = 404):
    return _page(request, "rooms/join.html", {
        "error": "There is no live room with this code. It may have ended; check the code with your presenter.",
        "code": code[:12]}, status=status)


def _limited(request, ticket):
    error = ("Too many wrong room codes have been tried on this server lately. Wait a minute and try again."
             if ticket.limited_by == "total" else "Too many wrong codes from this device. Wait a minute and try again.")
    resp = _page(request, "rooms/join.html", {"error": error}, status=429)
    resp["Retry-After"] = str(ticket.retry_after)
    return resp


def _find(request, norm: str | None, token: str | None = None):
    """(the live room for a normalized code, None) or (None, the 429 page): only a browser without this
    room's pass or its join link's ``token`` is limited, and its lookups that find nothing are counted
    (``rooms.reserve_lookup``)."""
    ticket = rooms.reserve_lookup(norm, _client(request), request.COOKIES, token)
    if not ticket.allowed:
        return None, _limited(request, ticket)
    return rooms.look_up(norm, ticket), None


@require_GET
def present(request, code: str):
    room, refused = _find(request, rooms.normalize_code(code))
    if refused:
        return refused
    if room is None:
        return _missing(request, code)
    base = public_base(request)
    # the join link carries the code's signature: a phone that scans it is never limited by others' wrong codes
    join_url = f"{base}{reverse('room-student', args=[room.code])}?j={rooms.join_token(room.code)}"
    qr = segno.make(join_url, error="m")
    resp = _page(request, "rooms/present.html", {
        "room": room, "join_url": join_url, "join_short": f"{base}{reverse('room-join')}",
        # what a student types into a phone's address bar: the address without its scheme, which browsers add
        "join_short_display": f"{base}{reverse('room-join')}".split("://", 1)[-1],
        # A viewBox and no fixed size: CSS scales the code to its box, never clipping it; a quiet zone
        # of 4 modules, as the QR standard asks, so phone cameras find its edge.
        "qr_svg": mark_safe(qr.svg_inline(scale=5, border=4, dark="#000", light="#fff", omitsize=True,
                                          title=f"QR code for {join_url}")),
        "stages": _stages(), "examples": examples(), "local_only": settings.EXPLAINER_LOCAL_ONLY and base.split("//")[1].split(":")[0] in LOOPBACK,
        **_serving(room),
    })
    rooms.give_pass(resp, room.code, _secure(request))
    return resp


@require_GET
def join(request):
    raw = request.GET.get("code")
    if raw is None:
        return _page(request, "rooms/join.html", {})
    norm = rooms.normalize_code(raw)
    if norm is None:
        return _page(request, "rooms/join.html", {
            "error": f"A room code is {rooms.CODE_LENGTH} letters and digits, like “K7QM3P”.", "code": raw[:12]}, status=400)
    room, refused = _find(request, norm)
    if refused:
        return refused
    if room is None:
        return _missing(request, raw)
    # An optional nickname: checked here to say at once what is wrong with it, and again by the room's
    # socket, which is what keeps it (this page never stores it). It travels on in the fragment.
    raw_nick = request.GET.get("nickname", "")
    try:
        nick = rooms.clean_nickname(raw_nick)
    except rooms.NicknameError as exc:
        resp = _page(request, "rooms/join.html", {"error": str(exc), "error_field": "nickname", "code": raw[:12],
                                                  "nickname": raw_nick[:40]}, status=400)
    else:
        target = reverse("room-student", args=[norm])
        resp = HttpResponseRedirect(target + ("#" + urlencode({"nick": nick}, quote_via=quote) if nick else ""))
    rooms.give_pass(resp, room.code, _secure(request))  # the code was right: asking again is not a guess
    return resp


@require_GET
def student(request, code: str):
    room, refused = _find(request, rooms.normalize_code(code), request.GET.get("j"))
    if refused:
        return refused
    if room is None:
        return _missing(request, code)
    resp = _page(request, "rooms/student.html", {"room": room, "stages": _stages(), **_serving(room)})
    rooms.give_pass(resp, room.code, _secure(request))  # so the socket, and a reload, are never refused for others' codes
    return resp
