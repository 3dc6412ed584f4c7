"""Runs the engine off the event loop and hands its events to async code as they happen.

The engine is synchronous numpy work; it runs in a small thread pool so the event loop
keeps serving other sockets. The number of runs admitted at once is bounded: past the
bound a caller gets ``overloaded_error`` instead of an ever-growing queue.

The engine's thread and the event loop share one interpreter lock, so every wake-up of the
loop is time taken from the engine. The loop is woken once per *batch*: the engine's thread
adds events to a list and wakes the loop only when the list was empty and unclaimed; events
that arrive while the loop is busy with the previous batch wait in the list and travel with
the next one.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import AsyncIterator, Callable

from django.conf import settings

from explainer.lifecycle.engine import Cancelled, Engine
from explainer.llm.catalog import BUNDLED_NAME, Catalog
from explainer.llm.interface import ModelLoadError
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.gateway import overloaded
from explainer.lifecycle.payload import MessagesRequest

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The bundled model's engine: what every Claude model name is answered by."""
    return Engine()


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    return Catalog(settings.EXPLAINER_MODELS_DIR, max_context=settings.EXPLAINER_MAX_CONTEXT)


_engines: dict[tuple[str, str], Engine] = {}
_engines_lock = threading.Lock()


def is_local_model(name: str | None) -> bool:
    """Does ``name`` name a model installed in the models directory (not a Claude name, not the bundled one)?"""
    return bool(name) and not name.startswith("claude-") and name != BUNDLED_NAME and catalog().has(name)


def engine_for(model_name: str | None) -> Engine:
    """The engine that answers ``model_name``: an installed local model's, else the bundled one.

    Raises ModelLoadError when the named folder is installed but cannot be opened.
    """
    if not is_local_model(model_name):
        return get_engine()
    loaded = catalog().load(model_name)
    key = (loaded.name, loaded.fingerprint)
    with _engines_lock:
        engine = _engines.pop(key, None)
        if engine is None or engine.loaded is not loaded:  # first use, or the catalog opened the folder again
            engine = Engine(loaded)
        _engines[key] = engine  # most recently used last
        while len(_engines) > catalog().keep:  # as many as the catalog keeps open
            _engines.pop(next(iter(_engines)))
        return engine


@lru_cache(maxsize=1)
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=settings.EXPLAINER_ENGINE_WORKERS, thread_name_prefix="engine")


_admitted = 0
_admitted_lock = threading.Lock()


def admitted() -> int:
    """Runs holding an engine slot now (running or waiting for a worker)."""
    return _admitted


def max_admitted() -> int:
    return settings.EXPLAINER_ENGINE_WORKERS + settings.EXPLAINER_ENGINE_QUEUE


class _Handoff:
    """Events from the engine's thread to the event loop, with one wake-up per batch.

    The engine's thread wakes the loop only when it is not already due to look: events that
    arrive meanwhile join the batch it will take. With a ``hold`` (seconds), after taking a
    batch the loop is left alone for that long while the engine's events collect (a timer
    wakes it), so a steady stream of events crosses in a few larger batches. An event that
    follows a quiet spell of at least ``hold``, the reply's first output, an error, and the end
    of the run still wake the loop at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, cancel: threading.Event, hold: float = 0.0):
        self.loop, self.cancel, self.hold = loop, cancel, hold
        self.ready = asyncio.Event()
        self.lock = threading.Lock()
        self.pending: list = []
        self.waking = False  # a wake-up is on its way, or the loop is holding: the engine's thread need not wake it
        self.last_put = float("-inf")
        self.timer: asyncio.TimerHandle | None = None

    def put(self, item, urgent: bool = False) -> None:  # engine thread
        if self.hold > 0:
            now = time.perf_counter()
            urgent = urgent or now - self.last_put >= self.hold
            self.last_put = now
        else:
            urgent = False  # without a hold the loop takes every batch as soon as it can anyway
        with self.lock:
            self.pending.append(item)
            if self.waking and not urgent:
                return
            self.waking = True
        try:
            self.loop.call_soon_threadsafe(self.ready.set)
        except RuntimeError:  # the event loop is gone (server shutting down): stop quietly
            self.cancel.set()

    async def take(self) -> list:  # event loop
        if self.timer is not None:  # holding since the last take: until the timer, or an urgent event
            await self.ready.wait()
            self.ready.clear()
            self.timer.cancel()
            self.timer = None
        while True:
            with self.lock:
                if self.pending:
                    batch, self.pending = self.pending, []
                    self.waking = self.hold > 0
                    break
                self.waking = False
            await self.ready.wait()  # may be a stale wake-up, whose events an earlier take already had
            self.ready.clear()
        if self.hold > 0:
            self.timer = self.loop.call_later(self.hold, self.ready.set)
        return batch

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


_DONE = object()


async def run_batches(req: MessagesRequest, seed: int, cancel: threading.Event, *,
                      observe: Callable[[dict], None] | None = None,
                      keep: Callable[[dict], bool] | None = None,
                      finished: Callable[[], None] | None = None,
                      hold: float = 0.0) -> AsyncIterator[list[dict]]:
    """Yield the engine's events for ``req`` as lists of the events ready at each wake-up, in order.

    An APIError becomes an error envelope, the run's last event. ``observe(event)`` runs in the
    engine's thread for every engine event; only events where ``keep(event)`` is true reach the
    event loop. ``finished()`` runs in the engine's thread once it has stopped (after the last
    ``observe``), also when the run was cancelled. With ``hold`` (seconds), a steady stream of
    events is taken at most every ``hold`` seconds (fewer, larger batches; an event waits at
    most that long); see ``_Handoff``.
    """
    global _admitted
    with _admitted_lock:
        if _admitted >= max_admitted():
            if finished is not None:
                finished()
            yield [overloaded().body()]
            return
        _admitted += 1
    released = threading.Event()

    def release() -> None:
        # The slot is the engine's: it is free as soon as the engine stops, however slowly the
        # caller then reads the events (a paced socket replays a finished run for minutes).
        global _admitted
        with _admitted_lock:
            if not released.is_set():
                released.set()
                _admitted -= 1

    loop = asyncio.get_running_loop()
    handoff = _Handoff(loop, cancel, hold)
    put = handoff.put

    def work() -> None:
        try:
            engine = engine_for(req.model)
            first_delta = True
            for event in engine.stream(req, seed=seed, cancelled=cancel.is_set, prompt_cache=engine.prompt_cache):
                if observe is not None:
                    observe(event)
                if keep is None or keep(event):
                    urgent = first_delta and event["type"] == "content_block_delta"  # the reply's first output goes at once
                    first_delta = first_delta and not urgent
                    put(event, urgent)
        except APIError as exc:
            put(exc.body(), urgent=True)
        except ModelLoadError as exc:  # an installed folder that no longer opens: say why, as the API does
            put(APIError("invalid_request_error", f"model: {req.model} is installed but cannot be opened: {exc}").body(), urgent=True)
        except Cancelled:
            pass
        except Exception:  # a bug, not bad input: log it, tell the client without details
            log.exception("engine run failed")
            put(APIError("api_error", "Internal error while generating.").body(), urgent=True)
        finally:
            release()
            if finished is not None:
                try:
                    finished()
                except Exception:
                    log.exception("run_batches: finished() failed")
        put(_DONE, urgent=True)

    try:
        future = loop.run_in_executor(_executor(), work)
        while True:
            batch = await handoff.take()
            if batch[-1] is _DONE:
                if len(batch) > 1:
                    yield batch[:-1]
                break
            yield batch
        await future
    finally:
        handoff.close()
        cancel.set()
        if "future" not in locals():  # closed before the engine's work was even handed over
            release()


async def run_events(req: MessagesRequest, seed: int, cancel: threading.Event, **options) -> AsyncIterator[dict]:
    """Yield the engine's events for ``req``, one at a time; an APIError is yielded as an error envelope.

    ``options`` are ``run_batches``'s.
    """
    batches = run_batches(req, seed, cancel, **options)
    try:
        async for batch in batches:
            for event in batch:
                yield event
    finally:
        await batches.aclose()
