"""A run's budget: a deadline and a cancel flag that long work checks between its steps.

Work on untrusted input (a model folder's tokenizer and chat template, a prompt of any length, a
local model's forward pass) runs in worker threads, and a thread cannot be killed from outside.
So the work itself looks at its budget often: the tokenizer per chunk, the chat template per loop
iteration and call, the model per layer, the engine per token. The caller states the budget once
for the thread (:func:`running`); the code deep below calls :func:`check` without being handed
anything, and a thread that runs no budgeted work pays one attribute lookup per check.

Example:
    >>> import threading
    >>> stop = threading.Event()
    >>> with running(Budget(seconds=None, cancel=stop)):
    ...     check()            # nothing to say yet
    ...     stop.set()
    ...     try:
    ...         check()
    ...     except Interrupted as exc:
    ...         print(exc.reason)
    cancelled
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class Interrupted(Exception):
    """Work stopped before it finished: ``reason`` is "cancelled" (the caller went away or the server
    is stopping) or "deadline" (the run took longer than its budget allows)."""

    def __init__(self, reason: str, seconds: float | None = None):
        self.reason, self.seconds = reason, seconds
        if reason == "deadline":
            message = f"the request ran past its time limit of {seconds:g} seconds" if seconds else "the request ran past its time limit"
        else:
            message = "the request was cancelled"
        super().__init__(message)


@dataclass
class Budget:
    """At most ``seconds`` from now (None: no limit), and stop as soon as ``cancel`` is set."""

    seconds: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.deadline = None if self.seconds is None else time.monotonic() + self.seconds

    def check(self) -> None:
        if self.cancel.is_set():
            raise Interrupted("cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Interrupted("deadline", self.seconds)

    def left(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


_local = threading.local()


def current() -> Budget | None:
    """The budget of the work running in this thread, if any."""
    return getattr(_local, "budget", None)


def check() -> None:
    """Raise :class:`Interrupted` if this thread's work is cancelled or past its deadline."""
    budget = getattr(_local, "budget", None)
    if budget is not None:
        budget.check()


@contextmanager
def running(budget: Budget | None) -> Iterator[Budget | None]:
    """Run the body under ``budget`` in this thread (nested budgets: the inner one counts, then the outer again)."""
    outer = getattr(_local, "budget", None)
    _local.budget = budget
    try:
        yield budget
    finally:
        _local.budget = outer
