"""Least-recently-used caches bounded by bytes, all under one shared budget.

The stage pages keep computed results (runs, traces, attention matrices, summaries) so that
walking through the stages of one scenario does not recompute them. Bounding each cache by
a number of entries bounds nothing: one entry may be a few kilobytes or several megabytes.
Here every entry is weighed once, when it is stored, by :func:`sizeof` (an approximate walk
of what it holds), and every cache registers with a :class:`Budget`; when the caches
together would pass the budget, the least recently used entry of *all* of them goes first.

The process-wide budget is :data:`BUDGET`. Its size comes from ``EXPLAINER_CACHE_MB``
(default 128): the Django side points it at ``settings.EXPLAINER_CACHE_MB`` (see
``explainer.stages.runs``); without Django it reads the environment variable.

This module imports neither Django nor anything else of the app.

Example:
    >>> budget = Budget(max_bytes=12_000)
    >>> a, b = LRU("a", budget=budget), LRU("b", budget=budget)
    >>> a.put(1, "x" * 2500), b.put(2, "y" * 2500), a.put(3, "z" * 2500), b.put(4, "w" * 2500)
    (True, True, True, True)
    >>> b.put(5, "v" * 2500)  # five would pass 12 kB: the least recently used, a's 1, goes
    True
    >>> 1 in a, 3 in a, 2 in b, 5 in b, budget.used() <= 12_000
    (False, True, True, True, True)
"""
from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

MB = 1024 * 1024
DEFAULT_CACHE_MB = 128
MAX_ENTRY_FRACTION = 4  # an entry larger than a quarter of the budget is not kept
SIZEOF_MAX_OBJECTS = 100_000  # past this many objects sizeof extrapolates instead of walking on

_MISSING = object()
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice, memoryview)
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
           type(threading.Lock()), weakref.ref)


def sizeof(value: Any, max_objects: int = SIZEOF_MAX_OBJECTS) -> int:
    """Approximate bytes that ``value`` keeps alive; iterative (never recursion), each object once.

    - numpy arrays count the buffer they keep alive: a view counts its whole base array
      (``x[-1]`` of a 6 MB matrix weighs 6 MB, ``np.array(x[-1])`` only its row);
    - strings, bytes and numbers count ``sys.getsizeof``;
    - lists, tuples, sets, dicts, dataclasses and other objects count themselves plus what
      they hold (``__dict__`` and ``__slots__``); classes, modules and functions count 0;
    - past ``max_objects`` objects the rest is extrapolated from the average so far.
    """
    seen: set[int] = set()
    stack = [value]
    total = visited = 0
    getsizeof = sys.getsizeof
    while stack:
        if visited >= max_objects:
            return int(total + len(stack) * (total / max(visited, 1)))
        v = stack.pop()
        i = id(v)
        if i in seen:
            continue
        seen.add(i)
        visited += 1
        if isinstance(v, _ATOMS):
            total += getsizeof(v)
        elif isinstance(v, np.ndarray):
            base = v
            while isinstance(base.base, np.ndarray):
                base = base.base
            if base is not v:
                if id(base) in seen:  # its buffer is counted already
                    total += 112
                    continue
                seen.add(id(base))
            total += 112 + max(v.nbytes, base.nbytes)
            if v.dtype == object:
                stack.extend(v.ravel().tolist())
        elif isinstance(v, np.generic):
            total += getsizeof(v)
        elif isinstance(v, dict):
            total += getsizeof(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += getsizeof(v)
            stack.extend(v)
        elif isinstance(v, _OPAQUE):
            continue
        else:
            total += getsizeof(v)
            d = getattr(v, "__dict__", None)
            if isinstance(d, dict):
                stack.append(d)
            for cls in type(v).__mro__:
                for slot in cls.__dict__.get("__slots__", ()):
                    if slot not in ("__dict__", "__weakref__"):
                        attr = getattr(v, slot, _MISSING)
                        if attr is not _MISSING:
                            stack.append(attr)
    return total


class Budget:
    """One limit in bytes for a group of caches; evicts the least recently used entry among them.

    ``max_bytes`` is fixed, or read from ``source`` (a callable returning bytes) at every store,
    so that a setting changed at run time (or in a test) takes effect on the next store.
    """

    def __init__(self, max_bytes: int | None = None, source: Callable[[], int] | None = None):
        self._max = DEFAULT_CACHE_MB * MB if max_bytes is None else int(max_bytes)
        self._source = source
        self.lock = threading.Lock()  # shared by every cache of the budget: no lock ordering to get wrong
        self._caches: weakref.WeakSet[LRU] = weakref.WeakSet()
        self._ticks = itertools.count()

    @property
    def max_bytes(self) -> int:
        if self._source is not None:
            try:
                return max(0, int(self._source()))
            except Exception:  # a misconfigured source must not break every page
                pass
        return self._max

    def configure(self, max_bytes: int | None = None, source: Callable[[], int] | None = None) -> None:
        """Set a fixed limit, or a ``source`` to read it from; shrinks the caches to fit at once."""
        with self.lock:
            if max_bytes is not None:
                self._max = int(max_bytes)
            self._source = source
            self._shrink(0)

    @property
    def caches(self) -> list[LRU]:
        return list(self._caches)

    def used(self) -> int:
        """Bytes held by all the caches of this budget together (as weighed when stored)."""
        with self.lock:
            return self._used()

    def _used(self) -> int:
        return sum(c._bytes for c in self._caches)

    def _shrink(self, room: int) -> None:
        """Evict the least recently used entries of all caches until ``room`` more bytes fit.

        Caller holds ``self.lock``.
        """
        limit = self.max_bytes
        evicted = False
        caches = [c for c in self._caches]
        total = sum(c._bytes for c in caches)
        while total + room > limit:
            victim, oldest = None, None
            for c in caches:
                t = c._oldest_tick()
                if t is not None and (oldest is None or t < oldest):
                    victim, oldest = c, t
            if victim is None:
                break
            total -= victim._evict_oldest()
            evicted = True
        if evicted:
            _give_back_freed_memory()

    def clear(self) -> None:
        for c in self.caches:
            c.clear()


_last_trim = [0.0]


def _give_back_freed_memory(every: float = 1.0) -> None:
    """Ask the C allocator to return freed heap pages to the system (glibc's ``malloc_trim``).

    An evicted run frees many small blocks in the middle of the heap; without this the
    process keeps them, and its resident memory creeps up long after the caches stopped
    growing. At most once a second; a no-op where the C library has no ``malloc_trim``.
    """
    now = time.monotonic()
    if now - _last_trim[0] < every or _malloc_trim is None:
        return
    _last_trim[0] = now
    _malloc_trim(0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_malloc_trim()


def _env_budget() -> int:
    try:
        return int(float(os.environ.get("EXPLAINER_CACHE_MB", DEFAULT_CACHE_MB)) * MB)
    except ValueError:
        return DEFAULT_CACHE_MB * MB


BUDGET = Budget(_env_budget())


class LRU:
    """A thread-safe LRU mapping bounded by bytes, under a shared :class:`Budget`.

    - ``get(key)`` returns the value (and marks it used) or ``default``;
    - ``put(key, value)`` weighs key and value with ``sizeof`` (outside the lock), evicts the
      least recently used entries of the budget's caches until it fits, and stores it. An entry
      larger than ``max_bytes`` (this cache's own cap, if any) or than a quarter of the budget
      is not stored: ``put`` returns False;
    - ``max_entries`` optionally bounds the count too.

    Values are stored as they are: a value must not be changed after it is stored (its weight
    is not updated), and must not keep views into large arrays it does not need (``sizeof``
    counts what such a view keeps alive, so the entry would simply weigh that much).
    """

    def __init__(self, name: str, *, budget: Budget | None = None, max_bytes: int | None = None,
                 max_entries: int | None = None, sizeof: Callable[[Any], int] = sizeof):
        self.name = name
        self.budget = BUDGET if budget is None else budget
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.sizeof = sizeof
        self._data: OrderedDict[Hashable, tuple[Any, int, int]] = OrderedDict()  # key -> (value, bytes, tick)
        self._bytes = 0
        self.hits = self.misses = self.evictions = self.refused = 0
        with self.budget.lock:
            self.budget._caches.add(self)

    # ---- mapping -----------------------------------------------------------------------------
    def get(self, key: Hashable, default: Any = None) -> Any:
        b = self.budget
        with b.lock:
            item = self._data.get(key)  # (an entry is a tuple, never None)
            if item is None:
                self.misses += 1
                return default
            self._data[key] = (item[0], item[1], next(b._ticks))
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def __contains__(self, key: Hashable) -> bool:
        with self.budget.lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> list[Hashable]:
        with self.budget.lock:
            return list(self._data)

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, key: Hashable, value: Any) -> bool:
        """Store ``value``; False (and nothing stored) when it is too large for this cache."""
        size = self.sizeof(key) + self.sizeof(value) + 64  # + the entry's own bookkeeping
        b = self.budget
        with b.lock:
            self._pop(key)
            cap = b.max_bytes // MAX_ENTRY_FRACTION
            if self.max_bytes is not None:
                cap = min(cap, self.max_bytes)
            if size > cap:
                self.refused += 1
                return False
            if self.max_bytes is not None:
                while self._data and self._bytes + size > self.max_bytes:
                    self._evict_oldest()
            if self.max_entries is not None:
                while self._data and len(self._data) >= self.max_entries:
                    self._evict_oldest()
            b._shrink(size)
            self._data[key] = (value, size, next(b._ticks))
            self._bytes += size
            return True

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value, or ``compute()`` stored and returned (computed outside the lock:
        two threads may compute the same value at once, and both get a correct one)."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = compute()
            self.put(key, value)
        return value

    def pop(self, key: Hashable, default: Any = None) -> Any:
        with self.budget.lock:
            item = self._pop(key)
        return default if item is None else item[0]

    def clear(self) -> None:
        with self.budget.lock:
            self._data.clear()
            self._bytes = 0

    def items(self) -> Iterable[tuple[Hashable, Any]]:
        with self.budget.lock:
            return [(k, v[0]) for k, v in self._data.items()]

    def __repr__(self) -> str:
        return f"<LRU {self.name}: {len(self._data)} entries, {self._bytes:,} bytes>"

    # ---- under the budget's lock -------------------------------------------------------------
    def _pop(self, key: Hashable) -> tuple[Any, int, int] | None:
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= item[1]
        return item

    def _oldest_tick(self) -> int | None:
        if not self._data:
            return None
        return self._data[next(iter(self._data))][2]

    def _evict_oldest(self) -> int:
        _, (_, size, _) = self._data.popitem(last=False)
        self._bytes -= size
        self.evictions += 1
        return size
