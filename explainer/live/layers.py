"""The in-process channel layer (the default, one Daphne process), with its expiry sweep
taken off the hot path.

Channels' InMemoryChannelLayer sweeps every channel and every group for expired messages on
each ``receive``. A room broadcast wakes every student's consumer, each of which receives, so
one token cost a sweep per student over all the students: quadratic in the class size (at 500
students it was most of the server's time). Sweeping at most once a second expires the same
messages (they live 60 seconds) without that cost.
"""
from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer

SWEEP_EVERY_SECONDS = 1.0
_now = time.monotonic


class SweepingInMemoryChannelLayer(InMemoryChannelLayer):
    _last_sweep = float("-inf")

    def _clean_expired(self):
        now = _now()
        if now - self._last_sweep < SWEEP_EVERY_SECONDS:
            return
        self._last_sweep = now
        super()._clean_expired()
