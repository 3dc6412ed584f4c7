"""The byte-level pushdown automaton that constrained decoding walks: its nodes and actions.

Each node is one compiled sub-schema (:class:`Literal`, :class:`String`, :class:`Number`,
:class:`Object`, :class:`Array`, :class:`Union`); ``explainer.llm.constrained.schema``
builds them. A state is a stack of frames, one per open value; a frame is a hashable tuple
whose first item is its node's index. ``node.step(frame, byte)`` returns an action tuple
(:data:`SET` the top frame, :data:`PUSH` a child, :data:`POP`…) or None when the byte cannot
come next, and ``node.canon(frame, cap)`` clamps the frame's counters for the mask cache.
``explainer.llm.constrained.machine.Machine.step`` runs the actions.

Example:
    >>> s = String(0, 1, 2)  # a string of 1 or 2 characters
    >>> f = s.initial()
    >>> s.step(f, ord('"'))[0] == SET, s.step(f, ord("a"))
    (True, None)
"""
from __future__ import annotations

from typing import Any, TypeAlias

MAX_INT_DIGITS, MAX_FRAC_DIGITS, MAX_EXP_DIGITS = 15, 15, 2

# Actions a frame returns for one byte. "AGAIN" means the byte was not consumed and is fed
# to the new top of the stack (a number ends at the first byte that cannot continue it).
SET, PUSH, PUSH_AGAIN, POP, POP_AGAIN, SWAP_AGAIN = range(6)
_POP_ACT, _POP_AGAIN_ACT = (POP,), (POP_AGAIN,)

Frame: TypeAlias = tuple[int, ...]  # (node index, the node's counters...)
State: TypeAlias = tuple[Frame, ...]  # the stack of open values, innermost last; () is a complete document
# (kind, frames...): SET and SWAP_AGAIN carry the new top frame, PUSH and PUSH_AGAIN the parent's and the
# child's, POP and POP_AGAIN nothing. Which items follow depends on the kind's value, which a type cannot say.
Action: TypeAlias = tuple[Any, ...]

_QUOTE, _BACKSLASH, _COMMA = 0x22, 0x5C, 0x2C
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET = 0x7B, 0x7D, 0x5B, 0x5D
_DIGITS = frozenset(range(0x30, 0x3A))
_ESCAPES = frozenset(b'"\\/bfnrt')

# UTF-8 lead byte -> (continuation bytes to come, allowed range of the next one). The narrow
# ranges after E0, ED, F0 and F4 rule out overlong forms, surrogates and code points > U+10FFFF.
_UTF8_LEAD: list[tuple[int, int, int] | None] = [None] * 256
for _b in range(0xC2, 0xE0):
    _UTF8_LEAD[_b] = (1, 0x80, 0xBF)
for _b in range(0xE1, 0xF0):
    _UTF8_LEAD[_b] = (2, 0x80, 0xBF)
_UTF8_LEAD[0xE0], _UTF8_LEAD[0xED] = (2, 0xA0, 0xBF), (2, 0x80, 0x9F)
for _b in range(0xF1, 0xF4):
    _UTF8_LEAD[_b] = (3, 0x80, 0xBF)
_UTF8_LEAD[0xF0], _UTF8_LEAD[0xF4] = (3, 0x90, 0xBF), (3, 0x80, 0x8F)


def _dec(left: int) -> int:
    """One fewer left; -1 means unbounded and stays so."""
    return left - 1 if left > 0 else left


def _clamp(n: int, cap: int) -> int:
    return n if n < cap else cap


class _Trie:
    """Byte strings -> values, as child dicts; used for enum literals and object keys."""

    def __init__(self, items: list[tuple[bytes, Any]]):
        self.children: list[dict[int, int]] = [{}]
        self.value: list[Any] = [None]
        for data, value in items:
            node = 0
            for b in data:
                nxt = self.children[node].get(b)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][b] = nxt
                    self.children.append({})
                    self.value.append(None)
                node = nxt
            self.value[node] = value


# Each node is one compiled schema; a frame is a hashable tuple whose first item is the node's
# index. ``step(frame, byte)`` returns an action tuple or None (the byte is not allowed), and
# ``canon(frame, cap)`` clamps counters for the mask cache.

class Node:
    idx: int
    first: frozenset[int]  # bytes a value of this node can start with

    def initial(self) -> Frame:
        raise NotImplementedError

    def step(self, f: Frame, b: int) -> Action | None:
        raise NotImplementedError

    def canon(self, f: Frame, cap: int) -> Frame:
        return f


class Literal(Node):
    """One of a few exact byte strings (booleans, null, enum and const values)."""

    def __init__(self, idx: int, options: list[bytes]):
        self.idx, self.trie = idx, _Trie([(o, True) for o in options])
        self.first = frozenset(o[0] for o in options)

    def initial(self) -> Frame:
        return (self.idx, 0)

    def step(self, f: Frame, b: int) -> Action | None:
        children = self.trie.children
        nxt = children[f[1]].get(b)
        if nxt is not None:
            # Pop at once when nothing can follow, so a finished document is an empty stack.
            return _POP_ACT if self.trie.value[nxt] and not children[nxt] else (SET, (self.idx, nxt))
        return _POP_AGAIN_ACT if self.trie.value[f[1]] else None  # e.g. enum [1, 12] after "1"


class String(Node):
    """frame: (idx, phase 0 before quote | 1 inside | 2 after backslash, left, need, utf8_rem, lo, hi).

    ``left`` characters may still be added (-1: no maxLength), ``need`` more are required
    before the closing quote; ``utf8_rem`` continuation bytes in [lo, hi] must come next.
    """

    first = frozenset({_QUOTE})

    def __init__(self, idx: int, min_len: int, max_len: int | None):
        self.idx, self.min_len, self.max_len = idx, min_len, max_len

    def initial(self) -> Frame:
        return (self.idx, 0, -1 if self.max_len is None else self.max_len, self.min_len, 0, 0, 0)

    def step(self, f: Frame, b: int) -> Action | None:
        idx, phase, left, need, rem, lo, hi = f
        if phase == 1:
            if rem:
                if not lo <= b <= hi:
                    return None
                return (SET, (idx, 1, left, need, rem - 1, 0x80, 0xBF) if rem > 1 else (idx, 1, left, need, 0, 0, 0))
            if b == _QUOTE:
                return _POP_ACT if need == 0 else None
            if b < 0x20 or left == 0:
                return None
            left, need = _dec(left), need - 1 if need else 0  # a new character starts here
            if b < 0x80:
                return (SET, (idx, 2 if b == _BACKSLASH else 1, left, need, 0, 0, 0))
            lead = _UTF8_LEAD[b]
            return None if lead is None else (SET, (idx, 1, left, need) + lead)
        if phase == 0:
            return (SET, (idx, 1, left, need, 0, 0, 0)) if b == _QUOTE else None
        return (SET, (idx, 1, left, need, 0, 0, 0)) if b in _ESCAPES else None  # phase 2: the escaped char

    def canon(self, f: Frame, cap: int) -> Frame:
        idx, phase, left, need, rem, lo, hi = f
        return (idx, phase, _clamp(left, cap), _clamp(need, cap), rem, lo, hi)


# Number sub-states; accepting ones may end at the first byte that cannot continue them.
_N_START, _N_MINUS, _N_ZERO, _N_INT, _N_DOT, _N_FRAC, _N_E, _N_ESIGN, _N_EXP = range(9)


class Number(Node):
    """frame: (idx, sub-state, digits in the current part)."""

    first = frozenset(_DIGITS | {0x2D})

    def __init__(self, idx: int, integer: bool):
        self.idx, self.integer = idx, integer

    def initial(self) -> Frame:
        return (self.idx, _N_START, 0)

    def step(self, f: Frame, b: int) -> Action | None:
        idx, sub, k = f
        digit = 0x30 <= b <= 0x39
        if sub == _N_START or sub == _N_MINUS:
            if b == 0x30:
                return (SET, (idx, _N_ZERO, 1))
            if digit:
                return (SET, (idx, _N_INT, 1))
            return (SET, (idx, _N_MINUS, 0)) if b == 0x2D and sub == _N_START else None
        if sub == _N_ZERO or sub == _N_INT:
            if digit and sub == _N_INT and k < MAX_INT_DIGITS:
                return (SET, (idx, _N_INT, k + 1))
            if not self.integer:
                if b == 0x2E:
                    return (SET, (idx, _N_DOT, 0))
                if b in (0x65, 0x45):
                    return (SET, (idx, _N_E, 0))
            return _POP_AGAIN_ACT
        if sub == _N_DOT:
            return (SET, (idx, _N_FRAC, 1)) if digit else None
        if sub == _N_FRAC:
            if digit and k < MAX_FRAC_DIGITS:
                return (SET, (idx, _N_FRAC, k + 1))
            return (SET, (idx, _N_E, 0)) if b in (0x65, 0x45) else _POP_AGAIN_ACT
        if sub == _N_E:
            if b in (0x2B, 0x2D):
                return (SET, (idx, _N_ESIGN, 0))
            return (SET, (idx, _N_EXP, 1)) if digit else None
        if sub == _N_ESIGN:
            return (SET, (idx, _N_EXP, 1)) if digit else None
        if digit and k < MAX_EXP_DIGITS:  # _N_EXP
            return (SET, (idx, _N_EXP, k + 1))
        return _POP_AGAIN_ACT


class Object(Node):
    """frame: (idx, phase, i, key trie node). Phases: 0 before "{", 1 after "{", 2 in a key,
    3 after a value, 4 after ",". ``i`` is the first property that may still come.

    Properties are in a fixed order (required first), so from ``i`` the candidate keys are
    ``i, i+1, …`` up to and including the first required one; each key is matched with its
    quotes and colon (``"name":``) in a trie built per ``i``.
    """

    first = frozenset({_LBRACE})

    def __init__(self, idx: int, props: list[tuple[bytes, Node]], n_required: int):
        """``props``: (the key as written, ``"name":`` in compact JSON, its value's node), in order."""
        self.idx, self.props, self.n_required = idx, props, n_required
        self.keys: list[_Trie] = []
        for i in range(len(props) + 1):
            stop = i + 1 if i < n_required else len(props)
            self.keys.append(_Trie([(props[j][0], j) for j in range(i, stop)]))

    def initial(self) -> Frame:
        return (self.idx, 0, 0, 0)

    def _key(self, i: int, pos: int, b: int) -> Action | None:
        trie = self.keys[i]
        nxt = trie.children[pos].get(b)
        if nxt is None:
            return None
        j = trie.value[nxt]
        if j is None:
            return (SET, (self.idx, 2, i, nxt))
        return (PUSH, (self.idx, 3, j + 1, 0), self.props[j][1].initial())  # the colon was the last byte

    def step(self, f: Frame, b: int) -> Action | None:
        idx, phase, i, pos = f
        if phase == 2:
            return self._key(i, pos, b)
        if phase == 3 or phase == 1:
            if b == _RBRACE:
                return _POP_ACT if i >= self.n_required else None
            if phase == 3:
                return (SET, (idx, 4, i, 0)) if b == _COMMA and i < len(self.props) else None
            return self._key(i, 0, b)
        if phase == 4:
            return self._key(i, 0, b)
        return (SET, (idx, 1, 0, 0)) if b == _LBRACE else None


class Array(Node):
    """frame: (idx, phase 0 before "[" | 1 after "[" | 2 after an item | 3 after ",", left, need)."""

    first = frozenset({_LBRACKET})

    def __init__(self, idx: int, item: Node, min_items: int, max_items: int | None):
        self.idx, self.item, self.min_items, self.max_items = idx, item, min_items, max_items

    def initial(self) -> Frame:
        return (self.idx, 0, -1 if self.max_items is None else self.max_items, self.min_items)

    def step(self, f: Frame, b: int) -> Action | None:
        idx, phase, left, need = f
        if phase == 0:
            return (SET, (idx, 1, left, need)) if b == _LBRACKET else None
        if b == _RBRACKET and phase != 3:
            return _POP_ACT if need == 0 else None
        if phase == 2:
            return (SET, (idx, 3, left, need)) if b == _COMMA and left != 0 else None
        if left == 0:  # phase 1 of "maxItems": 0
            return None
        return (PUSH_AGAIN, (idx, 2, _dec(left), need - 1 if need else 0), self.item.initial())

    def canon(self, f: Frame, cap: int) -> Frame:
        idx, phase, left, need = f
        return (idx, phase, _clamp(left, cap), _clamp(need, cap))


class Union(Node):
    """Several types whose values start with different bytes: the first byte picks one."""

    def __init__(self, idx: int, branches: list[Node]):
        self.idx, self.by_first = idx, {b: n for n in branches for b in n.first}
        self.first = frozenset(self.by_first)

    def initial(self) -> Frame:
        return (self.idx,)

    def step(self, f: Frame, b: int) -> Action | None:
        node = self.by_first.get(b)
        return None if node is None else (SWAP_AGAIN, node.initial())
