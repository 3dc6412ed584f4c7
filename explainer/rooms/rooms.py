"""Rooms: creating them, finding them by code, checking the presenter's secret, and what a
presenter may put on every student's screen.

Codes are six characters from an alphabet without look-alikes (0/O, 1/I/L): about 887
million codes, and failed lookups are limited per address, so live rooms cannot be found
by trying codes in bulk. The presenter's secret is 256 random bits, stored as a SHA-256 hash.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

from django.conf import settings
from django.utils import timezone

from explainer.lifecycle.gateway import AddressBuckets
from explainer.lifecycle.scenario import ScenarioError
from explainer.llm.blocklist import find_blocked
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


# ---- failed lookups, per address --------------------------------------------------------------

# The bucket is the gateway's own: one implementation for wrong room codes, room secrets and API keys.
attempts = AddressBuckets()


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


def clean_nickname(raw) -> str | None:
    """The nickname to show for what a student typed, or None for "no nickname" (an empty box).

    Spaces are trimmed and runs of them collapsed; anything else is refused with a message
    (:class:`NicknameError`) rather than silently changed: control characters, bidi overrides
    and other invisible characters, more than MAX_NICKNAME_CHARS characters, and words on the
    project's blocklist (explainer/llm/blocklist.txt)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise NicknameError(f"nickname: a text of at most {MAX_NICKNAME_CHARS} characters")
    if len(raw) > _RAW_NICKNAME_LIMIT:
        raise NicknameError(f"A nickname is at most {MAX_NICKNAME_CHARS} characters.")
    text = unicodedata.normalize("NFC", _SPACES.sub(" ", raw).strip())
    if not text:
        return None
    marks = 0
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] == "C" and ch not in _ALLOWED_FORMAT:
            # Cc control, Cf format (bidi overrides, zero-width marks), Cs lone surrogates, Co private use, Cn unassigned
            raise NicknameError("A nickname cannot contain control characters or invisible formatting "
                                f"(found U+{ord(ch):04X}).")
        marks = marks + 1 if cat in ("Mn", "Me") else 0
        if marks > _MAX_MARKS_IN_A_ROW:
            raise NicknameError("A nickname cannot stack that many accents on one letter.")
    if len(text) > MAX_NICKNAME_CHARS:
        raise NicknameError(f"A nickname is at most {MAX_NICKNAME_CHARS} characters (this one has {len(text)}).")
    # the word check sees the letters a projector shows: compatibility forms folded (ｆｕｌｌ-width → ASCII), joiners removed
    plain = unicodedata.normalize("NFKC", text).replace("\u200d", "")
    if find_blocked(plain):
        raise NicknameError("That nickname is not allowed in a classroom. Please choose another one.")
    return text
