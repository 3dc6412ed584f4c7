"""The checks behind the tutorial's lessons: is the task done, for this scenario and these view options?

Each check gets the lesson, the stage's ``StagePage`` (scenario, options, the computed run)
and the context the stage's own page module built for it, so it reads the same numbers the
learner sees. It answers a ``Verdict``: done or not, and a sentence saying what the page
shows now and, when the task is not done, what is still missing. Nothing here is looked up
in a table of answers: every condition is computed from the real run.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields

import numpy as np

from explainer.lifecycle import frames as fr
from explainer.lifecycle import lru
from explainer.lifecycle.demo_tools import validate_input
from explainer.lifecycle.scenario import Scenario
from explainer.llm.generate import step_banned
from explainer.llm.sampling import SamplingParams, distribution, draw
from explainer.stages.pages.transformer import attention_rows, head_names


@dataclass(frozen=True)
class Verdict:
    done: bool
    message: str


def _q(text: str, limit: int = 60) -> str:
    """Learner-supplied or generated text, quoted and cut short for a one-line message."""
    text = text.replace("\n", "↵")
    return "“" + (text if len(text) <= limit else text[: limit - 1] + "…") + "”"


def _pct(p: float) -> str:
    return f"{p * 100:.0f}%"


def _refused(run) -> str:
    return f"The API would refuse this request: {run.error['error']['message']}"


def _last_user_text(scenario: Scenario) -> str:
    for m in reversed(scenario.messages):
        if m["role"] == "user":
            c = m["content"]
            return c if isinstance(c, str) else "".join(b.get("text", "") for b in c if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


# ---- overview --------------------------------------------------------------------------------------

def temperature_word(lesson, page, ctx) -> Verdict:
    """The reply contains the target word, and only the temperature differs from the lesson's start."""
    start, s = lesson.start_scenario(), page.scenario
    word = lesson.params["word"]
    changed = [f.name for f in fields(Scenario) if f.name != "temperature" and getattr(s, f.name) != getattr(start, f.name)]
    if changed:
        return Verdict(False, f"Only the temperature may change, but {', '.join(changed)} "
                              f"{'differs' if len(changed) == 1 else 'differ'} from the lesson's request. "
                              "Start the lesson again from the lesson path to get it back.")
    run = page.run
    if run.error:
        return Verdict(False, _refused(run))
    found = re.search(rf"\b{re.escape(word)}", run.text, re.IGNORECASE)
    if s.temperature == start.temperature:
        return Verdict(False, f"This is the lesson's request at temperature {start.temperature:g}: "
                              f"its reply does not say “{word}”. Move the temperature slider, then press Send.")
    if found:
        return Verdict(True, f"At temperature {s.temperature:g} the reply says “{found.group(0)}”.")
    return Verdict(False, f"At temperature {s.temperature:g} the reply does not say “{word}” either. Try another temperature.")


# ---- compose -----------------------------------------------------------------------------------------

def prefill(lesson, page, ctx) -> Verdict:
    """The request ends with a non-empty assistant turn, and the API accepts it."""
    s, run = page.scenario, page.run
    last = s.messages[-1] if s.messages else None
    if last is None or last["role"] != "assistant":
        return Verdict(False, "The request still ends with a user turn. Add a turn after it, make it an assistant turn, and press Apply.")
    text = last["content"] if isinstance(last["content"], str) else ""
    if not text.strip():
        return Verdict(False, "The assistant turn at the end is empty: write the first words of an answer in it.")
    if run.error:
        return Verdict(False, _refused(run))
    return Verdict(True, f"The reply carries on from {_q(text, 40)} with {_q(run.text, 50)}.")


# ---- gateway ---------------------------------------------------------------------------------------------

def never_admitted(lesson, page, ctx) -> Verdict:
    """A burst of this request is refused by a bucket that no wait can refill enough (retry-after: never)."""
    run, burst = page.run, ctx.get("burst")
    if run.error or burst is None:
        return Verdict(False, "This request is invalid, so the gateway stops it at the format check and its limits never "
                              "come into play. Fix it first. " + (_refused(run) if run.error else ""))
    limits, s = ctx["limits"], page.scenario
    if burst["limited_by"] is None:
        return Verdict(False, "A burst of this request is never refused at all.")
    what = burst["limited_by"].replace("_", " ")
    limit = limits.per_minute(burst["limited_by"])
    reserved = f" It reserves {s.max_tokens:,} output tokens of the {limits.output_tokens_per_minute:,} a minute."
    if burst["never"]:
        return Verdict(True, f"This request needs more of the {what} bucket than the {limit:,} it ever holds, "
                             "so no retry-after can help." + reserved)
    return Verdict(False, f"Fired in a burst, this request gets through {burst['passed']} "
                          f"time{'s' if burst['passed'] != 1 else ''} before the {what} bucket refuses it, "
                          "and waiting refills that bucket." + reserved)


# ---- tokenize --------------------------------------------------------------------------------------------

def vocabulary_ratio(lesson, page, ctx) -> Verdict:
    """With the chosen number of merges the context takes at least ``factor`` times the tokens it takes with the model's."""
    tk = ctx["tk"]
    if tk["error"]:
        return Verdict(False, tk["error"])
    factor = lesson.params["factor"]
    at_model = dict(tk["curve"])[tk["model_merges"]]
    shown, n = tk["shown_tokens"], tk["merges"]
    ratio = shown / at_model if at_model else 0.0
    words = (f"With {n:,} merges this request takes {shown:,} tokens, {ratio:.2f} times the {at_model:,} "
             f"it takes with the model's {tk['model_merges']:,}")
    if ratio >= factor:
        return Verdict(True, words + ".")
    more = " Fewer merges give more tokens." if n >= tk["model_merges"] else ""
    return Verdict(False, words + f"; at least {factor:g} times is needed.{more}")


# ---- transformer -----------------------------------------------------------------------------------------

_PREV = lru.LRU("tutorial previous-token scores", max_entries=32)  # under the process's one cache budget


def previous_token_attention(model, ids: list[int]) -> np.ndarray:
    """[layers, heads]: each head's attention on the token just before, averaged over every position that has one.

    Example: a head that always looks one token back scores 1.0; one that looks only at itself, 0.0.
    The weights are read a chunk of query rows at a time (``attention_rows``), so a 30 x 9-head model on
    a long prompt never holds every head's full map at once.
    """
    c = model.config
    names = head_names(c.n_layer, c.n_head)
    total = np.zeros(len(names))
    for q0, trace in attention_rows(model, ids):
        q = np.arange(max(q0, 1), q0 + trace[names[0]].shape[0])  # this chunk's rows that have a token before them
        total += [trace[n][q - q0, q - 1].sum(dtype=np.float64) for n in names]
    return (total / max(len(ids) - 1, 1)).reshape(c.n_layer, c.n_head)


def _cached_previous(key: str, model, ids: list[int]) -> np.ndarray:
    """``key`` names the model's weights and the scenario: two models never share a score table."""
    return _PREV.get_or_compute(key, lambda: previous_token_attention(model, ids))


def previous_token_head(lesson, page, ctx) -> Verdict:
    """The selected head is the one with the highest mean attention on the previous token."""
    if ctx.get("unavailable"):
        return Verdict(False, ctx["unavailable"])
    ids = list(page.run.prompt_ids)
    if len(ids) < 3:
        return Verdict(False, "The prompt is too short to tell the heads apart: it needs at least three tokens.")
    scores = _cached_previous(f"{page.engine.loaded.fingerprint}:{page.scenario.key()}", page.engine.model, ids)
    layer, head = page.opts["layer"], page.opts["head"]
    mine = scores[layer, head]
    best = np.unravel_index(int(np.argmax(scores)), scores.shape)
    said = f"Layer {layer}, head {head} puts {_pct(mine)} of its attention on the previous token, on average"
    if (layer, head) == tuple(int(x) for x in best):
        runner_up = np.sort(scores, axis=None)[-2]
        return Verdict(True, f"{said}: more than any other head (the next one puts {_pct(runner_up)}).")
    above = int((scores > mine).sum())
    return Verdict(False, f"{said}; {above} head{'s' if above != 1 else ''} of {scores.size} put{'s' if above == 1 else ''} more there.")


# ---- sampling --------------------------------------------------------------------------------------------

def _knobs(temperature, top_k, top_p) -> tuple:
    """Sampling settings with "off" written one way: top_k 0 and top_p 1 (or absent) are None."""
    return float(temperature), top_k or None, top_p if top_p is not None and top_p < 1 else None


def different_draw(lesson, page, ctx) -> Verdict:
    """With the sliders' settings, the engine's own random number for this step draws another token."""
    run = page.run
    if not run.steps:
        return Verdict(False, _refused(run) if run.error else "This reply has no tokens to draw.")
    i = page.opts["step"]
    st, knobs = run.steps[i], ctx["explore"]
    params = SamplingParams(*_knobs(knobs["temperature"], knobs["top_k"], knobs["top_p"]))
    dist = distribution(np.asarray(st["logits"], dtype=np.float64), params, banned=step_banned(page.engine.tokenizer, st))
    rng = np.random.default_rng(page.scenario.seed)  # the engine's stream: one number per step
    rng.random(i)
    token = draw(dist, rng)
    label = page.engine.token_label
    engine_token = _q(label(st["token"]))
    where = f"At step {i + 1}"
    if token != st["token"]:
        return Verdict(True, f"{where}, with these settings the engine's u lands on {_q(label(token))} instead of {engine_token}.")
    req = ctx["config"]["request"]
    if _knobs(knobs["temperature"], knobs["top_k"], knobs["top_p"]) == _knobs(req["temperature"], req["top_k"], req["top_p"]):
        return Verdict(False, f"{where} the sliders are at the request's own settings, so u lands on {engine_token}, "
                              "the token the engine drew. Move them.")
    return Verdict(False, f"{where}, with these settings u still lands on {engine_token}. Try moving a slider further.")


# ---- streaming -------------------------------------------------------------------------------------------

def stop_sequence(lesson, page, ctx) -> Verdict:
    """The stream's message_delta reports stop_reason "stop_sequence"."""
    run, s = page.run, page.scenario
    if run.error:
        return Verdict(False, _refused(run))
    delta = next((e for e in run.events if e["type"] == fr.MESSAGE_DELTA), None)
    reason = delta["delta"]["stop_reason"] if delta else None
    if reason == "stop_sequence":
        return Verdict(True, f"The stream ended on {_q(delta['delta']['stop_sequence'])} after "
                             f"{delta['usage']['output_tokens']} tokens: message_delta says stop_reason “stop_sequence”.")
    if not s.stop_sequences:
        return Verdict(False, f"The request has no stop sequences, so the reply ran until {reason}. Add one on Compose.")
    listed = ", ".join(_q(x, 24) for x in s.stop_sequences[:4])
    return Verdict(False, f"The reply never contains {listed}, so it ran until {reason}. "
                          "Pick words that appear in the recorded reply.")


# ---- conversation ----------------------------------------------------------------------------------------

def context_limit(lesson, page, ctx) -> Verdict:
    """The conversation's last request is refused because its prompt no longer fits the window."""
    if not ctx.get("ok"):
        why = _refused(page.run) if page.run.error else "This request cannot run."
        return Verdict(False, why + " That is not the window being full: fix it on Compose first.")
    last, limit = ctx["last"], ctx["max_prompt"]
    n = ctx["n_turns"]
    if ctx["refused"] and last["over"]:
        return Verdict(True, f"Request {last['turn']} would carry {last['input_tokens']:,} prompt tokens, more than the "
                             f"{limit:,} that fit, so the API refuses it.")
    return Verdict(False, f"{n} request{'s' if n != 1 else ''} so far; the last one carries {last['input_tokens']:,} of the "
                          f"{limit:,} prompt tokens that fit. Keep the conversation going.")


# ---- caching ---------------------------------------------------------------------------------------------

def cache_hit(lesson, page, ctx) -> Verdict:
    """Request 2 reads from the cache (cache_read_input_tokens > 0), at least ``min_clock`` minutes after request 1."""
    if not ctx.get("ok"):
        if ctx.get("api_error"):
            return Verdict(False, f"The API would refuse these breakpoints with a {ctx['api_status']}; see the page.")
        return Verdict(False, _refused(page.run) if page.run.error else "This request cannot run.")
    first, second = ctx["first"], ctx["second"]
    minutes, least = ctx["clock"], lesson.params["min_clock"]
    if second["read"] > 0:
        if minutes < least:
            return Verdict(False, f"Request 2 reads {second['read']} tokens from the cache, but it comes only {minutes} "
                                  f"minute{'s' if minutes != 1 else ''} after request 1. Keep it at least {least} minutes later.")
        return Verdict(True, f"{minutes} minutes later, request 2 reads {second['read']} tokens from the cache "
                             f"(cache_read_input_tokens) and computes only {second['input']}.")
    if ctx["n_marks"] == 0:
        return Verdict(False, "No turn carries a cache breakpoint, so nothing is cached. Mark one.")
    if first["written"] == 0:
        return Verdict(False, f"Request 1 stored nothing: the prompt up to a breakpoint must be at least {ctx['min_tokens']} "
                              "tokens long to be cached, and this one is shorter.")
    return Verdict(False, f"Request 1 stored {first['written']} tokens, but they expired before request 2 came, "
                          f"{minutes} minutes later.")


# ---- tools -------------------------------------------------------------------------------------------------

def own_tool_loop(lesson, page, ctx) -> Verdict:
    """The learner's own tool (not the form's example) was called with input that validates against its schema,
    both requests of the loop ran, and the page measured where the model looked while it wrote that input.
    Nothing asks the model to copy the question's identifier: the bundled model was never trained on tool calls,
    so the verdict reports the share it gave it, whatever that is."""
    if not ctx["own"]:
        return Verdict(False, f"The page shows the demo tool {ctx['tool_name']}. Define your own with the form “Your own tool”.")
    name = ctx["tool_name"]
    if name == ctx["example_name"]:
        return Verdict(False, f"{name} is the form's example. Give your tool a name and an input of your own.")
    run1 = ctx["run1"]
    if run1.error:
        return Verdict(False, f"The API refuses your tool: {run1.error['error']['message']}")
    if ctx["stop1"] == "max_tokens" and ctx["choice"] in ("tool", "any"):
        return Verdict(False, "The call was cut off by max_tokens before its input was complete. "
                              "Raise max_tokens on Compose, or give your tool's string fields a maxLength.")
    if ctx["stop1"] != "tool_use":
        return Verdict(False, f"With tool_choice {ctx['choice']} the model answered in text (stop_reason {ctx['stop1']}). "
                              "Pick tool or any.")
    problem = validate_input(page.scenario.tools[0]["input_schema"], ctx["call"]["input"])
    if problem is not None:  # constrained decoding makes this impossible; a check that passed it would hide a bug
        return Verdict(False, f"The call's input does not validate against your schema: {problem}")
    filled = ctx["filled"]
    if not all(filled):
        return Verdict(False, f"The loop stopped after step {filled.index(False)} of {len(filled)}.")
    a = ctx["attention"]
    if a["reason"]:
        return Verdict(False, f"{a['reason']} Give your tool a property, so the model has an argument to write.")
    call = _q(json.dumps(ctx["call"]["input"], ensure_ascii=False, separators=(",", ":")))
    if a["identifier"]:
        looked = (f"While it wrote it, the head that looks most at {_q(a['identifier'])} (layer {a['layer']}, head {a['head']}) "
                  f"gave it {a['share_pct']}% of its attention, {a['even_pct']}% if spread evenly"
                  + (": the argument is that name." if a["copied"] else ": the argument is not that name."))
    else:
        looked = (f"The question names no identifier, so the page measured the question as a whole: layer {a['layer']}, "
                  f"head {a['head']} gave it {a['share_pct']}% of its attention.")
    return Verdict(True, f"The model called {name} with {call}, valid JSON under your schema (stop_reason “tool_use”), and the "
                         f"second request, carrying the tool_result, came back with stop_reason “{ctx['stop2']}”. {looked}")


# ---- recap -------------------------------------------------------------------------------------------------

def greedy_own_question(lesson, page, ctx) -> Verdict:
    """A question other than the lesson's, and every reply token the most likely one (rank 1)."""
    s, run = page.scenario, page.run
    question = _last_user_text(s).strip()
    if not question or question == _last_user_text(lesson.start_scenario()).strip():
        return Verdict(False, "This is still the lesson's question. Ask one of your own on Compose.")
    if run.error:
        return Verdict(False, _refused(run))
    if not run.steps:
        return Verdict(False, "The reply has no tokens.")
    params = SamplingParams(s.temperature, s.top_k, s.top_p)
    not_top = []
    for st in run.steps:
        dist = distribution(np.asarray(st["logits"], dtype=np.float64), params, banned=step_banned(page.engine.tokenizer, st))
        rank = int(np.flatnonzero(dist.order == st["token"])[0]) + 1
        if rank > 1:
            not_top.append((st["index"], st["text"], rank))
    n = len(run.steps)
    if not not_top:
        return Verdict(True, f"All {n} reply tokens were the model's first choice.")
    i, text, rank = not_top[0]
    return Verdict(False, f"{len(not_top)} of the {n} reply tokens were not the model's first choice; the first is "
                          f"{_q(text)} at step {i + 1}, ranked {rank}.")


# ---- serving -----------------------------------------------------------------------------------------------

def shared_step(lesson, page, ctx) -> Verdict:
    """In the scheduler's record, a decode step gave rows to this request and at least ``others`` other requests, and
    its reply is the same tokens as alone."""
    data = ctx.get("data") or {}
    if not data.get("runnable"):
        return Verdict(False, _refused(page.run) if page.run.error else "This request cannot run on a batch scheduler.")
    you, least = data["figures"]["you"], lesson.params["others"]
    if you is None or not you["tokens"]:
        return Verdict(False, "This request had no decode step in the record: its reply ended with its first token. Ask for more tokens.")
    others = you["largest_batch"] - 1
    if not data["same_tokens"]:
        return Verdict(False, "This request's tokens differ from its run alone: the batch changed its reply.")
    if others < least:
        return Verdict(False, f"This request's fullest step had {others} other request{'s' if others != 1 else ''} beside it "
                              f"({data['ran']} were sent alongside). Send more, so that one step serves it and at least {least} others.")
    return Verdict(True, f"One step computed this request's next token beside {others} others' (a batch of {you['largest_batch']} rows), "
                         f"and its {data['reply_tokens']} tokens are still the ones it produces alone.")


CHECKS = {
    "temperature_word": temperature_word,
    "prefill": prefill,
    "never_admitted": never_admitted,
    "vocabulary_ratio": vocabulary_ratio,
    "previous_token_head": previous_token_head,
    "different_draw": different_draw,
    "stop_sequence": stop_sequence,
    "context_limit": context_limit,
    "cache_hit": cache_hit,
    "own_tool_loop": own_tool_loop,
    "shared_step": shared_step,
    "greedy_own_question": greedy_own_question,
}
