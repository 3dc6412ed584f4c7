"""Runs the engine off the event loop and hands its events to async code as they happen.

The engine is synchronous numpy work; it runs in a small thread pool so the event loop
keeps serving other sockets. The number of runs admitted at once is bounded: past the
bound a caller gets ``overloaded_error`` instead of an ever-growing queue.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import AsyncIterator

from django.conf import settings

from explainer.lifecycle.engine import Cancelled, Engine
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.gateway import overloaded
from explainer.lifecycle.payload import MessagesRequest

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return Engine()


@lru_cache(maxsize=1)
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=settings.EXPLAINER_ENGINE_WORKERS, thread_name_prefix="engine")


_admitted = 0
_admitted_lock = threading.Lock()


def max_admitted() -> int:
    return settings.EXPLAINER_ENGINE_WORKERS + settings.EXPLAINER_ENGINE_QUEUE


async def run_events(req: MessagesRequest, seed: int, cancel: threading.Event) -> AsyncIterator[dict]:
    """Yield the engine's events for ``req``; an APIError is yielded as an error envelope."""
    global _admitted
    with _admitted_lock:
        if _admitted >= max_admitted():
            yield overloaded().body()
            return
        _admitted += 1
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down): stop quietly
            cancel.set()

    def work() -> None:
        try:
            engine = get_engine()
            for event in engine.stream(req, seed=seed, cancelled=cancel.is_set, prompt_cache=engine.prompt_cache):
                put(event)
        except APIError as exc:
            put(exc.body())
        except Cancelled:
            pass
        except Exception:  # a bug, not bad input: log it, tell the client without details
            log.exception("engine run failed")
            put(APIError("api_error", "Internal error while generating.").body())
        put(done)

    try:
        future = loop.run_in_executor(_executor(), work)
        while (event := await queue.get()) is not done:
            yield event
        await future
    finally:
        cancel.set()
        with _admitted_lock:
            _admitted -= 1
