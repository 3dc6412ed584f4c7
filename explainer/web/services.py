"""The app's long-lived parts, built once from the settings and handed to what needs them.

One :class:`Services` holds what every request shares: the bundled model's engine (which answers
every Claude model name), the catalog of local models and its memory budget, the two lanes of
model work with their workers and admission bounds, the small pools for quick bundled work, for the
API's tokenizing and for writing traces, the API's limit on wrong keys, the size of the page caches'
shared budget (``EXPLAINER_CACHE_MB``; the caches themselves are memo tables of the stage pages, which
register with the process's one budget, ``lifecycle.lru.BUDGET``) and the shutdown state (the flag,
and the cancel flag of every budget alive). It is built from the
settings at start-up (``explainer.asgi`` calls :func:`start`, before the first request), or on
first use in a process that never started the server (``manage.py`` commands, the test client).

Nothing here is configured at import time: the settings are read when the object is built, so a
test builds its own with its own settings and installs it (:func:`installed`), and the previous
one comes back afterwards; no ``cache_clear()``, no private globals.

Example (in a test):
    >>> from explainer.web import services
    >>> with services.installed(services.Services.from_settings()) as s:  # doctest: +SKIP
    ...     s.bundled.capacity()
"""
from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from explainer.lifecycle import lru
from explainer.lifecycle.engine import Engine, share_automata
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.gateway import FailureLimiter, overloaded
from explainer.llm import batching
from explainer.llm.catalog import Catalog


class Lane:
    """Worker threads and an admission bound for one kind of model work.

    ``admitted`` counts the pieces of work holding a place: running, or waiting for a worker. A place
    is freed by the worker itself as soon as the work stops, however slowly the caller then reads.
    """

    def __init__(self, name: str, workers: int, queue: int, busy: Callable[[], APIError], stop: Stop, nice: int = 0):
        self.name, self.n_workers, self.queue, self.busy, self.nice, self.stop = name, workers, queue, busy, nice, stop
        self.admitted = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def workers(self) -> int:
        return self.n_workers

    def capacity(self) -> int:
        return self.n_workers + self.queue

    def enter(self) -> bool:
        """Take a place, if there is one (never while the server is stopping)."""
        with self._lock:
            if self.stop.is_set() or self.admitted >= self.capacity():
                return False
            self.admitted += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.admitted -= 1

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=max(1, self.n_workers), thread_name_prefix=f"{self.name}-model",
                                                initializer=_lower_priority, initargs=(self.nice,))
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _lower_priority(nice: int) -> None:
    """Give this worker thread a lower CPU priority (Linux schedules threads, and keeps a nice value per thread), so
    that on a busy machine the bundled model's work, the pages and the event loop get the cores first. Only this
    thread is lowered: the BLAS threads a large matrix product starts are not, which is why a local model's pass
    also leaves one core free (``explainer.llm.threads``)."""
    if nice > 0 and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
        except OSError:
            pass


def local_busy() -> APIError:
    return APIError("overloaded_error", "The workers for this server's local models are all busy; try again in a few seconds.",
                    headers={"retry-after": "5"})


class Stop:
    """Shutdown: a flag, and the cancel flag of every budget alive, which stopping sets."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._cancels: weakref.WeakSet[threading.Event] = weakref.WeakSet()
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return self._flag.is_set()

    def watch(self, cancel: threading.Event) -> None:
        """Set ``cancel`` when the server stops (at once if it already is stopping)."""
        with self._lock:
            self._cancels.add(cancel)
        if self._flag.is_set():
            cancel.set()

    def set(self) -> None:
        """Stop: set the flag, then every watched cancel flag (the work they belong to ends within a step)."""
        self._flag.set()
        with self._lock:
            flags = list(self._cancels)
        for flag in flags:
            flag.set()


@dataclass
class Services:
    """What the app builds once from its settings (see the module's docstring)."""

    engine: Engine
    catalog: Catalog
    stop: Stop
    bundled: Lane
    local: Lane
    key_failures: FailureLimiter  # wrong or missing API keys, per address and per key prefix (explainer.api.views)
    cache_bytes: int  # all page caches together (EXPLAINER_CACHE_MB)
    batch_max: int = batching.MAX_BATCH  # rows of a decode step at most (EXPLAINER_BATCH_MAX)
    kv_mb: float = 256.0  # every running request's KV cache together, per model (EXPLAINER_KV_MB)
    work: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="bundled-work"))
    tokenize: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="tokenize"))
    # One writer: its thread is joined when the interpreter exits, so traces queued before a shutdown still land.
    traces: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-writer"))

    @classmethod
    def from_settings(cls, settings: Any = None, engine: Engine | None = None, catalog: Catalog | None = None) -> Services:
        """Build from Django's settings (or any object with the same attributes). ``engine`` reuses a built
        bundled engine (building one loads the model and warms its caches), ``catalog`` a catalog and the
        models it has open."""
        if settings is None:
            from django.conf import settings as django_settings
            settings = django_settings
        get = lambda name, default: getattr(settings, name, default)  # noqa: E731
        stop = Stop()
        failures = max(1, int(get("EXPLAINER_AUTH_FAILURES_PER_MINUTE", 10)))
        return cls(
            engine=engine if engine is not None else Engine(),
            catalog=catalog if catalog is not None else Catalog(
                settings.EXPLAINER_MODELS_DIR, max_context=settings.EXPLAINER_MAX_CONTEXT, max_bytes=int(settings.EXPLAINER_MODELS_MB * 2**20)),
            stop=stop,
            bundled=Lane("bundled", int(get("EXPLAINER_ENGINE_WORKERS", 32)), int(get("EXPLAINER_ENGINE_QUEUE", 32)), overloaded, stop),
            local=Lane("local", int(get("EXPLAINER_LOCAL_WORKERS", 16)), int(get("EXPLAINER_LOCAL_QUEUE", 16)), local_busy, stop, nice=10),
            batch_max=int(get("EXPLAINER_BATCH_MAX", 32)),
            kv_mb=float(get("EXPLAINER_KV_MB", 256)),
            # a burst of twice the per-minute allowance, then a wrong key is a 429 without any lookup
            key_failures=FailureLimiter(capacity=2 * failures, per_minute=failures),
            cache_bytes=int(float(get("EXPLAINER_CACHE_MB", lru.DEFAULT_CACHE_MB)) * lru.MB),
        )

    def apply(self) -> None:
        """Set what is the process's, not this object's: the page caches' budget (shrinking them at once) and
        a fresh cache for the schema automata of constrained decoding, under that budget."""
        lru.BUDGET.configure(max_bytes=self.cache_bytes)
        share_automata()
        batching.configure(max_batch=self.batch_max, kv_budget_mb=self.kv_mb)
        for s in batching.schedulers():
            s.max_batch, s.kv_budget = batching.settings.max_batch, batching.settings.kv_budget_bytes

    def admitted(self) -> int:
        """Engine runs and local-model work holding a place now (running or waiting for a worker), in every lane."""
        return self.bundled.admitted + self.local.admitted

    def close(self) -> None:
        """Let the workers go (work already running finishes; nothing queued starts)."""
        for lane in (self.bundled, self.local):
            lane.close()
        for pool in (self.work, self.tokenize):
            pool.shutdown(wait=False, cancel_futures=True)
        self.traces.shutdown(wait=False)  # what is queued is still written


_current: Services | None = None
_lock = threading.Lock()


def current() -> Services:
    """The services of this process: built from the settings on first use if :func:`start` has not run."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = Services.from_settings()
                _current.apply()
    return _current


def start() -> Services:
    """Build the services now (the ASGI start-up: the model loads before the first request, not during it)."""
    return current()


@contextmanager
def installed(services: Services) -> Iterator[Services]:
    """Use ``services`` in this process while the block runs (a test's own), then the previous ones again."""
    global _current
    with _lock:
        previous, _current = _current, services
        services.apply()
    try:
        yield services
    finally:
        with _lock:
            _current = previous
            if previous is not None:
                previous.apply()
        services.close()
