"""The counting function every page uses: one definition of bytes, characters, words and tokens.

Pages used to count on their own and disagreed ("2.38 tokens per word" on one, "2.75" on
another, "171 bytes" beside "221 characters"). Every figure a page shows about a piece of text
or a request body now comes from here, and ``static/js/lib/figures.js`` mirrors these
definitions for the figures a page recomputes in the browser:

- **characters**: Unicode code points (what Python's ``len`` counts; ``[...s].length`` in JS);
- **bytes**: the UTF-8 encoding's length, what travels on the wire;
- **words**: runs of characters between whitespace;
- **tokens**: the ids the tokenizer gives the text itself, what the chat template adds (special
  tokens such as ``<|user|>``, and for many models a role's name or a line break) excluded, so a
  ratio says something about the text, not about the template.

A request body is counted as the compact JSON the SDKs send (no spaces after separators), written as
the browser's ``JSON.stringify`` writes it (``1.0`` is ``1``), so that a page and its script count the same
body alike; the app's own ``explainer`` field (the seed and pace the WebSocket reads) is not part of the
request the API reads, and is not counted.

A run is counted once too (:func:`run_figures`): its body, its input tokens, and its stream, where
**events** are the Messages API's stream events (what ``POST /v1/messages`` sends as Server-Sent Events:
``message_start`` … ``message_stop``) and never the explainer's own ``explainer.*`` frames, and **deltas**
are its ``content_block_delta`` events.

>>> f = text_figures("Hello, world!", 4)
>>> f.characters, f.bytes, f.words, f.tokens, f.chars_per_token, f.tokens_per_word
(13, 13, 2, 4, 3.25, 2.0)
>>> body_figures({"model": "m", "messages": []})["bytes"]
27
>>> body_figures({"model": "m", "messages": [], "explainer": {"seed": 3}})["bytes"]
27
>>> compact_json({"t": 1.0, "p": 0.7, "e": 1e-07, "n": [1, True, None]})
'{"t":1,"p":0.7,"e":1e-7,"n":[1,true,null]}'
>>> stream_figures([{"type": "explainer.prompt"}, {"type": "message_start"}, {"type": "content_block_delta",
...     "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}, {"type": "message_stop"}])["events"]
3
"""
from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from explainer.lifecycle import frames as fr
from explainer.lifecycle.errors import STATUS
from explainer.lifecycle.tool_format import tools_system_prompt
from explainer.llm.interface import ChatTokenizer

if TYPE_CHECKING:  # for annotations only: counting needs neither the engine nor the payload parser
    from explainer.lifecycle.engine import Run
    from explainer.lifecycle.payload import MessagesRequest

WORD = re.compile(r"[^ \t\n\r\f\v]+")  # the same class as figures.js's WORD


@dataclass(frozen=True)
class TextFigures:
    characters: int
    bytes: int
    words: int
    tokens: int

    @property
    def chars_per_token(self) -> float | None:
        return round(self.characters / self.tokens, 2) if self.tokens else None

    @property
    def tokens_per_word(self) -> float | None:
        return round(self.tokens / self.words, 2) if self.words else None

    def as_dict(self) -> dict[str, int | float | None]:
        return asdict(self) | {"chars_per_token": self.chars_per_token, "tokens_per_word": self.tokens_per_word}


def text_figures(text: str, tokens: int) -> TextFigures:
    """The figures of ``text`` that the tokenizer cut into ``tokens`` ids (special tokens not counted)."""
    return TextFigures(characters=len(text), bytes=len(text.encode("utf-8", "surrogatepass")),
                       words=len(WORD.findall(text)), tokens=tokens)


def tokenized_figures(tokenizer: ChatTokenizer, text: str, max_merges: int | None = None) -> TextFigures:
    """Cut ``text`` with the tokenizer (its first ``max_merges`` merges; default the model's) and count it."""
    return text_figures(text, len(tokenizer.encode(text, max_merges=max_merges)) if text else 0)


# The Messages API's stream events, in the order they come (ping may come at any time). An ``error`` is
# reported on its own: before the stream it is an HTTP error status, not an event of a stream.
API_EVENTS = fr.API_EVENTS
APP_FIELD = "explainer"  # the app's own field of a body sent over its WebSocket: never part of the API request
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def js_number(x: object) -> str:
    """A number as JavaScript writes it (ECMAScript's Number::toString): the shortest digits that read
    back as the same float, as Python's ``repr`` finds them, laid out JavaScript's way.

    >>> [js_number(v) for v in (0.7, 1.0, -0.0, 1e-05, 1e-07, 1.5e21, 123456789012345680000.0, 12)]
    ['0.7', '1', '0', '0.00001', '1e-7', '1.5e+21', '123456789012345680000', '12']
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"not a number: {x!r}")
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return "null"  # what JSON.stringify writes for NaN and the infinities
    if x == 0:
        return "0"
    if x < 0:
        return "-" + js_number(-x)
    t = decimal.Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(t.exponent, int)  # a finite number's ('n', 'N' and 'F' are NaN's and infinity's)
    digits = "".join(map(str, t.digits))
    k, n = len(digits), t.exponent + len(digits)  # x = 0.digits × 10^n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    return digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))


def _js_string(s: str) -> str:
    # JSON.stringify writes a lone surrogate as an escape (\ud800), where json.dumps would leave it as it is
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(s, ensure_ascii=False))


def compact_json(body: object) -> str:
    """``body`` as the browser's ``JSON.stringify`` writes it: no spaces, text as it is (not \\u-escaped),
    numbers in JavaScript's form. (A body's depth is bounded before it gets here: scenarios and requests
    are checked by ``jsonlimits``.)"""
    if isinstance(body, dict):
        return "{" + ",".join(_js_string(str(k)) + ":" + compact_json(v) for k, v in body.items()) + "}"
    if isinstance(body, (list, tuple)):
        return "[" + ",".join(compact_json(v) for v in body) + "]"
    if isinstance(body, str):
        return _js_string(body)
    if isinstance(body, (int, float)) and not isinstance(body, bool):
        return js_number(body)
    return json.dumps(body)  # true, false, null


def api_body(body: object) -> object:
    """The request the API reads: a body without the app's own ``explainer`` field."""
    return {k: v for k, v in body.items() if k != APP_FIELD} if isinstance(body, dict) else body


class BodyFigures(TypedDict):
    characters: int
    bytes: int  # UTF-8


def body_figures(body: object) -> BodyFigures:
    """A request body as it travels: compact JSON, its characters and its UTF-8 bytes (the app's own
    ``explainer`` field left out: the API never reads it)."""
    text = compact_json(api_body(body))
    return {"characters": len(text), "bytes": len(text.encode("utf-8", "surrogatepass"))}


def sse_text(event: Mapping[str, Any]) -> str:
    """One stream event as the API writes it on the wire: an ``event:`` line, a ``data:`` line of compact JSON, a blank line."""
    return f"event: {event['type']}\ndata: {compact_json(event)}\n\n"


def stream_figures(frames: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """A stream's figures from its frames, in any mix (the WebSocket's explainer frames are not counted):
    its API events, its deltas (``content_block_delta``), those that carry text, and its bytes as
    Server-Sent Events."""
    events = [f for f in frames if f.get("type") in API_EVENTS]
    deltas = [f for f in events if f["type"] == fr.CONTENT_BLOCK_DELTA]
    return {"events": len(events), "deltas": len(deltas),
            "text_deltas": sum(1 for f in deltas if (f.get("delta") or {}).get("type") == fr.TEXT_DELTA),
            "wire_bytes": sum(len(sse_text(f).encode("utf-8", "surrogatepass")) for f in events)}


def run_figures(run: Run, max_prompt_tokens: int) -> dict[str, Any]:
    """The figures of one run (an ``engine.Run``) that several pages show, counted once so that every page
    says the same: the body, the prompt's tokens, what the model did and the stream it sent back.

    A refused run says what did not happen: ``input_tokens`` is None when the prompt was refused on its
    length before it was cut into tokens (the engine's error says how long it is at least), ``ran`` is
    False (the model read nothing, drew nothing, streamed nothing), and ``output_tokens`` is None (nothing
    is billed)."""
    error = run.error["error"] if run.error else None
    n_in = len(run.prompt_ids) if run.prompt_ids else None
    done = run.done
    return {
        **{f"body_{k}": v for k, v in body_figures(run.body).items()},
        "refused": error is not None,
        "status": STATUS.get(error["type"]) if error else None,
        "error_type": error["type"] if error else None,
        "error_message": error["message"] if error else None,
        "input_tokens": n_in,
        "max_prompt_tokens": max_prompt_tokens,
        "over_window": n_in is not None and n_in > max_prompt_tokens,
        "ran": run.done is not None,
        "draws": len(run.steps),
        "output_tokens": done["usage"]["output_tokens"] if done else None,
        "stop_reason": done.get("stop_reason") if done else None,
        **stream_figures(run.events),
    }


def prompt_text_figures(tokenizer: ChatTokenizer, ids: Iterable[int]) -> TextFigures:
    """The figures of a run's prompt ids: the text they decode to and how many they are, with the
    chat template's special tokens left out of both."""
    plain = [int(t) for t in ids if not tokenizer.is_special(int(t))]
    return text_figures(tokenizer.decode(plain), len(plain))


def request_chat_parts(tokenizer: ChatTokenizer, req: MessagesRequest) -> list[tuple[str, list[int]]]:
    """A parsed request's prompt as ``chat_parts``: the system text as the model reads it (tool definitions
    included, as the engine writes them) and its turns."""
    system = tools_system_prompt(req.system, req.tools) if req.tools else req.system
    return tokenizer.chat_parts(system, [(m.role, m.text) for m in req.messages])


def chat_text_figures(tokenizer: ChatTokenizer, parts: list[tuple[str, list[int]]]) -> TextFigures:
    """The figures of a prompt's own text, from its ``chat_parts``: everything but the template's parts."""
    ids = [t for label, part in parts if label != "template" for t in part]
    return text_figures(tokenizer.decode(ids), len(ids))
