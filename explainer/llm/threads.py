"""BLAS threads per model: one for the bundled model (its matrices are small, and requests run side by
side), every core for a large model's pass (its matrices are large enough to split)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # Finding the loaded BLAS libraries reads the process's memory map (about 3 ms): once, not per pass.
    return ThreadpoolController()


_lock = threading.Lock()
_wide = 0  # large-model passes running now
_limits = None  # what restores the process default when the last of them ends


@contextmanager
def _counted(n: int) -> Iterator[None]:
    """The limit is process-wide, so it is counted: the first large pass raises it, the last one lowers it
    again. (threadpoolctl's own context restores what it saw on entry, which two overlapping passes would
    leave raised for good, or lowered under a pass still running.)"""
    global _wide, _limits
    with _lock:
        if _wide == 0:
            _limits = _controller().limit(limits=n, user_api="blas")
        _wide += 1
    try:
        yield
    finally:
        with _lock:
            _wide -= 1
            if _wide == 0 and _limits is not None:
                _limits.restore_original_limits()
                _limits = None


def blas_threads(n: int) -> AbstractContextManager[None]:
    """A context running numpy's BLAS on ``n`` threads (the process default, one, outside it).

    A bundled-model pass that overlaps a large model's also gets ``n`` threads for that while, which
    costs it nothing worse than a little contention."""
    return _counted(n) if n > 1 else nullcontext()
