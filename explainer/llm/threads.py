"""BLAS threads per model: one for the bundled model (its matrices are small, and requests run side by
side), every core for a large model's pass (its matrices are large enough to split)."""
from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # Finding the loaded BLAS libraries reads the process's memory map (about 3 ms): once, not per pass.
    return ThreadpoolController()


def blas_threads(n: int):
    """A context running numpy's BLAS on ``n`` threads (the process default, one, outside it).

    It is process-wide: a bundled-model pass that overlaps a large model's also gets ``n``
    threads for that while, which costs it nothing worse than a little contention."""
    return _controller().limit(limits=n, user_api="blas") if n > 1 else nullcontext()
