"""What ``tokenizer.json`` says to do before BPE: its normalizer and its pre-tokenizer, read and checked.

The normalizer (NFC or NFKC) and the pre-tokenizer steps (ByteLevel, Split on a pattern, Digits)
become plain functions. A Split pattern comes from a downloaded folder, so it is untrusted: it is
bounded in length, probed on adversarial strings when the folder opens (catastrophic backtracking
is refused, :class:`PatternTooSlow`), and matched under a timeout on every text
(:class:`PatternTimeout` past it).
"""
from __future__ import annotations

import time
import unicodedata
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import regex

from explainer.llm import budget
from explainer.llm.interface import ModelLoadError, TokenizerError

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_NUMBER = regex.compile(r"\p{N}")  # Rust's char::is_numeric, which the Digits pre-tokenizer uses
_NORMALIZERS = {"NFC", "NFKC"}
NormalForm = Literal["NFC", "NFKC"]
_BEHAVIORS = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"}
MAX_PATTERN_CHARS = 4096  # real pre-tokenizer patterns are under 500 characters
MAX_STEPS = 16  # normalizers, and pre-tokenizers, in one Sequence (real ones have at most three)

# A Split pattern from tokenizer.json runs with the regex module's timeout: this much, plus this much per
# character, of matching per text. Real patterns take about half a microsecond a character here, so a
# loaded machine has room; catastrophic backtracking is stopped a quarter of a second into a short text.
MATCH_SECONDS = 0.25
MATCH_SECONDS_PER_CHAR = 4e-6
# When the folder is opened, each pattern is tried on adversarial strings of this length, each within
# PROBE_SECONDS of matching and all within PROBE_TOTAL_SECONDS: catastrophic backtracking (``(a|aa)+$``
# on 48 'a's and '!') takes hours on such strings, a real pattern a millisecond.
PROBE_CHARS = 4096
PROBE_SECONDS = 0.05
PROBE_RETRY_SECONDS = 0.5  # a probe over PROBE_SECONDS is tried once more with this much: a busy machine is not a pattern's fault
PROBE_TOTAL_SECONDS = 2.0  # of this thread's own CPU time, which a busy machine does not inflate


class PatternTimeout(ModelLoadError, TokenizerError):
    """A pre-tokenizer pattern from tokenizer.json ran past its time limit on a text: the folder's fault
    when it is opened, the request's 400 when it is served."""


def _split(text: str, rx: regex.Pattern[str], behavior: str, invert: bool = False, timeout: float | None = None) -> list[str]:
    """``tokenizers``' ``NormalizedString.split``: the matches of ``rx`` and the text between them,
    kept apart, dropped or joined to a neighbour as ``behavior`` says.

    With ``timeout`` (a pattern from the folder), matching may take that many seconds in all, and
    lets other threads run meanwhile; past it, TimeoutError.
    """
    spans: list[tuple[int, int, bool]] = []
    prev = 0
    matches = rx.finditer(text) if timeout is None else rx.finditer(text, timeout=timeout, concurrent=True)
    for n, m in enumerate(matches):
        if not n & 255:
            budget.check()
        a, b = m.span()
        if prev != a:
            spans.append((prev, a, invert))
        spans.append((a, b, not invert))
        prev = b
    if prev != len(text):
        spans.append((prev, len(text), invert))
    out: list[list[int]] = []
    if behavior == "Isolated":
        out = [[a, b] for a, b, _ in spans]
    elif behavior == "Removed":
        out = [[a, b] for a, b, is_match in spans if not is_match]
    elif behavior == "Contiguous":
        previous = False
        for a, b, is_match in spans:
            if is_match == previous and out:
                out[-1][1] = b
            else:
                out.append([a, b])
            previous = is_match
    elif behavior == "MergedWithPrevious":
        previous = False
        for a, b, is_match in spans:
            if is_match and not previous and out:
                out[-1][1] = b
            else:
                out.append([a, b])
            previous = is_match
    else:  # MergedWithNext
        following = False
        for a, b, is_match in reversed(spans):
            if is_match and not following and out:
                out[-1][0] = a
            else:
                out.append([a, b])
            following = is_match
        out.reverse()
    return [text[a:b] for a, b in out if a < b]


def _apply_forms(forms: list[NormalForm], text: str) -> str:
    """A normalizer Sequence: each Unicode normal form in turn."""
    for form in forms:
        text = unicodedata.normalize(form, text)
    return text


def _probes(source: str) -> list[str]:
    """Adversarial strings for a pattern: long runs of one character (each of the pattern's own, and a
    letter, a digit, a space, a newline, punctuation, non-ASCII), with and without a different last
    character, pairs of characters alternating, and a fixed mixture of everything."""
    own = [c for c in dict.fromkeys(source) if c.isprintable() and not c.isspace()][:32]
    singles = list(dict.fromkeys([*own, "a", "A", "1", " ", "\n", "\t", "\r", "!", "'", "_", "-", "é", "日", "\u00a0", "\U0001f600"]))
    out = []
    for c in singles:
        end = "!" if c != "!" else "?"
        out += [c * 48 + end, c * PROBE_CHARS + end, c * PROBE_CHARS]
    for pair in ("ab", "aA", "a1", "a ", " \n", "\r\n", "a!", "a'", "1 ", "a\u00e9", "a日", *(a + b for a, b in zip(own, own[1:16]))):
        out += [pair * (PROBE_CHARS // 2) + "!", pair * 24 + "!"]
    mixture = "aA1 \n\t!.,'-_é日\u00a0" + "".join(own)
    state, chars = 12345, []
    for _ in range(PROBE_CHARS):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF  # a fixed pseudo-random walk: the same probes every time
        chars.append(mixture[state % len(mixture)])
    out.append("".join(chars))
    return out


class PatternTooSlow(ModelLoadError):
    """A pre-tokenizer pattern that ran too long on a probe string. Measured in time, so a catalog does not
    remember it as the folder's fault for good (``transient``): the next open probes again."""

    transient = True


def _probe(rx: regex.Pattern[str], source: str) -> None:
    """Refuse a pattern that takes too long on some adversarial string (catastrophic backtracking)."""
    started = time.thread_time()
    for probe in _probes(source):
        for limit in (PROBE_SECONDS, PROBE_RETRY_SECONDS):
            try:
                deque(rx.finditer(probe, timeout=limit, concurrent=True), maxlen=0)  # read at C speed
                break
            except TimeoutError:
                continue
        else:
            raise PatternTooSlow(f"tokenizer.json: the pre-tokenizer pattern {shown(source)} takes too long on some inputs "
                                 f"(catastrophic backtracking: over {PROBE_RETRY_SECONDS:g} s on {len(probe):,} characters "
                                 f"such as {shown(probe)}), so it is refused.")
        if time.thread_time() - started > PROBE_TOTAL_SECONDS:
            raise PatternTooSlow(f"tokenizer.json: the pre-tokenizer pattern {shown(source)} takes too long on some inputs "
                                 f"(over {PROBE_TOTAL_SECONDS:g} s on a few strings of {PROBE_CHARS:,} characters), so it is refused.")


def shown(text: str, n: int = 60) -> str:
    """A pattern or a string in a sentence: its repr, cut to about ``n`` characters."""
    return repr(text) if len(text) <= n else repr(text[:n]) + "…"


def _kind(component: Any) -> str:
    """How a component of tokenizer.json is named in a sentence: its type, or what it is instead."""
    return repr(component.get("type")) if isinstance(component, dict) else repr(component)


def read_normalizer(spec: Any) -> Callable[[str], str] | None:
    """tokenizer.json's normalizer: NFC or NFKC, alone or in a Sequence; None for none."""
    if spec is None:
        return None
    forms: list[NormalForm] = []
    sequence = isinstance(spec, dict) and spec.get("type") == "Sequence"
    parts = (spec.get("normalizers") or []) if sequence else [spec]
    if not isinstance(parts, list) or len(parts) > MAX_STEPS:
        raise ModelLoadError(f"tokenizer.json: the normalizer Sequence must be a list of at most {MAX_STEPS} normalizers.")
    for n in parts:
        if not isinstance(n, dict) or n.get("type") not in _NORMALIZERS:
            raise ModelLoadError(f"tokenizer.json: normalizer {_kind(n)} is not supported; only NFC and NFKC "
                                 "(alone or in a Sequence) are.")
        forms.append(n["type"])
    if not forms:
        return None
    return lambda text: _apply_forms(forms, text)


def read_pre_tokenizer(spec: Any) -> list[Callable[[str], list[str]]]:
    """tokenizer.json's pre-tokenizer as steps, each splitting a piece of text into pieces: ByteLevel last, after
    Split and Digits steps (alone or in a Sequence)."""
    sequence = isinstance(spec, dict) and spec.get("type") == "Sequence"
    parts = (spec.get("pretokenizers") or []) if sequence else [spec]
    if not isinstance(parts, list) or len(parts) > MAX_STEPS:
        raise ModelLoadError(f"tokenizer.json: the pre_tokenizer Sequence must be a list of at most {MAX_STEPS} pre-tokenizers.")
    steps: list[Callable[[str], list[str]]] = []
    byte_level = False
    for p in parts:
        kind = p.get("type") if isinstance(p, dict) else None
        if byte_level:
            raise ModelLoadError(f"tokenizer.json: pre_tokenizer {_kind(p)} after ByteLevel is not supported.")
        if kind == "ByteLevel":
            byte_level = True
            steps.append(_byte_level_step(bool(p.get("add_prefix_space", True)), bool(p.get("use_regex", True))))
        elif kind == "Split":
            steps.append(_split_step(p))
        elif kind == "Digits":
            behavior = "Isolated" if p.get("individual_digits", False) else "Contiguous"
            steps.append(partial(_split, rx=_NUMBER, behavior=behavior))
        else:
            raise ModelLoadError(f"tokenizer.json: pre_tokenizer {_kind(p)} is not supported; only ByteLevel, "
                                 "Split and Digits (alone or in a Sequence) are.")
    if not byte_level:
        raise ModelLoadError("tokenizer.json: the pre_tokenizer has no ByteLevel step; only byte-level BPE is supported.")
    return steps


def _byte_level_step(add_prefix_space: bool, use_regex: bool) -> Callable[[str], list[str]]:
    rx = regex.compile(GPT2_PATTERN)

    def step(text: str) -> list[str]:
        if add_prefix_space and not text.startswith(" "):
            text = " " + text
        return _split(text, rx, "Isolated") if use_regex else [text]
    return step


def _split_step(p: dict[str, Any]) -> Callable[[str], list[str]]:
    pattern, behavior, invert = p.get("pattern"), p.get("behavior"), bool(p.get("invert", False))
    if behavior not in _BEHAVIORS:
        raise ModelLoadError(f"tokenizer.json: Split behavior {behavior!r} is not supported.")
    if isinstance(pattern, dict) and isinstance(pattern.get("Regex"), str):
        source = pattern["Regex"]
    elif isinstance(pattern, dict) and isinstance(pattern.get("String"), str):
        source = regex.escape(pattern["String"])
    else:
        raise ModelLoadError(f"tokenizer.json: Split pattern {shown(repr(pattern))} is neither a Regex nor a String.")
    if len(source) > MAX_PATTERN_CHARS:
        raise ModelLoadError(f"tokenizer.json: the Split pattern has {len(source):,} characters; at most {MAX_PATTERN_CHARS:,} "
                             "are accepted.")
    try:
        rx = regex.compile(source)
    except (regex.error, RecursionError, OverflowError, ValueError) as exc:
        raise ModelLoadError(f"tokenizer.json: the Split pattern {shown(source)} does not compile ({exc}).") from None
    _probe(rx, source)

    def step(text: str) -> list[str]:
        timeout = MATCH_SECONDS + MATCH_SECONDS_PER_CHAR * len(text)
        try:
            return _split(text, rx, behavior, invert, timeout=timeout)
        except TimeoutError:
            raise PatternTimeout(f"tokenizer.json: the pre-tokenizer pattern {shown(source)} took over {timeout:.2g} s on "
                                 f"this text of {len(text):,} characters (catastrophic backtracking), so it cannot be "
                                 "encoded with this model.") from None
    return step
