"""What an API gateway does before any model runs: body size, key check, rate limits, headers.

Pure Python and clock-injectable: everything that depends on time takes ``now`` in seconds
(``time.time()`` in a server, any number in a test or a simulation), so the same code serves
the gateway stage's simulation and a real endpoint.

Rate limits follow the public API's model: per minute, separately for requests, input
tokens and output tokens, each a token bucket that refills continuously (not a window that
resets on the minute). A request passes only if every bucket has room; a refused request
takes nothing. Output tokens are not known up front, so the gateway reserves ``max_tokens``
and gives back what the reply did not use.

Example:
    >>> b = TokenBucket.per_minute(5, now=0.0)        # 5 requests a minute: 1 back every 12 s
    >>> [b.take(1, now=0.0).allowed for _ in range(6)]
    [True, True, True, True, True, False]
    >>> b.take(1, now=0.0).retry_after                 # seconds until one request's worth is back
    12.0
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

from explainer.lifecycle.errors import APIError
from explainer.lifecycle.prompt_cache import prefix_key as cache_key

EPS = 1e-9  # float slack, so 12 s of refill at 1/12 per second counts as a whole token
DIMENSIONS = ("requests", "input_tokens", "output_tokens")
UNITS = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}
HEADER_NAMES = {"requests": "requests", "input_tokens": "input-tokens", "output_tokens": "output-tokens"}

MISSING_KEY_MESSAGE = "x-api-key header is required"
INVALID_KEY_MESSAGE = "invalid x-api-key"
OVERLOADED_MESSAGE = "Overloaded"
CACHE_TTL_SECONDS = 300  # the default "5m" time-to-live of a prompt-cache entry


# ---- keys -------------------------------------------------------------------------------------

def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key from ``x-api-key: KEY`` (curl, older SDKs) or ``Authorization: Bearer KEY`` (the current Python SDK).

    Header names are matched without regard to case.

    Example:
        >>> key_from_headers({"Authorization": "Bearer sk-1"})
        'sk-1'
    """
    lower = {str(k).lower(): v for k, v in headers.items()}
    if (lower.get("x-api-key") or "").strip():
        return lower["x-api-key"].strip()
    auth = lower.get("authorization") or ""
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return None


def check_key(headers: Mapping[str, str], is_valid: Callable[[str], bool]) -> str:
    """Return the request's key, or raise the 401 the API answers (missing key, or one ``is_valid`` refuses)."""
    key = key_from_headers(headers)
    if key is None:
        raise APIError("authentication_error", MISSING_KEY_MESSAGE)
    if not is_valid(key):
        raise APIError("authentication_error", INVALID_KEY_MESSAGE)
    return key


# ---- body size and capacity -------------------------------------------------------------------

def body_too_large(limit: int) -> APIError:
    return APIError("request_too_large", f"Request exceeds the maximum allowed number of bytes ({limit:,}).")


def check_body_size(n_bytes: int, limit: int) -> None:
    """Raise the 413 for a body over ``limit`` bytes (checked before the body is even parsed)."""
    if n_bytes > limit:
        raise body_too_large(limit)


def overloaded() -> APIError:
    """The 529: no model server has room right now. Not the caller's limit; the SDKs retry it."""
    return APIError("overloaded_error", OVERLOADED_MESSAGE)


# ---- token buckets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Take:
    """The outcome of asking a bucket for ``n`` tokens."""

    allowed: bool
    remaining: int  # whole tokens left in the bucket afterwards
    reset: float  # seconds until the bucket is full again
    retry_after: float | None  # seconds until ``n`` tokens are there: 0 if allowed, None if never (n > capacity)


class TokenBucket:
    """Holds up to ``capacity`` tokens and refills at ``refill_per_second``, continuously."""

    def __init__(self, capacity: int, refill_per_second: float, now: float, tokens: float | None = None):
        if capacity <= 0 or refill_per_second <= 0:
            raise ValueError("a bucket needs a positive capacity and refill rate")
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self.tokens = float(capacity if tokens is None else tokens)
        self.updated = now

    @classmethod
    def per_minute(cls, limit: int, now: float) -> TokenBucket:
        """A full bucket for a per-minute limit: the whole limit at once, refilled evenly over a minute."""
        return cls(limit, limit / 60.0, now)

    def level(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (a time before the last update counts as the last update)."""
        elapsed = max(0.0, now - self.updated)
        return min(float(self.capacity), self.tokens + elapsed * self.refill_per_second)

    def _settle(self, now: float) -> float:
        level = self.level(now)
        self.tokens, self.updated = level, max(now, self.updated)
        return level

    def _outcome(self, level: float, n: float, allowed: bool) -> Take:
        left = level - n if allowed else level
        if allowed:
            retry = 0.0
        elif n > self.capacity + EPS:
            retry = None
        else:
            retry = max(0.0, (n - level) / self.refill_per_second)
        return Take(allowed, max(0, math.floor(left + EPS)), max(0.0, (self.capacity - left) / self.refill_per_second), retry)

    def check(self, n: float, now: float) -> Take:
        """What :meth:`take` would answer, without taking anything."""
        level = self.level(now)
        return self._outcome(level, n, n <= level + EPS)

    def take(self, n: float, now: float) -> Take:
        """Take ``n`` tokens if they are all there; otherwise take nothing and say how long to wait."""
        level = self._settle(now)
        allowed = n <= level + EPS
        out = self._outcome(level, n, allowed)
        if allowed:
            self.tokens = max(0.0, level - n)
        return out

    def give_back(self, n: float, now: float) -> None:
        """Return tokens that were reserved but not used (never above capacity)."""
        level = self._settle(now)
        self.tokens = min(float(self.capacity), level + n)


# ---- the three limits together ----------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """Per-minute limits, as the API sets them per organisation and model."""

    requests_per_minute: int
    input_tokens_per_minute: int
    output_tokens_per_minute: int

    def per_minute(self, dimension: str) -> int:
        return {"requests": self.requests_per_minute, "input_tokens": self.input_tokens_per_minute,
                "output_tokens": self.output_tokens_per_minute}[dimension]

    def to_dict(self) -> dict[str, int]:
        return {d: self.per_minute(d) for d in DIMENSIONS}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limited_by: str | None  # the dimension that refused the request
    retry_after: float | None  # seconds until every bucket has room; None if one never will
    needs: dict[str, int]  # tokens asked of each bucket


class RateLimiter:
    """Three buckets (requests, input tokens, output tokens) for one organisation and model."""

    def __init__(self, limits: Limits, now: float):
        self.limits = limits
        self.buckets = {d: TokenBucket.per_minute(limits.per_minute(d), now) for d in DIMENSIONS}

    def admit(self, input_tokens: int, max_tokens: int, now: float) -> Decision:
        """Admit one request that sends ``input_tokens`` and may produce up to ``max_tokens``.

        All or nothing: if any bucket is short, nothing is taken. The refusing dimension is
        the one with the longest wait (a request that can never fit wins).
        """
        needs = {"requests": 1, "input_tokens": input_tokens, "output_tokens": max_tokens}
        checks = {d: self.buckets[d].check(needs[d], now) for d in DIMENSIONS}
        short = [d for d in DIMENSIONS if not checks[d].allowed]
        if short:
            never = [d for d in short if checks[d].retry_after is None]
            worst = never[0] if never else max(short, key=lambda d: checks[d].retry_after or 0.0)  # (never None here)
            return Decision(False, worst, None if never else checks[worst].retry_after, needs)
        for d in DIMENSIONS:
            self.buckets[d].take(needs[d], now)
        return Decision(True, None, 0.0, needs)

    def settle(self, reserved_output: int, used_output: int, now: float) -> None:
        """After the reply: give back the output tokens that were reserved but not produced."""
        if used_output < reserved_output:
            self.buckets["output_tokens"].give_back(reserved_output - used_output, now)

    def snapshot(self, now: float) -> dict[str, tuple[int, float]]:
        """``{dimension: (remaining whole tokens, seconds until full)}`` at ``now``."""
        out: dict[str, tuple[int, float]] = {}
        for d, b in self.buckets.items():
            level = b.level(now)
            out[d] = (max(0, math.floor(level + EPS)), max(0.0, (b.capacity - level) / b.refill_per_second))
        return out


# ---- failed guesses, per client address: wrong API keys, room codes, room secrets -----------------

@dataclass(eq=False)
class Ticket:
    """One attempt to present a secret (an API key, a room code), as :meth:`FailureLimiter.reserve` answers it.

    ``allowed``: check the secret now; the failure it may turn out to be is already counted, and
    :meth:`FailureLimiter.settle` gives it back if the secret was right. Otherwise the failure
    budget is spent (``over_budget``): answer 429 without checking, after ``retry_after`` whole
    seconds, when the limit named by ``limited_by`` ("address", "subject" or "total") has room again.
    """

    allowed: bool
    over_budget: bool = False
    retry_after: int | None = None
    limited_by: str | None = None
    taken: tuple[TokenBucket, ...] = ()
    done: bool = False


class _Buckets:
    """Token buckets by name. Past ``max_entries`` names the least recently used is forgotten (it
    gets a fresh bucket if it comes back): a flood of distinct names costs bounded memory and
    pushes out only old names, never the whole table."""

    def __init__(self, capacity: int, per_minute: float, max_entries: int):
        self.capacity, self.rate, self.max_entries = capacity, per_minute / 60.0, max_entries
        self._table: dict[str, TokenBucket] = {}

    def get(self, name: str, now: float) -> TokenBucket:
        b = self._table.pop(name, None)  # popped and put back: the dict's order is the order of use
        if b is None:
            if len(self._table) >= self.max_entries:
                del self._table[next(iter(self._table))]
            b = TokenBucket(self.capacity, self.rate, now)
        self._table[name] = b
        return b

    def clear(self) -> None:
        self._table.clear()


def _wait(bucket: TokenBucket, now: float) -> int:
    """Whole seconds until ``bucket`` holds one token again (at least 1: this is for a 429)."""
    return max(1, math.ceil((1 - bucket.level(now)) / bucket.refill_per_second - EPS))


class FailureLimiter:
    """Failed attempts at a secret, limited so that guessing stays bounded and nobody is locked out
    by somebody else's failures.

    What a failure limit must not do is what a plain "N failures per address, then 429" does: one
    wrong key a second from an address kept the right key from the same address out on every call,
    and a whole class behind one router shares an address. And "is it blocked?" then "count the
    failure" as two steps let 100 concurrent wrong keys all be checked. So:

    * Failures are counted per client address and per ``subject`` (what was presented: a key's
      first characters, a room code) separately, and optionally across all addresses (``total``).
      A bucket per name: ``capacity`` failures at once, ``per_minute`` back each minute.
    * Each check reserves first: :meth:`reserve` takes a failure's token from every bucket, in one
      lock, before the secret is looked at, and :meth:`settle` gives them back when the secret was
      right. The count cannot be raced: of 100 concurrent wrong attempts, at most ``capacity`` are
      checked while the budget lasts, not 100. A caller
      on an event loop reserves before its first ``await``.
    * Slow the failures, not the successes: the limiter only ever refuses attempts, so a caller lets a
      right secret through before asking it, by a proof that cannot be guessed: the API knows its live
      keys' digests (``explainer.api.keys.LiveDigests``), so a right key never reserves anything; a
      room gives whoever got in a signed cookie for that room, so a joined student or the presenter
      never looks a code up again. What reaches the limiter is a guess, refused past the budget
      before any lookup.

    Kept in this process (with several processes, each has its own counts).

    Example:
        >>> lim = FailureLimiter(capacity=2, per_minute=6)
        >>> t = lim.reserve("1.2.3.4", now=0.0)
        >>> lim.settle(t, ok=True, now=0.0)              # it was right: its token is given back
        >>> for _ in range(2):                           # two wrong ones: the budget is spent
        ...     lim.settle(lim.reserve("1.2.3.4", now=0.0), ok=False, now=0.0)
        >>> t = lim.reserve("1.2.3.4", now=0.0)
        >>> t.allowed, t.over_budget, t.retry_after      # refused unchecked, for 10 seconds
        (False, True, 10)
        >>> lim.reserve("5.6.7.8", now=0.0).allowed      # another address is not affected
        True
    """

    def __init__(self, capacity: int = 20, per_minute: float = 10.0, *, total: tuple[int, float] | None = None,
                 max_entries: int = 10_000):
        self._addresses = _Buckets(capacity, per_minute, max_entries)
        self._subjects = _Buckets(capacity, per_minute, max_entries)
        self._total_limit = total
        self._total: TokenBucket | None = None
        self._lock = threading.Lock()

    def _failure_buckets(self, who: str, subject: str | None, now: float) -> list[tuple[str, TokenBucket]]:
        out = [("address", self._addresses.get(who, now))]
        if subject is not None:
            out.append(("subject", self._subjects.get(subject, now)))
        if self._total_limit is not None:
            if self._total is None:
                self._total = TokenBucket(self._total_limit[0], self._total_limit[1] / 60.0, now)
            out.append(("total", self._total))
        return out

    def _over(self, buckets: list[tuple[str, TokenBucket]], now: float) -> tuple[str, int] | None:
        """The limit that is spent (the one that refills last), or None when every bucket has a token."""
        short = [(name, _wait(b, now)) for name, b in buckets if not b.check(1, now).allowed]
        return max(short, key=lambda s: s[1]) if short else None

    def _spend(self, who: str, subject: str | None, now: float) -> Ticket:
        """Take a failure's token from every bucket of ``who`` and ``subject``, or say which limit is spent (the lock is held)."""
        buckets = self._failure_buckets(who, subject, now)
        over = self._over(buckets, now)
        if over is not None:
            return Ticket(False, True, over[1], over[0])
        for _, b in buckets:
            b.take(1, now)
        return Ticket(True, taken=tuple(b for _, b in buckets))

    def reserve(self, who: str, subject: str | None = None, now: float | None = None) -> Ticket:
        """Before checking a secret that ``who`` presents: may it be checked (its failure counted already)?"""
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._spend(who, subject, now)

    def settle(self, ticket: Ticket, ok: bool, now: float | None = None) -> None:
        """After the check: a right secret gives back what its ticket took; a wrong one keeps it counted."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if ticket.done or not ticket.allowed:
                return
            ticket.done = True
            if ok:
                for b in ticket.taken:
                    b.give_back(1, now)

    def refund(self, ticket: Ticket, now: float | None = None) -> None:
        """Nothing was learned (the key store was down): give back what the ticket took, as if never asked."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if ticket.done or not ticket.allowed:
                return
            ticket.done = True
            for b in ticket.taken:
                b.give_back(1, now)

    def failure(self, who: str, subject: str | None = None, now: float | None = None) -> Ticket:
        """A failure that needed no check (a missing key, a wrong room secret): counted, never an extra check.

        ``over_budget`` on the answer says to refuse it with 429 (after ``retry_after``) rather than as wrong.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            ticket = self._spend(who, subject, now)
        ticket.done = True  # counted for good: nothing to settle
        return ticket

    def reset(self) -> None:
        with self._lock:
            self._addresses.clear()
            self._subjects.clear()
            self._total = None


# ---- per client address: open connections ---------------------------------------------------

class OpenCounts:
    """How many connections (or runs) each client address holds open, with a cap.

    Example:
        >>> c = OpenCounts()
        >>> c.acquire("a", cap=1), c.acquire("a", cap=1)
        (True, False)
        >>> c.release("a"); c.acquire("a", cap=1)
        True
    """

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, who: str, cap: int) -> bool:
        with self._lock:
            n = self._open.get(who, 0)
            if n >= cap:
                return False
            self._open[who] = n + 1
            return True

    def release(self, who: str) -> None:
        with self._lock:
            n = self._open.get(who, 0) - 1
            if n > 0:
                self._open[who] = n
            else:
                self._open.pop(who, None)

    def count(self, who: str) -> int:
        with self._lock:
            return self._open.get(who, 0)


def too_many(message: str, retry_after: float | None = None) -> APIError:
    """A 429 in the API's envelope, with ``retry-after`` (seconds, rounded up)."""
    seconds = max(1, math.ceil(retry_after or 1))
    return APIError("rate_limit_error", message, headers={"retry-after": str(seconds)})


def rfc3339(t: float) -> str:
    """Unix seconds -> ``2026-01-01T12:00:13Z`` (rounded up to the whole second, so "reset" is never early)."""
    return datetime.fromtimestamp(math.ceil(t - EPS), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ratelimit_headers(limits: Limits, snapshot: Mapping[str, tuple[int, float]], now: float,
                      retry_after: float | None = None, round_tokens: bool = False) -> dict[str, str]:
    """The ``anthropic-ratelimit-*`` response headers (and ``retry-after`` on a 429).

    ``snapshot`` is :meth:`RateLimiter.snapshot`; ``now`` is Unix time, for the RFC 3339 reset
    times. The public API rounds token counts to the nearest thousand (``round_tokens=True``);
    exact counts are easier to watch move. ``anthropic-ratelimit-tokens-*`` repeats whichever of
    input and output tokens is the more restrictive right now.
    """
    headers: dict[str, str] = {}
    for d in DIMENSIONS:
        remaining, reset = snapshot[d]
        if round_tokens and d != "requests":
            remaining = int(round(remaining, -3))
        name = HEADER_NAMES[d]
        headers[f"anthropic-ratelimit-{name}-limit"] = str(limits.per_minute(d))
        headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
        headers[f"anthropic-ratelimit-{name}-reset"] = rfc3339(now + reset)
    tighter = min(("input_tokens", "output_tokens"), key=lambda d: snapshot[d][0] / limits.per_minute(d))
    for part in ("limit", "remaining", "reset"):
        headers[f"anthropic-ratelimit-tokens-{part}"] = headers[f"anthropic-ratelimit-{HEADER_NAMES[tighter]}-{part}"]
    if retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry_after - EPS)))
    return headers


def rate_limit_error(dimension: str, limits: Limits, need: int | None = None, headers: dict[str, str] | None = None) -> APIError:
    """The 429 for ``dimension``; ``need`` above the whole limit gives the "can never pass" wording."""
    limit, unit = limits.per_minute(dimension), UNITS[dimension]
    if need is not None and need > limit:
        asks = "max_tokens reserves" if dimension == "output_tokens" else "This request needs"
        msg = (f"{asks} {need:,} {unit}, more than your whole rate limit of {limit:,} {unit} per minute, "
               f"so it can never pass: reduce the prompt length or max_tokens.")
    else:
        msg = (f"This request would exceed your rate limit of {limit:,} {unit} per minute. "
               f"The response headers show your current usage; retry after the time in the retry-after header, "
               f"or reduce the prompt length or max_tokens.")
    return APIError("rate_limit_error", msg, headers=headers or {})


# ---- the prompt-cache prefix ------------------------------------------------------------------

class Prefix(TypedDict):
    label: str  # "system" or "messages[i]"
    tokens: int  # the prefix's length
    hash: str  # the prompt cache's key for it


def prefix_chain(ids: list[int], ends: Mapping[str, int], model_id: str = "") -> list[Prefix]:
    """The cacheable prefix at each turn boundary, keyed exactly as the engine's prompt cache keys it.

    ``ids`` are the prompt's token ids and ``ends`` where each turn ends (``Engine.prompt_segments``:
    tool definitions are part of the system turn). Each entry's ``hash`` is
    ``prompt_cache.prefix_key(ids[:n])``: it covers every token up to that boundary, so editing
    one turn changes its hash and every hash after it, and none before it.

    Example:
        >>> [p["label"] for p in prefix_chain([1, 2, 3, 4], {"system": 2, "messages.0": 4})]
        ['system', 'messages[0]']
    """
    chain: list[Prefix] = []
    for segment, n in ends.items():
        label = "system" if segment == "system" else f"messages[{segment.split('.', 1)[1]}]"
        chain.append({"label": label, "tokens": n, "hash": cache_key(ids[:n], model_id)})
    return chain


def prefix_key(ids: list[int], model_id: str = "") -> str:
    """The key of the whole prompt as a prefix: what a lookup of the full prompt uses."""
    return cache_key(ids, model_id)


class PrefixCache:
    """Prefix hash -> expiry time. A hit refreshes the time-to-live; a miss writes the entry."""

    def __init__(self, ttl: float = CACHE_TTL_SECONDS):
        self.ttl = ttl
        self.expires: dict[str, float] = {}

    def lookup(self, key: str, now: float) -> bool:
        hit = self.expires.get(key, -math.inf) > now
        self.expires[key] = now + self.ttl
        return hit
