"""Continuous batching: one scheduler per model runs the decode steps of every request that is decoding, together.

A request runs in its own thread, as before: it waits for a place in the KV-cache budget (``join``),
runs its prompt's prefill on its own (in chunks, see ``explainer.llm.hf.passes``), and from then on
each of its single-token passes is a *row* of the scheduler's next step (``Member.step``, which the
model's ``forward`` calls for a cache that has joined). The scheduler's thread waits until every
request of the last step has sent its next token (or ``GRACE`` seconds, so one slow request cannot
hold the others back), runs one step for all of them (``HFModel.decode``: one product per weight
matrix, each row with its own cache and position), and hands each request its row's logits. A request
joins at the first step after its prefill, and leaves the step it ends, is cancelled, or its client
goes away. A request that sends a ``Draw`` with its token (``Member.step_draw``: what the text reply's
sampler needs) gets its next token back too: the scheduler draws every row's token together, right
after the step, while the requests wait (``explainer.llm.sampling.draw_rows``, the same numbers as
one row at a time). Sixteen requests each drawing from a few thousand scores under the interpreter
lock, a few dozen numpy calls each, handed the lock to one another at every call; one pass over the
batch costs a fraction of that. Stop sequences, tool calls under a schema (their masks are the
request's) and the stream of events stay the request's own, in its own thread.

Each row's result is what it would be alone (``explainer.llm.layers.Dense.rows``), so a reply does
not depend on who else is being served.

The scheduler keeps a record of its recent steps and requests (``record``): what the Serving stage
shows, from the server's own run.

Example:
    >>> from explainer.llm.catalog import bundled
    >>> m = bundled().model
    >>> s = Scheduler(m)
    >>> a, b = m.new_cache(), m.new_cache()
    >>> _ = m.forward([1, 2, 3], cache=a), m.forward([4, 5], cache=b)
    >>> alone = m.decode([7], [a.copy()])[0]
    >>> with s.join(a, label="a"), s.join(b, label="b"):
    ...     row = m.forward([7], cache=a).logits[-1]
    >>> bool((row == alone).all()), s.record()["requests"][0]["tokens"]
    (True, 1)
    >>> s.close()
"""
from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from explainer.llm import budget
from explainer.llm.hf.cache import KVCache
from explainer.llm.sampling import Draw, Drawn, draw_rows

GRACE = 0.002  # seconds a step waits for the next of the last step's requests to send its token ...
GATHER_MAX = 0.025  # ... and at most this long in all (a slow request never holds the others back longer)
MAX_BATCH = 32  # rows per step at most; more requests decode in turns
HISTORY = 4000  # steps the record keeps (and requests: a quarter of that)
POLL = 0.05  # seconds between budget checks while a request waits for its row or its place
IDLE = 1.0  # seconds the scheduler's thread sleeps between looks when requests are admitted but none decodes


class BatchModel(Protocol):
    """What the scheduler needs of a model (``explainer.llm.hf.passes.HFModel`` has it)."""

    def decode(self, ids: list[int], caches: list[KVCache]) -> np.ndarray: ...

    def check_step(self, token: int, cache: Any) -> None: ...


@dataclass
class Settings:
    """The process's batching settings: the app's services set them from its configuration (``configure``)."""

    max_batch: int = MAX_BATCH
    kv_budget_bytes: int | None = 256 * 2**20  # every live request's KV cache together (None: no limit)
    grace: float = GRACE


settings = Settings()


def configure(max_batch: int | None = None, kv_budget_mb: float | None = None, grace: float | None = None) -> None:
    """Set the batching settings for schedulers made from now on (``kv_budget_mb`` 0 or less: no limit)."""
    if max_batch is not None:
        settings.max_batch = max(1, int(max_batch))
    if kv_budget_mb is not None:
        settings.kv_budget_bytes = int(kv_budget_mb * 2**20) if kv_budget_mb > 0 else None
    if grace is not None:
        settings.grace = max(0.0, float(grace))


@dataclass
class StepRecord:
    """One decode step: when it ran (seconds since the scheduler started), which requests it served, and
    the KV-cache bytes of the requests then admitted."""

    index: int
    start: float
    end: float
    rows: list[int]
    kv_bytes: int


@dataclass
class RequestRecord:
    """One request as the scheduler saw it: when it asked for a place, got it, sent its first row, left."""

    id: int
    label: str
    prompt_tokens: int
    kv_reserved: int  # bytes of KV cache set aside for it
    queued: float
    admitted: float | None = None
    first_step: float | None = None
    left: float | None = None
    tokens: int = 0  # rows it had in steps
    reason: str | None = None  # why it left: end, cancelled, error


class Member:
    """A request's place in the scheduler: its cache's decode steps are rows of the shared steps."""

    def __init__(self, scheduler: Scheduler, cache: KVCache, rec: RequestRecord):
        self.scheduler, self.cache, self.rec = scheduler, cache, rec
        self.token = 0
        self.draw: Draw | None = None
        self.drawn: Drawn | None = None
        self.result: np.ndarray | BaseException | None = None
        self.done = threading.Event()
        self.left = False

    @property
    def id(self) -> int:
        return self.rec.id

    def step(self, token: int) -> np.ndarray:
        """The logits [V] after ``token``: this request's row of the next step. Checks the run's budget while it
        waits, so a cancelled request stops waiting at once (its row, if already running, is dropped)."""
        return self._step(token, None)

    def serves(self, model: object) -> bool:
        """Is ``model`` the one whose steps this request's rows are?"""
        return self.scheduler._model() is model

    def step_draw(self, token: int, draw: Draw) -> tuple[np.ndarray, Drawn]:
        """``step``, and the next token drawn from the row's logits as ``draw`` says (with the step's other rows)."""
        logits = self._step(token, draw)
        assert self.drawn is not None
        return logits, self.drawn

    def _step(self, token: int, draw: Draw | None) -> np.ndarray:
        s = self.scheduler
        budget.check()
        s.model.check_step(token, self.cache)  # a bad row fails here, in its own request, never the batch
        if self.left:
            raise RuntimeError("this request has left the batch")
        self.token, self.draw, self.drawn, self.result = token, draw, None, None
        if s.alone(self):  # no other request is admitted: its step runs here, without a hand-over to the scheduler
            s.run_step([self])
        else:
            self.done.clear()
            s.submit(self)
            self.wait()
        result = self.result
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        return result

    def wait(self) -> None:
        """Until this request's row has run, checking the run's budget."""
        s = self.scheduler
        try:
            while not self.done.wait(POLL):
                budget.check()
        except BaseException:
            s.withdraw(self)
            raise

    def leave(self, reason: str = "end") -> None:
        """Leave the batch (the request ended, was cancelled, or failed) and give back its KV place."""
        self.scheduler.leave(self, reason)

    def __enter__(self) -> Member:
        self.cache.batch = self
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self.cache.batch is self:
            self.cache.batch = None
        reason = "end" if kind is None else ("cancelled" if issubclass(kind, (budget.Interrupted, GeneratorExit)) else "error")
        self.leave(reason)


class Scheduler:
    """Decode steps of every request of one model, run together (see the module's docstring)."""

    def __init__(self, model: BatchModel, max_batch: int | None = None, kv_budget_bytes: int | None | bool = True,
                 grace: float | None = None, on_step: Callable[[StepRecord], None] | None = None):
        # Weakly: the model's scheduler must not keep a closed model's weights alive (``scheduler_for``).
        self._model = weakref.ref(model)
        self.max_batch = max(1, max_batch or settings.max_batch)
        self.kv_budget = settings.kv_budget_bytes if kv_budget_bytes is True else (kv_budget_bytes or None)
        self.grace = settings.grace if grace is None else grace
        self.on_step = on_step
        self.epoch = time.perf_counter()
        self._cond = threading.Condition()
        self._pending: deque[Member] = deque()
        self._last: list[Member] = []
        self._ids = itertools.count(1)
        self._steps: deque[StepRecord] = deque(maxlen=HISTORY)
        self._requests: deque[RequestRecord] = deque(maxlen=HISTORY // 4)
        self._admitted: dict[int, Member] = {}
        self._queue: deque[int] = deque()  # ids waiting for a KV place, in arrival order
        self._kv_used = 0
        self._peak_kv = 0
        self._n_steps = 0
        self._last_submit = 0.0
        self._last_end = 0.0  # when the last step handed its rows back (time.monotonic())
        self._last_step_s = 0.0  # how long the last step took
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def model(self) -> BatchModel:
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this scheduler is closed")
        return model

    # ---- a request's side ---------------------------------------------------------------------------

    def now(self) -> float:
        return time.perf_counter() - self.epoch

    def join(self, cache: KVCache, label: str = "", prompt_tokens: int = 0, reserve_bytes: int = 0) -> Member:
        """A place for ``cache``'s request: waits (checking the run's budget) until ``reserve_bytes`` of KV cache
        fit the budget, first come first served. A request larger than the whole budget runs alone."""
        rec = RequestRecord(next(self._ids), label, prompt_tokens, reserve_bytes, self.now())
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._requests.append(rec)
            self._queue.append(rec.id)
            try:
                while not self._fits(rec):
                    self._cond.wait(POLL)
                    budget.check()
            except BaseException:
                self._queue.remove(rec.id)
                rec.left, rec.reason = self.now(), "cancelled"
                self._cond.notify_all()
                raise
            self._queue.popleft()
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            member = Member(self, cache, rec)
            self._admitted[rec.id] = member
            self._kv_used += reserve_bytes
            self._peak_kv = max(self._peak_kv, self._kv_used)
            rec.admitted = self.now()
            self._cond.notify_all()  # the next in the queue may fit too
        return member

    def _fits(self, rec: RequestRecord) -> bool:
        if self._queue[0] != rec.id:
            return False
        if self.kv_budget is None or not self._admitted:
            return True
        return self._kv_used + rec.kv_reserved <= self.kv_budget

    def submit(self, member: Member) -> None:
        with self._cond:
            self._pending.append(member)
            self._last_submit = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
                self._thread.start()
            # Wake the scheduler only when it has something to do: the first row (it waits for any), or the last
            # one it waits for. Every wake-up takes the interpreter lock from a request that is sampling, and
            # sixteen of them a step cost more than the step. (Otherwise it wakes when its ``grace`` runs out.)
            if len(self._pending) == 1 or len(self._pending) >= self.max_batch or not self._waiting():
                self._cond.notify_all()

    def _waiting(self) -> list[Member]:
        """The requests that are decoding and have not sent their next token yet."""
        return [m for m in self._admitted.values() if m.rec.first_step is not None and not m.left and m not in self._pending]

    def alone(self, member: Member) -> bool:
        """Is ``member`` the only request admitted, with no row waiting? Then its step may run in its own thread:
        the same ``decode`` of one row that the scheduler would run, so the same logits, without two thread
        hand-overs per token. A request admitted meanwhile sends its rows to the scheduler, and from the next
        step on both do."""
        with self._cond:
            if member.rec.first_step is None:
                member.rec.first_step = self.now()
            return len(self._admitted) == 1 and not self._pending and member.id in self._admitted

    def withdraw(self, member: Member) -> None:
        """A request that stopped waiting: its token is not run (if it still can be taken back)."""
        with self._cond:
            if member in self._pending:
                self._pending.remove(member)

    def leave(self, member: Member, reason: str) -> None:
        with self._cond:
            if member.left:
                return
            member.left = True
            if member in self._pending:
                self._pending.remove(member)
            self._admitted.pop(member.id, None)
            self._kv_used -= member.rec.kv_reserved
            member.rec.left, member.rec.reason = self.now(), reason
            self._cond.notify_all()

    # ---- the scheduler's thread ---------------------------------------------------------------------

    def _gather(self) -> list[Member] | None:
        """The rows of the next step (None: the thread ends: the scheduler is closed, or no request is left; the
        next ``join`` starts it again). Waits for a first row, then up to ``grace`` for the requests of the last
        step that are still decoding."""
        with self._cond:
            while not self._pending and not self._closed:
                if not self._admitted and not self._queue:
                    self._thread = None
                    return None
                self._cond.wait(IDLE)
            if self._closed:
                self._thread = None
                return None
            # Every request that is decoding sends its next token soon (each samples in its own thread, one at a
            # time under the interpreter lock): wait while they keep coming, ``grace`` after the latest. Waiting
            # for all of them, not only the last step's rows, is what keeps the batch whole: a step that went
            # ahead with part of them would leave the rest to make a step of their own, for good.
            # Both bounds grow with the model's step: a large model's requests sample over a large vocabulary,
            # and waiting a fraction of a step for them costs less than splitting the batch in two.
            step = self._last_step_s
            cap = time.monotonic() + max(GATHER_MAX, step)
            grace = max(self.grace, step / 8)
            # The grace counts from the latest token sent or, if later, from the end of the last step: a row
            # that was sent during that step must not make the step's own rows, busy drawing their tokens, look
            # late (that split sixteen requests into a row of one and a row of fifteen, step after step).
            while len(self._pending) < self.max_batch:
                left = min(cap, max(self._last_submit, self._last_end) + grace) - time.monotonic()
                if left <= 0 or not self._waiting():
                    break
                self._cond.wait(left)
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            return batch

    def _run(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            self.run_step(batch)

    def run_step(self, batch: list[Member]) -> None:
        """One decode step for ``batch``'s rows; each member gets its row's logits (or the step's error)."""
        start = self.now()
        try:
            logits: np.ndarray | None = self.model.decode([m.token for m in batch], [m.cache for m in batch])
            error: BaseException | None = None
        except Exception as exc:  # a step that fails fails its rows' requests, never the scheduler
            logits, error = None, exc
        drawn: list[Drawn | BaseException | None] = [None] * len(batch)
        if logits is not None:
            drawn = self._draws(batch, logits)
        end = self.now()
        with self._cond:
            self._last_step_s = end - start
            self._last_end = time.monotonic()
            rec = StepRecord(self._n_steps, start, end, [m.id for m in batch], self._kv_used)
            self._n_steps += 1
            self._steps.append(rec)
            self._last = batch
        for i, m in enumerate(batch):
            m.rec.tokens += 1
            d = drawn[i]
            if isinstance(d, BaseException):
                m.result = d
            else:
                m.result, m.drawn = (error if logits is None else logits[i]), d
            m.done.set()
        if self.on_step is not None:
            try:
                self.on_step(rec)
            except Exception:  # an observer's failure is not the requests'
                pass

    @staticmethod
    def _draws(batch: list[Member], logits: np.ndarray) -> list[Drawn | BaseException | None]:
        """The draws the step's rows asked for, made together (a row whose draw fails gets its error alone)."""
        rows = [i for i, m in enumerate(batch) if m.draw is not None]
        out: list[Drawn | BaseException | None] = [None] * len(batch)
        if not rows:
            return out
        draws = [d for d in (batch[i].draw for i in rows) if d is not None]
        states = [d.rng.bit_generator.state for d in draws]
        try:
            for i, drawn in zip(rows, draw_rows(logits[rows], draws)):
                out[i] = drawn
        except Exception:  # one row's bad draw must not fail the others: row by row, each with its own error,
            for d, state in zip(draws, states):  # from the generators' states before the failed pass
                d.rng.bit_generator.state = state
            for i, d in zip(rows, draws):
                try:
                    out[i] = draw_rows(logits[i:i + 1], [d])[0]
                except Exception as exc:
                    out[i] = exc
        return out

    def close(self) -> None:
        """Stop the scheduler's thread (a request still waiting for a row raises at its next budget check)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ---- what it did ---------------------------------------------------------------------------------

    @property
    def kv_used(self) -> int:
        return self._kv_used

    def record(self, since: float | None = None) -> dict[str, Any]:
        """The recent steps and requests (those after ``since``, seconds since the scheduler started), the KV
        budget and its use, and the queue, as plain data."""
        with self._cond:
            steps = [asdict(s) for s in self._steps if since is None or s.end >= since]
            reqs = [asdict(r) for r in self._requests if since is None or r.left is None or r.left >= since]
            return {"max_batch": self.max_batch, "kv_budget_bytes": self.kv_budget, "kv_used_bytes": self._kv_used,
                    "kv_peak_bytes": self._peak_kv, "queued": len(self._queue), "steps": steps, "requests": reqs,
                    "n_steps": self._n_steps}


_schedulers: weakref.WeakKeyDictionary[Any, Scheduler] = weakref.WeakKeyDictionary()
_schedulers_lock = threading.Lock()


def scheduler_for(model: BatchModel) -> Scheduler:
    """The one scheduler of ``model``: every engine serving it shares its decode steps."""
    with _schedulers_lock:
        s = _schedulers.get(model)  # (a model this process has: its weights, not a request's input)
        if s is None:
            s = _schedulers[model] = Scheduler(model)
        return s


def schedulers() -> list[Scheduler]:
    """Every model's scheduler alive now."""
    with _schedulers_lock:
        return list(_schedulers.values())
