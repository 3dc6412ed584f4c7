"""One grammar over one tokenizer: which token ids may come next, as a boolean mask.

A :class:`Machine` runs the automaton of ``explainer.llm.constrained.automaton`` byte by byte
and computes, for a state, the mask of the tokens whose bytes it accepts. Tokens sit in a
byte trie, so a depth-first walk shares the work of common prefixes and prunes a whole
subtree at the first byte that fails; transitions are memoised per state and masks cached
per state. Counters (characters left, items left) are clamped to "more than the longest
token" before the lookup, because beyond that one token cannot tell them apart; so a long
string reuses one mask.

Machines are shared by every constraint on the same grammar (:func:`machine_for`), so masks
stay warm across requests. They are kept in a small cache of the 64 last used, or in the
cache given to :func:`use_machine_cache` (the engine puts them under the app's cache budget).
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np

from explainer.llm.constrained.automaton import POP, POP_AGAIN, PUSH, PUSH_AGAIN, SET, Node, State
from explainer.llm.constrained.schema import Compiler
from explainer.llm.interface import ChatTokenizer as Tokenizer


@dataclass
class _TokenTrie:
    """All non-special tokens by their bytes. ``edges[node]`` lists (byte, child, token ids
    ending at child, whether child has children); node 0 is the root."""

    edges: list[list[tuple[int, int, tuple[int, ...], bool]]]
    max_len: int


# One trie per tokenizer, kept while the tokenizer lives (the machines that use it hold it): a closed
# local model's tokenizer and trie go with its last machine, never kept here for good.
_TOKEN_TRIES: dict[int, tuple[weakref.ref[Tokenizer], _TokenTrie]] = {}
_TRIES_LOCK = threading.Lock()


def _token_trie(tok: Tokenizer) -> _TokenTrie:
    hit = _TOKEN_TRIES.get(id(tok))
    if hit is not None and hit[0]() is tok:  # a dead tokenizer's id may be reused: the weak reference says which
        return hit[1]
    children: list[dict[int, int]] = [{}]
    ends: list[list[int]] = [[]]
    for t in range(tok.vocab_size):
        if tok.is_special(t) or not tok.token_bytes(t):  # a special, or an id the vocabulary leaves unused
            continue
        node = 0
        for b in tok.token_bytes(t):
            nxt = children[node].get(b)
            if nxt is None:
                nxt = children[node][b] = len(children)
                children.append({})
                ends.append([])
            node = nxt
        ends[node].append(t)
    edges = [[(b, c, tuple(ends[c]), bool(children[c])) for b, c in sorted(kids.items())] for kids in children]
    trie = _TokenTrie(edges, max(len(tok.token_bytes(t)) for t in range(tok.vocab_size)))
    key = id(tok)
    with _TRIES_LOCK:
        _TOKEN_TRIES[key] = (weakref.ref(tok, partial(_forget_trie, key)), trie)
    return trie


def _forget_trie(key: int, ref: weakref.ref[Tokenizer]) -> None:
    with _TRIES_LOCK:
        if (hit := _TOKEN_TRIES.get(key)) is not None and hit[0] is ref:
            del _TOKEN_TRIES[key]


class Machine:
    """The automaton of one grammar over one tokenizer, with its transition memo and mask cache.

    A state is the stack of frames (a tuple); ``()`` means the document is complete. Shared
    by every constraint on the same schema, so masks stay warm across requests.
    """

    def __init__(self, nodes: list[Node], root: Node, tok: Tokenizer):
        self.nodes, self.tok = nodes, tok
        self.trie = _token_trie(tok)
        self.cap = self.trie.max_len + 1  # one token adds at most max_len characters or items
        self.start: State = (root.initial(),)
        self.end_id = tok.end_id
        self._index: dict[State, int] = {}
        self._states: list[State] = []
        self._rows: list[list[int | None]] = []  # per state id: next state id per byte, -1 dead
        self._masks: dict[State, np.ndarray] = {}
        self._lock = threading.Lock()
        done = np.zeros(tok.vocab_size, dtype=bool)
        done[self.end_id] = True
        done.flags.writeable = False
        self.done_mask = done

    def approx_bytes(self) -> int:
        """What this machine holds beyond the shared token trie: nodes, interned states, their
        transition rows (256 slots each) and the cached masks (one bool per vocabulary entry)."""
        per_state = 56 + 256 * 8 + 200  # the row list, the state tuple and its index entry
        per_mask = 112 + self.tok.vocab_size + 150  # the array and its key
        return 2048 + 400 * len(self.nodes) + per_state * len(self._states) + per_mask * len(self._masks)

    # ---- the automaton itself (pure: no memo) -------------------------------------------
    def step(self, state: State, b: int) -> State | None:
        """The state after byte ``b``, or None when ``b`` cannot come next."""
        nodes = self.nodes
        while state:
            top = state[-1]
            act = nodes[top[0]].step(top, b)
            if act is None:
                return None
            kind = act[0]
            if kind == SET:
                return state[:-1] + (act[1],)
            if kind == PUSH:
                return state[:-1] + (act[1], act[2])
            if kind == POP:
                return state[:-1]
            if kind == POP_AGAIN:
                state = state[:-1]
            elif kind == PUSH_AGAIN:
                state = state[:-1] + (act[1], act[2])
            else:  # SWAP_AGAIN
                state = state[:-1] + (act[1],)
        return None  # after the document, nothing may follow

    def walk(self, state: State | None, data: bytes) -> State | None:
        for b in data:
            if state is None:
                return None
            state = self.step(state, b)
        return state

    # ---- masks ---------------------------------------------------------------------------
    def canon(self, state: State) -> State:
        nodes, cap = self.nodes, self.cap
        return tuple(nodes[f[0]].canon(f, cap) for f in state)

    def mask(self, state: State) -> np.ndarray:
        """Read-only boolean mask [vocab] of the tokens allowed in ``state``."""
        if not state:
            return self.done_mask
        key = self.canon(state)
        m = self._masks.get(key)
        if m is None:
            with self._lock:  # the engine may decode on several threads
                m = self._masks.get(key)
                if m is None:
                    m = self._masks[key] = self._compute(key)
        return m

    def _intern(self, state: State) -> int:
        sid = self._index.get(state)
        if sid is None:
            sid = self._index[state] = len(self._states)
            self._states.append(state)
            self._rows.append([None] * 256)
        return sid

    def _next(self, sid: int, b: int) -> int:
        nxt = self.step(self._states[sid], b)
        ns = -1 if nxt is None else self._intern(nxt)
        self._rows[sid][b] = ns
        return ns

    def _compute(self, state: State) -> np.ndarray:
        """Depth-first over the token trie: a subtree is skipped at its first failing byte."""
        edges, rows = self.trie.edges, self._rows
        allowed: list[int] = []
        stack = [(0, self._intern(state))]
        while stack:
            node, sid = stack.pop()
            row = rows[sid]
            for b, child, ids, has_children in edges[node]:
                ns = row[b]
                if ns is None:
                    ns = self._next(sid, b)
                if ns < 0:
                    continue
                if ids:
                    allowed.extend(ids)
                if has_children:
                    stack.append((child, ns))
        m = np.zeros(self.tok.vocab_size, dtype=bool)
        m[allowed] = True
        m.flags.writeable = False
        return m


class MachineCache(Protocol):
    """Where machines are kept: ``get(key)`` (None when absent) and ``put(key, machine)``."""

    def get(self, key: Hashable) -> Any: ...

    def put(self, key: Hashable, value: Any) -> Any: ...


class _Recent:
    """The default machine cache: the ``max_entries`` machines used last (not weighed in bytes)."""

    def __init__(self, max_entries: int = 64):
        self.max_entries = max_entries
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> bool:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
            return True


_MACHINES: MachineCache = _Recent()


def use_machine_cache(cache: MachineCache) -> None:
    """Keep the machines in ``cache`` from now on (the ones cached so far are left behind).

    Machines grow as they decode (states, masks): every lookup puts the machine again, so a
    cache that weighs its entries when they are put (by :meth:`Machine.approx_bytes`) sees
    what the last request added.
    """
    global _MACHINES
    _MACHINES = cache


def machine_for(key: str, tok: Tokenizer, build: Callable[[Compiler], Node]) -> Machine:
    """The shared machine of the grammar named ``key`` over ``tok``; ``build`` compiles it on a miss."""
    cache_key = (key, id(tok))
    m: Machine | None = _MACHINES.get(cache_key)
    if m is None or m.tok is not tok:
        compiler = Compiler()
        root = build(compiler)
        m = Machine(compiler.nodes, root, tok)
    _MACHINES.put(cache_key, m)
    return m
