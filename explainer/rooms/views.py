"""Classroom pages: start a room, the presenter's screen, joining by code, the student's screen."""
from __future__ import annotations

import socket
from dataclasses import dataclass
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
from explainer.rooms.session import COUNTDOWNS
from explainer.stages.examples import examples
from explainer.stages.registry import built
from explainer.web.pages import bundled_info
from explainer.web.runner import is_local_model

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def _client(request) -> str:
    return request.META.get("REMOTE_ADDR") or "?"


PROBE_TIMEOUT_S = 0.5


def listens_on(addr: str, port: int) -> bool:
    """Whether this server answers at ``addr``:``port``. A server bound to 127.0.0.1 refuses a connection
    to the machine's network address even from the machine itself, as it refuses every phone."""
    try:
        socket.create_connection((addr, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Unreachable:
    """Why phones cannot join (``why``), and what the presenter can do about it (``fix``)."""
    why: str
    fix: str


def join_base(request) -> tuple[str, Unreachable | None]:
    """The address students use, and why no phone can reach it (None: they can). A presenter browsing at
    localhost would otherwise hand the class a link that points at each student's own phone, or at the
    network address of a server that only listens on 127.0.0.1 (``daphne -b 127.0.0.1``, EXPLAINER_LOCAL_ONLY):
    then the lobby says so, and how to fix it, instead of showing an address nobody can reach."""
    if settings.EXPLAINER_PUBLIC_URL:  # set by whoever runs the server (a proxy, a name on the network): trusted
        return settings.EXPLAINER_PUBLIC_URL, None
    host = request.get_host()
    here = f"{request.scheme}://{host}"
    name, port = split_domain_port(host)
    if name not in LOOPBACK:  # the presenter reached this server by a name or address of the network
        return here, None
    if settings.EXPLAINER_LOCAL_ONLY:
        return here, Unreachable(
            "This server listens on this computer only (EXPLAINER_LOCAL_ONLY is set), so phones cannot reach it.",
            "Stop it (Ctrl-C) and start it again without EXPLAINER_LOCAL_ONLY: scripts/run.sh then listens on your network.")
    lan = network.lan_address()
    if not lan:
        return here, Unreachable(
            "This computer is not on a network, so phones cannot reach it.",
            "Connect it to the Wi-Fi (or network) the phones use.")
    if not listens_on(lan, int(port or (443 if request.is_secure() else 80))):  # no port in Host: the scheme's
        return here, Unreachable(
            f"This server listens on 127.0.0.1 only, so phones cannot reach it at {lan}.",
            "Stop it (Ctrl-C) and start it again listening on your network: scripts/run.sh (without HOST=127.0.0.1), "
            "or daphne -b 0.0.0.0.")
    return f"{request.scheme}://{lan}{':' + port if port else ''}", None


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
    base, unreachable = join_base(request)
    # the join link carries the code's signature: a phone that scans it is never limited by others' wrong codes
    join_url = f"{base}{reverse('room-student', args=[room.code])}?j={rooms.join_token(room.code)}"
    resp = _page(request, "rooms/present.html", {
        "room": room, "join_url": join_url, "join_short": f"{base}{reverse('room-join')}",
        # what a student types into a phone's address bar: the address without its scheme, which browsers add
        "join_short_display": f"{base}{reverse('room-join')}".split("://", 1)[-1],
        # A viewBox and no fixed size: CSS scales the code to its box, never clipping it; a quiet zone
        # of 4 modules, as the QR standard asks, so phone cameras find its edge.
        # None when phones cannot reach this server: a code for an address only this computer answers helps nobody.
        "qr_svg": None if unreachable else mark_safe(segno.make(join_url, error="m").svg_inline(
            scale=5, border=4, dark="#000", light="#fff", omitsize=True, title=f"QR code for {join_url}")),
        "stages": _stages(), "examples": examples(), "unreachable": unreachable, "countdowns": COUNTDOWNS[1:],
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
    resp = _page(request, "rooms/student.html", {"room": room, "stages": _stages(), "ask_max_chars": rooms.MAX_QUESTION_CHARS,
                                                 **_serving(room)})
    rooms.give_pass(resp, room.code, _secure(request))  # so the socket, and a reload, are never refused for others' codes
    return resp
