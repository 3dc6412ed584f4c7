"""Gateway (simulated in this version): body size, key check, validation, rate-limit buckets, the
cache-prefix lookup and the error bodies a client can get before any model runs.

The checks and their answers come from ``explainer.lifecycle.gateway`` and the payload validator;
the browser mirrors the same token-bucket algorithm with the limits sent from here, so a burst of
"Fire" clicks gives the same 429 (and retry-after) that the Python code computes.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from explainer.lifecycle.errors import STATUS, APIError
from explainer.lifecycle.figures import run_figures
from explainer.lifecycle.gateway import (
    CACHE_TTL_SECONDS,
    DIMENSIONS,
    INVALID_KEY_MESSAGE,
    Limits,
    RateLimiter,
    body_too_large,
    check_body_size,
    check_key,
    overloaded,
    prefix_chain,
    prefix_key,
    rate_limit_error,
    ratelimit_headers,
    rfc3339,
)
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.snippets import json_text
from explainer.stages.options import ChoiceOption
from explainer.stages.registry import BY_SLUG

# Small on purpose, so a few clicks reach them. Real limits depend on the organisation's usage tier and the model.
SIM_LIMITS = Limits(requests_per_minute=5, input_tokens_per_minute=4_000, output_tokens_per_minute=2_000)
PUBLIC_API_MAX_BODY = "32 MB"  # the Messages API's request size limit
EXAMPLE_TIME = 1_767_268_800.0  # 2026-01-01T12:00:00Z: a fixed clock for the worked example, so the page is repeatable
DEMO_KEY = "sk-exp-demo-0000-valid"
WRONG_KEY = "sk-exp-demo-0000-revoked"
KEY_CASES = {"valid": {"x-api-key": DEMO_KEY}, "missing": {}, "wrong": {"x-api-key": WRONG_KEY}}

KEY_LABELS = {"valid": "a valid key", "missing": "no key", "wrong": "a revoked key"}

DATA = {"gateway-sim": "gateway_sim"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS = {"key": ChoiceOption("valid", tuple(KEY_CASES))}


def _header_line(headers: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in headers.items()) or "no x-api-key or Authorization header"


def _error(exc: APIError, headers: dict | None = None) -> dict:
    return {"status": exc.status, "type": exc.type, "body": exc.body(), "json": json_text(exc.body()),
            "headers": {**(headers or {}), **exc.headers}}


def _http(status: int, headers: dict, body: str) -> str:
    """A response as ``curl -i`` prints it: status line, headers, a blank line, the body."""
    return "\n".join([f"HTTP/2 {status}", *(f"{k}: {v}" for k, v in headers.items()), "", body])


def _key_answer(case: str) -> dict | None:
    try:
        check_key(KEY_CASES[case], {DEMO_KEY}.__contains__)
    except APIError as exc:
        return _error(exc)
    return None


def _burst(n_in: int, max_tokens: int, n_out: int) -> dict:
    """Fire this request at a fresh limiter, all at one instant, until it is refused: the worked 429."""
    lim = RateLimiter(SIM_LIMITS, now=EXAMPLE_TIME)
    passed = 0
    for _ in range(SIM_LIMITS.requests_per_minute + 1):  # the requests bucket refuses the sixth at the latest
        d = lim.admit(n_in, max_tokens, EXAMPLE_TIME)
        if not d.allowed:
            headers = ratelimit_headers(SIM_LIMITS, lim.snapshot(EXAMPLE_TIME), EXAMPLE_TIME, retry_after=d.retry_after)
            err = rate_limit_error(d.limited_by, SIM_LIMITS, need=d.needs[d.limited_by], headers=headers)
            return {"passed": passed, "limited_by": d.limited_by, "never": d.retry_after is None, "error": _error(err)}
        lim.settle(max_tokens, n_out, EXAMPLE_TIME)
        passed += 1
    return {"passed": passed, "limited_by": None, "never": False, "error": None}


def _prefix_chain(page) -> tuple[list[dict], dict]:
    """The prompt's prefix at each turn boundary, keyed as the engine's prompt cache keys it, and what
    that shared cache (the API's and the live socket's) holds for each right now, read without touching it."""
    run, engine = page.run, page.engine
    if run.request is None:
        return [], {}
    try:
        ids, ends = engine.prompt_segments(run.request)
    except APIError:  # refused on its length before it is cut into tokens: there is no prefix to key
        return [], {}
    cache = engine.prompt_cache
    chain = prefix_chain(ids, ends, cache.model_id)
    live = {p["length"]: p for p in cache.peek(ids, [(n, "5m") for n in ends.values()])}
    return chain, live


@dataclass
class Checks:
    """What the gateway's checks answer for this request: its size, each key case, the validator, the rate limits."""
    figures: dict
    n_in: int
    n_out: int
    needs: dict
    size_error: dict | None
    keys: dict
    validation: dict | None
    rate_errors: dict
    burst: dict | None


def _checks(page) -> Checks:
    s, run = page.scenario, page.run
    figures = run_figures(run, page.engine.max_prompt_tokens)  # the one count every page shows
    n_in = len(run.prompt_ids)
    n_out = run.done["usage"]["output_tokens"] if run.done else 0
    needs = {"requests": 1, "input_tokens": n_in, "output_tokens": s.max_tokens}
    try:
        check_body_size(figures["body_bytes"], settings.EXPLAINER_API_MAX_BODY_BYTES)  # the compact JSON the SDKs send
        size_error = None
    except APIError as exc:
        size_error = _error(exc)
    validation = None
    if run.error:
        validation = {"status": STATUS[run.error["error"]["type"]], "type": run.error["error"]["type"],
                      "body": run.error, "json": json_text(run.error), "headers": {}}
    burst = _burst(n_in, s.max_tokens, n_out) if not run.error else None
    if burst and burst["limited_by"]:
        burst["limited_by_words"] = burst["limited_by"].replace("_", " ")
    return Checks(figures, n_in, n_out, needs, size_error, {case: _key_answer(case) for case in KEY_CASES}, validation,
                  {d: _error(rate_limit_error(d, SIM_LIMITS, need=needs[d])) for d in DIMENSIONS}, burst)


def _invalid_example(body: dict) -> dict | None:
    """The validator's answer to this request with an assistant turn put first."""
    probe = {**body, "messages": [{"role": "assistant", "content": "Hello!"}, *body["messages"]]}
    try:
        parse_request(probe)
    except APIError as exc:
        return _error(exc)
    return None


def _gallery(checks: Checks, body: dict, size_limit: int) -> list[dict]:
    """The errors a client meets, each as the gateway answers it, with when it happens and what to do."""
    burst, validation = checks.burst, checks.validation
    gallery = [
        {"code": 401, "title": "Missing or wrong key", "error": checks.keys["missing"],
         "when": "No x-api-key or Authorization: Bearer header, or a key that is unknown or revoked. "
                 f"A wrong key gets the same status with “{INVALID_KEY_MESSAGE}”: nothing tells which part was wrong.",
         "fix": "Send a valid key. Retrying the same request does not help."},
    ]
    if burst and burst["error"]:
        gallery.append({
            "code": 429, "title": "Rate limited", "error": burst["error"],
            "when": (f"This request fired {burst['passed'] + 1} times in the same second: the first {burst['passed']} "
                     f"passed, then the {burst['limited_by'].replace('_', ' ')} bucket was short. "
                     "The headers are the simulated gateway's at that instant (12:00:00)."),
            "fix": ("Lower max_tokens or shorten the prompt: waiting will not help." if burst["never"]
                    else "Wait the retry-after seconds (the SDKs do this for you) and send it again."),
        })
    invalid = None if validation else _invalid_example(body)
    if validation:
        gallery.append({"code": validation["status"], "title": "This request is invalid", "error": validation,
                        "when": "The validator found a rule this request breaks (the Compose stage shows it).",
                        "fix": "Change the request. Retrying it unchanged gets the same answer."})
    elif invalid:
        gallery.append({"code": 400, "title": "Invalid request", "error": invalid,
                        "when": "This request with an assistant turn put first, checked by the real validator: "
                                "a 400 names the first field that breaks a rule.",
                        "fix": "Change the request. Retrying it unchanged gets the same answer."})
    gallery += [
        {"code": 413, "title": "Request too large", "error": _error(body_too_large(size_limit)),
         "when": f"A body over {size_limit:,} bytes, this server's limit (the public API takes up to {PUBLIC_API_MAX_BODY}). "
                 "It is refused before the JSON is even read.",
         "fix": "Send less: trim the history, or pass large documents another way."},
        {"code": 529, "title": "Overloaded", "error": _error(overloaded()),
         "when": "Every model server is busy. This is not your limit: your headers may show plenty left.",
         "fix": "Retry after a short, growing wait; the SDKs retry 529 (and 429, 408, 409, 5xx) twice by default."},
    ]
    for g in gallery:
        e = g["error"]
        headers = {"request-id": "req_sim_example", "content-type": "application/json", **e["headers"]}
        g["http"] = _http(e["status"], headers, e["json"])
    return gallery


def _sim(page, checks: Checks, key: str, n_blocks: int) -> dict:
    """The page script's data (``gateway-sim``, also served by /learn/gateway/data): the simulated gateway's inputs."""
    f = checks.figures
    return {
        "limits": SIM_LIMITS.to_dict(),
        "needs": checks.needs,
        "output_tokens": checks.n_out,
        "stream": page.scenario.stream,
        "key": page.opts["key"],
        "key_errors": {case: err["body"] if err else None for case, err in checks.keys.items()},
        "size_error": checks.size_error["body"] if checks.size_error else None,
        "validation_error": checks.validation["body"] if checks.validation else None,
        "rate_errors": {d: e["body"] for d, e in checks.rate_errors.items()},
        "overloaded": overloaded().body(),
        "prefix": key,
        "prefix_blocks": n_blocks,
        "cache_ttl": CACHE_TTL_SECONDS,
        "example_time": EXAMPLE_TIME,
        "figures": {k: f[k] for k in ("body_bytes", "input_tokens", "output_tokens", "refused", "status")},
    }


def _bucket_rows(max_tokens: int, n_out: int) -> list[dict]:
    rpm = SIM_LIMITS.requests_per_minute
    back = max(0, max_tokens - n_out)
    return [
        {"dim": "requests", "label": "Requests", "limit": rpm, "refill": f"Refills one every {60 / rpm:g} s."},
        {"dim": "input_tokens", "label": "Input tokens", "limit": SIM_LIMITS.input_tokens_per_minute,
         "refill": f"Refills about {SIM_LIMITS.input_tokens_per_minute / 60:.0f} a second."},
        {"dim": "output_tokens", "label": "Output tokens", "limit": SIM_LIMITS.output_tokens_per_minute,
         "refill": f"Refills about {SIM_LIMITS.output_tokens_per_minute / 60:.0f} a second."
                   + (f" After the reply, the {back:,} reserved but unused go back." if back else "")},
    ]


def context(page) -> dict:
    s, run = page.scenario, page.run
    size_limit = settings.EXPLAINER_API_MAX_BODY_BYTES
    checks = _checks(page)
    chain, live = _prefix_chain(page)
    key = chain[-1]["hash"] if chain else prefix_key(run.prompt_ids, page.engine.prompt_cache.model_id)
    keys = checks.keys
    return {
        "wide": True,
        "bucket_rows": _bucket_rows(s.max_tokens, checks.n_out),
        "n_bytes": checks.figures["body_bytes"],
        "size_limit": size_limit,
        "public_max_body": PUBLIC_API_MAX_BODY,
        "size_error": checks.size_error,
        "key_case": page.opts["key"],
        "key_cases": [{"case": c, "label": KEY_LABELS[c], "header": _header_line(KEY_CASES[c]), "error": keys[c]} for c in KEY_CASES],
        "key_error": keys[page.opts["key"]],
        # a check that fails without firing anything (size, key, format): the checks after it are not reached
        "stopped_before": bool(checks.size_error or keys[page.opts["key"]] or checks.validation),
        "validation": checks.validation,
        "limits": SIM_LIMITS,
        "needs": checks.needs,
        "n_in": checks.n_in,
        "n_out": checks.n_out,
        "burst": checks.burst,
        "chain": [{"label": c["label"], "tokens": c["tokens"], "hash": c["hash"][:16], "live": live.get(c["tokens"])}
                  for c in chain],
        "prefix": key[:16],
        "cache_ttl_min": CACHE_TTL_SECONDS // 60,
        "gallery": _gallery(checks, s.request_body(), size_limit),
        "example_clock": rfc3339(EXAMPLE_TIME),
        "caching_url": page.url("caching") if BY_SLUG["caching"].built else None,
        "tokenize_url": page.url("tokenize") if BY_SLUG["tokenize"].built else None,
        "gateway_sim": _sim(page, checks, key, len(chain)),
    }


def recap(page) -> dict:
    """Gateway's card on the recap is marked simulated (its row and card read the run's figures)."""
    return {"simulated": True}
