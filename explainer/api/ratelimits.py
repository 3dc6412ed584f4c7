"""Per-key rate limits for /v1/messages, on the token buckets of ``explainer.lifecycle.gateway``.

State lives in this process by default. With ``REDIS_URL`` set, it lives in Redis, so several
Daphne processes share one set of buckets: the same all-or-nothing admission runs as one
Lua script, atomically, with the same arithmetic.
"""
from __future__ import annotations

import threading
import time

from django.conf import settings

from explainer.lifecycle.gateway import DIMENSIONS, Decision, Limits, RateLimiter


def limits() -> Limits:
    return Limits(settings.EXPLAINER_RATE_REQUESTS_PER_MINUTE, settings.EXPLAINER_RATE_INPUT_TOKENS_PER_MINUTE,
                  settings.EXPLAINER_RATE_OUTPUT_TOKENS_PER_MINUTE)


class MemoryStore:
    def __init__(self):
        self._limiters: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()

    def _get(self, key: str, now: float) -> RateLimiter:
        lim = self._limiters.get(key)
        if lim is None or lim.limits != limits():
            lim = self._limiters[key] = RateLimiter(limits(), now)
        return lim

    def admit(self, key: str, input_tokens: int, max_tokens: int, now: float) -> tuple[Decision, dict]:
        with self._lock:
            lim = self._get(key, now)
            return lim.admit(input_tokens, max_tokens, now), lim.snapshot(now)

    def settle(self, key: str, reserved: int, used: int, now: float) -> dict:
        with self._lock:
            lim = self._get(key, now)
            lim.settle(reserved, used, now)
            return lim.snapshot(now)


# All three buckets in one atomic step. KEYS: one hash per dimension. ARGV: now, then per
# dimension capacity, refill per second, tokens needed (needed < 0 means "give back -needed").
_ADMIT = """
local now = tonumber(ARGV[1])
local levels, caps, rates, needs = {}, {}, {}, {}
local ok = true
for i = 1, #KEYS do
  caps[i] = tonumber(ARGV[2 + (i - 1) * 3]); rates[i] = tonumber(ARGV[3 + (i - 1) * 3]); needs[i] = tonumber(ARGV[4 + (i - 1) * 3])
  local t = redis.call('HMGET', KEYS[i], 'tokens', 'updated')
  local tokens = tonumber(t[1]) or caps[i]
  local updated = tonumber(t[2]) or now
  local level = math.min(caps[i], tokens + math.max(0, now - updated) * rates[i])
  levels[i] = level
  if needs[i] > 0 and needs[i] > level + 1e-9 then ok = false end
end
local out = {ok and 1 or 0}
for i = 1, #KEYS do
  local level = levels[i]
  if ok then level = math.max(0, math.min(caps[i], level - needs[i])) end
  redis.call('HSET', KEYS[i], 'tokens', tostring(level), 'updated', tostring(now))
  redis.call('EXPIRE', KEYS[i], 3600)
  table.insert(out, tostring(level))
end
return out
"""


class RedisStore:
    def __init__(self, url: str):
        import redis

        self.r = redis.Redis.from_url(url)
        self.script = self.r.register_script(_ADMIT)

    def _run(self, key: str, needs: dict, now: float) -> tuple[bool, dict]:
        lim = limits()
        keys = [f"explainer:rl:{key}:{d}" for d in DIMENSIONS]
        argv: list = [repr(now)]
        for d in DIMENSIONS:
            argv += [lim.per_minute(d), repr(lim.per_minute(d) / 60.0), repr(needs[d])]
        res = self.script(keys=keys, args=argv)
        levels = {d: float(v) for d, v in zip(DIMENSIONS, res[1:])}
        return bool(int(res[0])), levels

    def _as_limiter(self, levels: dict, now: float) -> RateLimiter:
        lim = RateLimiter(limits(), now)
        for d in DIMENSIONS:
            lim.buckets[d].tokens = levels[d]
        return lim

    def admit(self, key: str, input_tokens: int, max_tokens: int, now: float) -> tuple[Decision, dict]:
        needs = {"requests": 1, "input_tokens": input_tokens, "output_tokens": max_tokens}
        ok, levels = self._run(key, needs, now)
        if ok:
            return Decision(True, None, 0.0, needs), self._as_limiter(levels, now).snapshot(now)
        # Refused: nothing was taken; the pure-Python limiter over the same levels says why and how long.
        lim = self._as_limiter(levels, now)
        return lim.admit(input_tokens, max_tokens, now), self._as_limiter(levels, now).snapshot(now)

    def settle(self, key: str, reserved: int, used: int, now: float) -> dict:
        back = max(0, reserved - used)
        _, levels = self._run(key, {"requests": 0, "input_tokens": 0, "output_tokens": -back}, now)
        return self._as_limiter(levels, now).snapshot(now)


def build_store(settings):
    """The per-key rate limits' store: Redis when ``REDIS_URL`` is set (shared by the server's processes), else this process's memory."""
    url = getattr(settings, "REDIS_URL", "")
    return RedisStore(url) if url else MemoryStore()


def store():
    """The store the API app built when it started (``ApiConfig.ready``)."""
    from django.apps import apps

    return apps.get_app_config("api").store


def now() -> float:
    return time.time()
