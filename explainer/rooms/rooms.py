"""Rooms: creating them, finding them by code, checking the presenter's secret, and what a
presenter may put on every student's screen.

Codes are six characters from an alphabet without look-alikes (0/O, 1/I/L): about 887
million codes, and failed lookups are limited per address and in all, so live rooms cannot be
found by trying codes in bulk; a browser that found its room holds a pass, so nobody else's
wrong codes lock it out. The presenter's secret is 256 random bits, stored as a SHA-256 hash.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

from django.conf import settings
from django.core import signing
from django.http import parse_cookie
from django.utils import timezone

from explainer.lifecycle.gateway import FailureLimiter, Ticket
from explainer.lifecycle.scenario import ScenarioError
from explainer.llm.blocklist import find_blocked
from explainer.rooms.asking import MAX_QUESTION_CHARS
from explainer.rooms.models import Room
from explainer.stages.registry import BY_SLUG
from explainer.stages.runs import codec

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
MAX_HREF_CHARS = 8000
_HREF = re.compile(r"^/learn/([a-z]{1,40})/$")


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(raw: str) -> str | None:
    """What a student typed ("abc-234", " ABC 234 ") as a code, or None if it cannot be one."""
    if not isinstance(raw, str) or len(raw) > 32:
        return None
    code = re.sub(r"[\s\-]", "", raw).upper()
    if len(code) != CODE_LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def ttl() -> timedelta:
    return timedelta(hours=settings.EXPLAINER_ROOM_TTL_HOURS)


def create_room() -> tuple[Room, str]:
    """A new room and its presenter secret (shown once, in the presenter's link)."""
    now = timezone.now()
    Room.objects.filter(expires_at__lt=now).delete()
    secret = secrets.token_urlsafe(32)
    for _ in range(20):
        code = new_code()
        if not Room.objects.filter(code=code).exists():
            break
    else:  # 20 collisions in a row: the table is absurdly full
        raise RuntimeError("no free room code")
    room = Room.objects.create(code=code, secret_hash=hash_secret(secret), expires_at=now + ttl(),
                               state={"slug": "overview", "href": "/learn/overview/"})
    return room, secret


def live_room(code: str | None) -> Room | None:
    if not code:
        return None
    return Room.objects.filter(code=code, expires_at__gt=timezone.now()).first()


def secret_ok(room: Room, secret) -> bool:
    return isinstance(secret, str) and len(secret) < 200 and hmac.compare_digest(room.secret_hash, hash_secret(secret))


def touch(room: Room) -> None:
    """A presenter who is still teaching keeps the room alive (written at most once a minute)."""
    new_expiry = timezone.now() + ttl()
    if new_expiry - room.expires_at > timedelta(minutes=1):
        room.expires_at = new_expiry
        Room.objects.filter(pk=room.pk).update(expires_at=new_expiry)


def end(room: Room) -> None:
    Room.objects.filter(pk=room.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


# ---- what the presenter shows ---------------------------------------------------------------

class StateError(ValueError):
    pass


@dataclass(frozen=True)
class StageState:
    slug: str
    href: str  # path and query of the stage page, without embed

    def to_dict(self) -> dict:
        st = BY_SLUG[self.slug]
        return {"slug": self.slug, "href": self.href, "title": st.title, "number": st.number}


def stage_state(href) -> StageState:
    """Check a stage address the presenter sends: a built stage, a scenario that decodes,
    and a sane length. Students' pages load exactly this, so nothing else gets through."""

    if not isinstance(href, str) or len(href) > MAX_HREF_CHARS:
        raise StateError(f"href: a stage address of at most {MAX_HREF_CHARS} characters")
    parts = urlsplit(href)
    m = _HREF.match(parts.path)
    if parts.scheme or parts.netloc or not m or m.group(1) not in BY_SLUG or not BY_SLUG[m.group(1)].built:
        raise StateError("href: must be the address of a stage page, /learn/<stage>/")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=False) if k != "embed"]
    for k, v in query:
        if k == "s":
            try:
                codec().decode(v)
            except ScenarioError as exc:
                raise StateError(f"href: the scenario in this link cannot be read ({exc})") from None
    return StageState(m.group(1), parts.path + ("?" + urlencode(query) if query else ""))


def scenario_of(state: dict):

    q = dict(parse_qsl(urlsplit(state.get("href", "")).query))
    return codec().decode(q.get("s", ""))


# ---- looking codes up, and the pass of those who got in -------------------------------------------
#
# A code can be guessed (887 million of them, and a live room is one hit), so each lookup of a code
# is a guess: lookups that find nothing are limited per address (a burst of 20, then 10 a minute), per
# code tried, and across all addresses (CODE_FAILURES_TOTAL: many addresses trying codes together),
# and an address over its budget is refused before any lookup. The limiter is the gateway's own
# (lifecycle.gateway.FailureLimiter): each lookup reserves its failure first and gets it back when the
# room is found, in one lock, so 100 concurrent wrong codes make at most 20 lookups, not 100.
#
# What must not happen is that someone else's wrong codes lock out a class sharing the address
# (one router): so whoever found the room once gets a pass, a signed cookie for that code
# (``give_pass``) set by the join redirect, the student page, the presenter page and "start a room".
# The pages and the socket of a room whose pass the browser holds look the room up without the limit.
# Only new lookups are limited. The counts are kept per process (also with REDIS_URL).

CODE_FAILURES_TOTAL = (200, 100)  # wrong codes from every address together: a burst, then per minute
attempts = FailureLimiter(capacity=20, per_minute=10, total=CODE_FAILURES_TOTAL)
# Wrong presenter secrets: 256 random bits, checked in memory, so a right one is always let through and a
# wrong one only counted (a 429 past the budget). Counted apart from codes: they cannot find a room.
secret_attempts = FailureLimiter(capacity=20, per_minute=10)
PASS_SALT = "explainer.rooms.pass"


def pass_name(code: str) -> str:
    return f"room_{code}"


def give_pass(response, code: str, secure: bool) -> None:
    """Let this browser look ``code`` up again without the limit on wrong codes (for as long as a room lasts)."""
    response.set_cookie(pass_name(code), _signer(code).sign(code), max_age=int(ttl().total_seconds()),
                        httponly=True, samesite="Lax", secure=secure)


def holds_pass(cookies: Mapping[str, str], code: str | None) -> bool:
    """Whether ``cookies`` (a request's, or a socket's: ``cookies_of``) hold a valid pass for ``code``."""
    value = cookies.get(pass_name(code)) if code else None
    if not value:
        return False
    try:
        return _signer(code).unsign(value, max_age=ttl()) == code
    except signing.BadSignature:  # forged, another room's, or older than a room lasts
        return False


def _signer(code: str) -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=f"{PASS_SALT}.{code}")  # keyed with SECRET_KEY


def cookies_of(scope) -> dict[str, str]:
    """The cookies a WebSocket handshake carries (the browser sends the page's cookies with it)."""
    raw = "; ".join(v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"cookie")
    return parse_cookie(raw) if raw else {}


JOIN_TOKEN_CHARS = 16


def join_token(code: str, key: str | None = None) -> str:
    """What the room's own join link carries (its QR code, the link on the projector and the presenter's
    page): a signature of the code, so whoever opens that link came from the room, not from guessing, and is
    never limited by other people's wrong codes. A code typed at /join is a guess to the server, and limited.

    >>> len(join_token("ABC234")) == JOIN_TOKEN_CHARS and join_token("ABC234") != join_token("ABC235")
    True
    """
    return signing.Signer(salt=f"{PASS_SALT}.join").signature(code, key)[:JOIN_TOKEN_CHARS]


def is_join_token(token: object, code: str) -> bool:
    """Whether ``token`` is ``code``'s join token, signed with SECRET_KEY or a key of SECRET_KEY_FALLBACKS
    (a QR code already on the projector outlives a key rotation, as the passes do)."""
    return isinstance(token, str) and len(token) == JOIN_TOKEN_CHARS and any(
        hmac.compare_digest(token, join_token(code, key)) for key in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS))


def reserve_lookup(code: str | None, addr: str, cookies: Mapping[str, str], token: str | None = None) -> Ticket:
    """Before looking ``code`` up for ``addr``: may it be looked up (``allowed``), or the 429 and its ``retry_after``.

    A pass holder's lookup, one from the room's own join link (``token``), and a code that cannot be one
    (no lookup happens), are not limited. Call it before any ``await``, then :func:`look_up` with the ticket.
    """
    if code is None or holds_pass(cookies, code):
        return Ticket(True)  # reserves nothing
    if is_join_token(token, code):
        return Ticket(True)
    return attempts.reserve(addr, code)


def look_up(code: str | None, ticket: Ticket) -> Room | None:
    """The live room for ``code``; a room found gives back the failure ``ticket`` reserved, none keeps it counted."""
    try:
        room = live_room(code)
    except BaseException:
        attempts.refund(ticket)  # the database failed: nothing was learned
        raise
    attempts.settle(ticket, ok=room is not None)
    return room


# ---- nicknames ---------------------------------------------------------------------------------
#
# A student may give a nickname, shown on the presenter's (projected) screen. It lives only in the
# memory of the sockets of this session: never an account, never the database. Checked here, on the
# server, whatever the page already checked.

MAX_NICKNAME_CHARS = 20
_RAW_NICKNAME_LIMIT = 200           # longer than this is not a nickname with extra spaces: refused at once
# spaces of every width, tabs and line breaks become one space (not \s: it also matches control characters)
_SPACES = re.compile("[\t\n\r\f\v \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_ALLOWED_FORMAT = {"\u200d"}        # the zero-width joiner that builds emoji like 👩‍💻 (ignored by the word check)
_MAX_MARKS_IN_A_ROW = 3             # accents stack on a letter; dozens of them ("Zalgo") spill over the lines around


class NicknameError(ValueError):
    pass


class QuestionError(ValueError):
    pass


def not_allowed(noun: str) -> str:
    """What a student reads when the word list refuses their text: one sentence for nicknames and questions."""
    return f"That {noun} is not allowed in a classroom. Please choose another one."


def _clean_text(raw, noun: str, max_chars: int, error: type[ValueError]) -> str | None:
    """What a student typed as it will be shown (spaces trimmed and collapsed), None for an empty box, or
    ``error`` with the reason: the one check behind :func:`clean_nickname` and :func:`clean_question`."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise error(f"{noun}: a text of at most {max_chars} characters")
    if len(raw) > max(_RAW_NICKNAME_LIMIT, 4 * max_chars):
        raise error(f"A {noun} is at most {max_chars} characters.")
    text = unicodedata.normalize("NFC", _SPACES.sub(" ", raw).strip())
    if not text:
        return None
    marks = 0
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] == "C" and ch not in _ALLOWED_FORMAT:
            # Cc control, Cf format (bidi overrides, zero-width marks), Cs lone surrogates, Co private use, Cn unassigned
            raise error(f"A {noun} cannot contain control characters or invisible formatting (found U+{ord(ch):04X}).")
        marks = marks + 1 if cat in ("Mn", "Me") else 0
        if marks > _MAX_MARKS_IN_A_ROW:
            raise error(f"A {noun} cannot stack that many accents on one letter.")
    if len(text) > max_chars:
        raise error(f"A {noun} is at most {max_chars} characters (this one has {len(text)}).")
    # the word check sees the letters a projector shows: compatibility forms folded (ｆｕｌｌ-width → ASCII), joiners removed
    plain = unicodedata.normalize("NFKC", text).replace("\u200d", "")
    if find_blocked(plain):
        raise error(not_allowed(noun))
    return text


def clean_nickname(raw) -> str | None:
    """The nickname to show for what a student typed, or None for "no nickname" (an empty box).

    Spaces are trimmed and runs of them collapsed; anything else is refused with a message
    (:class:`NicknameError`) rather than silently changed: control characters, bidi overrides
    and other invisible characters, more than MAX_NICKNAME_CHARS characters, and words on the
    project's blocklist (explainer/llm/blocklist.txt)."""
    return _clean_text(raw, "nickname", MAX_NICKNAME_CHARS, NicknameError)


# ---- questions ("Everyone asks") --------------------------------------------------------------------
#
# A student's question goes to the model and, unless the presenter hides it, onto the projector: it is
# checked exactly as a nickname is (the same function), only longer. Never stored.

def clean_question(raw) -> str:
    """A student's question as the projector and the model will see it, or :class:`QuestionError` with the reason
    (an empty one included: a question is not optional once sent)."""
    text = _clean_text(raw, "question", MAX_QUESTION_CHARS, QuestionError)
    if text is None:
        raise QuestionError("Type a question first.")
    return text
