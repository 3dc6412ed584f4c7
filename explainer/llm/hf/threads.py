"""BLAS threads per model: one for the bundled model (its matrices are small, and requests run side by
side), every core for a large model's pass (its matrices are large enough to split)."""
from __future__ import annotations

from contextlib import nullcontext

from threadpoolctl import threadpool_limits


def blas_threads(n: int):
    """A context running numpy's BLAS on ``n`` threads (the process default, one, outside it).

    Entering costs about 0.3 ms, so it wraps a whole forward pass, never a single product."""
    return threadpool_limits(n, user_api="blas") if n > 1 else nullcontext()
