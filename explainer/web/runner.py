"""Runs the engine and every other piece of model work off the event loop, bounded, and stops it all on shutdown.

The engine is synchronous numpy work; it runs in thread pools so the event loop keeps serving
other sockets. Work is admitted per *lane*: the bundled model, which answers every Claude name,
has its own workers and queue (``EXPLAINER_ENGINE_WORKERS``, ``EXPLAINER_ENGINE_QUEUE``); the local
models share a smaller pool of their own (``EXPLAINER_LOCAL_WORKERS``, ``EXPLAINER_LOCAL_QUEUE``),
where everything that opens or runs a local model happens: API runs, the stage pages, the model
cards, the tutorial's checks. A local model's folder is untrusted and may be slow on purpose, so its
work can fill only its own lane, never delay the bundled model's. Past a lane's bound a caller gets
``overloaded_error`` (a page: a 503) instead of an ever-growing queue.

Every piece of work runs under a budget (``explainer.llm.budget``): the request's deadline
(``EXPLAINER_REQUEST_TIMEOUT_S``) and a cancel flag, which the engine, the model's layers and the
tokenizer check between steps. Past the deadline a run ends with ``timeout_error`` (504). On
SIGTERM every flag is set: the workers are free within a step, a stream that was cut ends with an
``error`` event, and the process exits (``stop_with_the_server``).

The engine's thread and the event loop share one interpreter lock, so every wake-up of the
loop is time taken from the engine. The loop is woken once per *batch*: the engine's thread
adds events to a list and wakes the loop only when the list was empty and unclaimed; events
that arrive while the loop is busy with the previous batch wait in the list and travel with
the next one.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial, wraps

from asgiref.sync import sync_to_async
from django.conf import settings

from explainer.lifecycle import frames as fr
from explainer.lifecycle.engine import Engine
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import MessagesRequest
from explainer.llm.budget import Budget, Interrupted, check, running
from explainer.llm.catalog import BUNDLED_NAME, Catalog
from explainer.llm.interface import ModelBusy, ModelLoadError
from explainer.web import services
from explainer.web.services import Lane

log = logging.getLogger(__name__)


def get_engine() -> Engine:
    """The bundled model's engine: what every Claude model name is answered by."""
    return services.current().engine


def catalog() -> Catalog:
    """The local models' catalog (their folders, the open ones, their memory budget)."""
    return services.current().catalog


def is_local_model(name: str | None) -> bool:
    """Does ``name`` name a model installed in the models directory (not a Claude name, not the bundled one)?"""
    return bool(name) and not name.startswith("claude-") and name != BUNDLED_NAME and catalog().has(name)


def engine_for(model_name: str | None) -> Engine:
    """The engine that answers ``model_name``: an installed local model's, else the bundled one.

    Opening a local model reads and checks its folder (seconds for a large one): call this in a
    worker of the local lane (``call``, ``model_view``, ``run_batches``), never on the event loop.
    The engine is kept with its open model (``Catalog.attach``), so it goes, prompt cache and all,
    when the catalog closes the model to stay within its memory budget.
    Raises ModelLoadError when the named folder is installed but cannot be opened.
    """
    if not is_local_model(model_name):
        return get_engine()
    cat = catalog()
    return cat.attach(cat.load(model_name), "engine", Engine)


@contextmanager
def _holding(model) -> Iterator[None]:
    """Keep a local model open (never closed to make room for another) while work on it runs. A folder that
    does not open is left to the work to report, in its own words."""
    with ExitStack() as stack:
        if isinstance(model, str) and is_local_model(model):
            check()  # a run cancelled or past its deadline while it waited for a worker opens nothing
            try:
                stack.enter_context(catalog().using(model))
            except ModelLoadError:
                pass
        yield


# ---- budgets: the request's deadline, and stopping everything -----------------------------------

def request_timeout() -> float | None:
    """Seconds a request may run (``EXPLAINER_REQUEST_TIMEOUT_S``); None (0 or less): no limit."""
    seconds = float(getattr(settings, "EXPLAINER_REQUEST_TIMEOUT_S", 60))
    return seconds if seconds > 0 else None


def request_budget(cancel: threading.Event | None = None) -> Budget:
    """A budget for one request: the deadline from now, and ``cancel`` (a new flag by default).

    Shutdown sets the flag of every budget alive (``shut_down``); one made after it starts out cancelled.
    """
    b = Budget(request_timeout(), cancel if cancel is not None else threading.Event())
    services.current().stop.watch(b.cancel)
    return b


def stopping() -> bool:
    """Has the server begun to shut down?"""
    return services.current().stop.is_set()


def timed_out(seconds: float | None) -> APIError:
    """The 504 of a request that ran past its deadline: the public API's ``timeout_error``."""
    limit = f" of {seconds:g} seconds" if seconds else ""
    return APIError("timeout_error", f"The request ran past this server's time limit{limit}, so it was stopped "
                    "(a shorter prompt or a smaller max_tokens may fit).", status=504)


def shutting_down() -> APIError:
    """What a run cut by shutdown ends with: ``overloaded_error``, as the public API ends an overloaded stream
    (the SDKs retry it, on a server that is up)."""
    return APIError("overloaded_error", "This server is restarting, so the request was stopped before it finished; retry it.",
                    headers={"retry-after": "5"})


def interrupted(exc: Interrupted) -> APIError:
    """The client's error for work its budget stopped."""
    return timed_out(exc.seconds) if exc.reason == "deadline" else shutting_down()


# ---- lanes: workers and admission per kind of model --------------------------------------------

LOCAL_MODELS = object()  # for ``call`` and ``model_view``: work on the local models as a whole (a listing of them)


def lane_for(model) -> Lane:
    """The local models' lane for a local model's name (or LOCAL_MODELS); the bundled model's for anything else."""
    s = services.current()
    return s.local if model is LOCAL_MODELS or (isinstance(model, str) and is_local_model(model)) else s.bundled


def admitted() -> int:
    """Engine runs and local-model work holding a place now (running or waiting for a worker), in every lane."""
    return services.current().admitted()


def max_admitted() -> int:
    """Runs the bundled model's lane admits at once."""
    return services.current().bundled.capacity()


async def call(model, fn: Callable, *args, budget: Budget | None = None):
    """``fn(*args)`` in a worker thread, under ``budget`` (the request's deadline by default), and its result.

    For a local model (or LOCAL_MODELS) the worker is the local lane's, and the work takes a place
    there: past the lane's bound this raises the lane's ``overloaded_error`` at once. Other work (it is
    the bundled model's, quick) runs in a small pool of its own. Work its budget stops raises the
    client's error (``interrupted``); if the caller is cancelled, the budget's flag stops the work.
    """
    s = services.current()
    lane = s.local if lane_for(model) is s.local else None
    b = budget or request_budget()
    if lane is not None and not lane.enter():
        raise shutting_down() if s.stop.is_set() else lane.busy()

    def work():
        try:
            with running(b):
                b.check()  # it may have waited for a worker past its deadline, or its caller left: open nothing
                with _holding(model):
                    return fn(*args)
        finally:
            if lane is not None:
                lane.leave()

    try:
        job = (lane.executor() if lane else s.work).submit(work)
    except RuntimeError:  # the pool is shut down: the interpreter is exiting
        if lane is not None:
            lane.leave()
        raise shutting_down() from None
    if lane is not None:
        # A caller that goes away while its work still waits for a worker cancels the job, which then never
        # runs: its place is given back here (work() gives it back when it does run).
        job.add_done_callback(lambda f: lane.leave() if f.cancelled() else None)
    try:
        return await asyncio.wrap_future(job)
    except Interrupted as exc:
        raise interrupted(exc) from None
    except ModelBusy:
        raise s.local.busy() from None
    except asyncio.CancelledError:
        b.cancel.set()
        raise


def submit(model, fn: Callable, *args) -> bool:
    """Start ``fn(*args)`` in a worker of ``model``'s lane under a request's budget, and return at once: for
    work a synchronous view need not wait for (its result is stored somewhere). False when the lane is full."""
    s = services.current()
    lane = s.local if lane_for(model) is s.local else None
    if lane is not None and not lane.enter():
        return False
    b = request_budget()

    def work():
        try:
            with running(b):
                b.check()
                with _holding(model):
                    fn(*args)
        except (Interrupted, ModelBusy):
            pass
        finally:
            if lane is not None:
                lane.leave()
    try:
        (lane.executor() if lane else s.work).submit(work)
    except RuntimeError:  # the interpreter is exiting
        if lane is not None:
            lane.leave()
        return False
    return True


def model_view(model_of: Callable, refuse: Callable, long: Callable[..., bool] | None = None):
    """Make a synchronous view that shows a model's work run where that model's work belongs.

    ``model_of(request, *args, **kwargs)`` names the model the request is about, cheaply and without
    opening anything (a name, LOCAL_MODELS, or None for the bundled model). For a local model the view
    runs in the local lane (``call``); for the bundled one where Django runs every synchronous view, on
    its one thread for them, as before, unless ``long(request, *args, **kwargs)`` says this request's
    work takes seconds (the Serving stage runs many requests to record them): then in the bundled
    model's own small pool (``call``), so the other pages do not wait behind it. Either way under the
    request's budget; work the lane cannot take, or that its budget stopped, is
    ``refuse(request, api_error)``'s answer (a page, or JSON).
    """
    def deco(view):
        def budgeted(request, *args, **kwargs):
            with running(request_budget()):
                try:
                    return view(request, *args, **kwargs)
                except Interrupted as exc:
                    return refuse(request, interrupted(exc))

        @wraps(view)
        async def wrapper(request, *args, **kwargs):
            try:
                model = model_of(request, *args, **kwargs)
            except Exception:  # a link that does not decode: the view itself says what is wrong with it
                model = None
            if lane_for(model) is services.current().local or (long is not None and long(request, *args, **kwargs)):
                try:
                    return await call(model, partial(view, request, *args, **kwargs))
                except APIError as exc:
                    return refuse(request, exc)
            return await sync_to_async(budgeted, thread_sensitive=True)(request, *args, **kwargs)
        return wrapper
    return deco


def _page_status(exc: APIError, resp):
    """A page says 503 where the API says 529 (browsers and proxies know 503), with when to try again."""
    if resp.status_code == 503:
        resp["Retry-After"] = exc.headers.get("retry-after", "5")
    return resp


def refused_page(request, exc: APIError):
    """A page's answer to work that could not run or was stopped: the error page, 503 (busy, stopping) or 504."""
    from explainer.web.pages import error_page  # pages imports this module

    status = 503 if exc.status == 529 else exc.status
    title = "This page took too long" if status == 504 else "Busy: try again in a few seconds"
    return _page_status(exc, error_page(request, status, title, exc.message))


def refused_json(shape: Callable[[APIError], dict] = lambda exc: {"error": {"type": exc.type, "message": exc.message}}):
    """The refusal of a JSON endpoint: ``shape(api_error)`` as JSON, 503 (busy, stopping) or 504."""
    from django.http import JsonResponse

    def refuse(request, exc: APIError):
        return _page_status(exc, JsonResponse(shape(exc), status=503 if exc.status == 529 else exc.status))
    return refuse


# ---- engine runs ---------------------------------------------------------------------------------

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
_live_runs = 0  # run_batches generators not yet closed: their callers may still be sending events


def _stream(req: MessagesRequest, seed: int, cancel: threading.Event, put: Callable, observe: Callable[[dict], None] | None,
            keep: Callable[[dict], bool] | None, label: str = "", n_candidates: int = 10) -> None:
    """The engine's run of ``req``, in the lane's worker: every event to ``observe``, the kept ones to ``put``."""
    engine = engine_for(req.model)  # here, in the lane's worker: opening a local model takes seconds
    first_delta = True
    for event in engine.stream(req, seed=seed, cancelled=cancel.is_set, prompt_cache=engine.prompt_cache, label=label,
                               n_candidates=n_candidates):
        if observe is not None:
            observe(event)
        if keep is None or keep(event):
            urgent = first_delta and event["type"] == fr.CONTENT_BLOCK_DELTA  # the reply's first output goes at once
            first_delta = first_delta and not urgent
            put(event, urgent)


def _error_event(exc: Exception, model: str | None, s: services.Services) -> dict | None:
    """The error envelope that ends a run stopped by ``exc``; None when there is nobody to tell (the caller left)."""
    if isinstance(exc, APIError):
        return exc.body()
    if isinstance(exc, ModelLoadError):  # an installed folder that no longer opens: say why, as the API does
        return APIError("invalid_request_error", f"model: {model} is installed but cannot be opened: {exc}").body()
    if isinstance(exc, ModelBusy):  # the models in use hold the memory it needs: try again in a moment
        return s.local.busy().body()
    if isinstance(exc, Interrupted):  # the caller left (nothing to say), the deadline passed, or the server is stopping
        return interrupted(exc).body() if exc.reason == "deadline" or s.stop.is_set() else None
    # a bug, not bad input: log it, tell the client without details
    log.error("engine run failed", exc_info=exc)
    return APIError("api_error", "Internal error while generating.").body()


def _call_quietly(fn: Callable[[], None] | None) -> None:
    """``fn()`` if there is one; a failure is logged, never raised into the run's clean-up."""
    if fn is None:
        return
    try:
        fn()
    except Exception:
        log.exception("run_batches: finished() failed")


async def run_batches(req: MessagesRequest, seed: int, cancel: threading.Event, *,
                      observe: Callable[[dict], None] | None = None,
                      keep: Callable[[dict], bool] | None = None,
                      finished: Callable[[], None] | None = None,
                      hold: float = 0.0, budget: Budget | None = None, label: str = "",
                      n_candidates: int = 10) -> AsyncIterator[list[dict]]:
    """Yield the engine's events for ``req`` as lists of the events ready at each wake-up, in order.

    The run takes a place in its model's lane (``lane_for``); a full lane is an ``overloaded_error``
    envelope, the only event. An APIError becomes an error envelope, the run's last event; so does a
    run past its deadline (``timeout_error``) and one cut by shutdown (``overloaded_error``). A run
    whose caller went away (``cancel``) just stops. The run's budget is ``budget`` (whose flag must
    be ``cancel``), by default one made now. ``observe(event)`` runs in the engine's thread for every
    engine event; only events where ``keep(event)`` is true reach the event loop. ``finished()`` runs
    in the engine's thread once it has stopped (after the last ``observe``), also when the run was
    cancelled. With ``hold`` (seconds), a steady stream of events is taken at most every ``hold``
    seconds (fewer, larger batches; an event waits at most that long); see ``_Handoff``. ``label`` names the
    request in its model's batch scheduler's record (``Engine.stream``), for whoever shows that record.
    ``n_candidates``: the candidate rows each token frame carries (an API call's trace keeps five).
    """
    global _live_runs
    s = services.current()
    lane = lane_for(req.model)
    if not lane.enter():
        if finished is not None:
            finished()
        yield [(shutting_down() if s.stop.is_set() else lane.busy()).body()]
        return
    run_budget = budget if budget is not None else request_budget(cancel)
    released = threading.Event()

    def release() -> None:
        # The place is the engine's: it is free as soon as the engine stops, however slowly the
        # caller then reads the events (a paced socket replays a finished run for minutes).
        if not released.is_set():
            released.set()
            lane.leave()

    loop = asyncio.get_running_loop()
    handoff = _Handoff(loop, cancel, hold)
    put = handoff.put

    def work() -> None:
        try:
            with running(run_budget), _holding(req.model):  # _holding checks the budget before it opens anything
                _stream(req, seed, cancel, put, observe, keep, label, n_candidates)
        except Exception as exc:
            error = _error_event(exc, req.model, s)
            if error is not None:
                put(error, urgent=True)
        finally:
            release()
            _call_quietly(finished)
        put(_DONE, urgent=True)

    _live_runs += 1
    try:
        try:
            future = loop.run_in_executor(lane.executor(), work)
        except RuntimeError:  # the pool is shut down: the interpreter is exiting
            release()
            if finished is not None:
                finished()
            yield [shutting_down().body()]
            return
        while True:
            batch = await handoff.take()
            if batch[-1] is _DONE:
                if len(batch) > 1:
                    yield batch[:-1]
                break
            yield batch
        await future
    finally:
        _live_runs -= 1
        handoff.close()
        cancel.set()
        run_budget.cancel.set()
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


# ---- stopping --------------------------------------------------------------------------------------

DRAIN_SECONDS = 2.0  # at most this long for cut streams to send their last event before the server stops
EXIT_SECONDS = 4.0  # after SIGTERM, a process still alive then exits at once (a thread stuck in C code)


def shut_down() -> None:
    """Stop all work: no new work is admitted, and every budget's flag is set, so each worker stops within a step.

    A cut run ends with ``shutting_down``'s error event. Safe to call more than once, from any thread."""
    services.current().stop.set()


_exit_armed = threading.Event()  # set by the signal: the watchdog's countdown starts


def _start_watchdog(seconds: float) -> None:
    """A thread that exits the process ``seconds`` after ``_exit_armed`` is set, if it is still alive then: the last
    resort when a worker thread is stuck where no flag is looked at (inside one long C call), which the
    interpreter's exit would wait for. It waits from the start, so the signal handler only sets an event
    (no thread is started, no lock taken, wherever the signal interrupted the process)."""
    def run():
        _exit_armed.wait()
        time.sleep(seconds)
        log.warning("still running %.0f s after the signal to stop (a worker is stuck): exiting now", seconds)
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:
                pass
        os._exit(1)
    threading.Thread(target=run, name="exit-watchdog", daemon=True).start()


async def _drain(then: Callable[[], None]) -> None:
    """Wait until every engine has stopped and every run's caller has taken its last events (a cut stream's
    error event), at most DRAIN_SECONDS, then ``then()``."""
    deadline = time.monotonic() + DRAIN_SECONDS
    try:
        while (admitted() or _live_runs) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the last writes leave the server
    finally:
        then()


def stop_with_the_server() -> None:
    """Under Daphne: make SIGTERM (and SIGINT) stop the work first, then the server, and exit within seconds.

    Daphne runs Twisted, whose handler stops the reactor; Daphne then cancels its connections'
    tasks. Without more, the interpreter's exit then waits for the worker threads, which run as
    long as their work (a local model's prefill: minutes). Once the reactor runs (its handlers
    are installed then), the handler is wrapped: on the signal a watchdog is armed (EXIT_SECONDS),
    ``shut_down`` cancels all work, and Twisted's handler runs once the cut streams have sent
    their error event (``_drain``). A second signal stops at once. Whatever the server, the
    interpreter's exit also cancels all work before it waits for the threads.
    """
    register = getattr(threading, "_register_atexit", None)  # runs before concurrent.futures joins its threads
    if register is not None:
        try:
            register(shut_down)
        except RuntimeError:  # the interpreter is already exiting
            pass
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is not None and hasattr(reactor, "callWhenRunning"):
        _start_watchdog(EXIT_SECONDS)
        reactor.callWhenRunning(_wrap_signal_handlers, reactor)


def _wrap_signal_handlers(reactor) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            previous = signal.getsignal(signum)
            if getattr(previous, "__self__", None) is reactor:  # Twisted's own (reactor.sigTerm, reactor.sigInt) only
                signal.signal(signum, _handler(reactor, previous))
        except ValueError:  # not the main thread: leave the signals as they are
            return


def _handler(reactor, previous: Callable):
    def on_signal(signum, frame):
        if stopping():  # a second signal: stop now
            previous(signum, frame)
            return
        # The handler may have interrupted the loop's thread anywhere, even holding a lock that shutting down
        # takes: it only arms the watchdog and asks the loop, as Twisted's own handler does; the loop does the rest.
        _exit_armed.set()
        reactor.callFromThread(_begin_stopping, signum, previous)
    return on_signal


def _begin_stopping(signum: int, previous: Callable) -> None:
    if stopping():
        return
    log.info("signal %s: stopping the work, then the server", signum)
    shut_down()
    asyncio.ensure_future(_drain(lambda: previous(signum, None)))
