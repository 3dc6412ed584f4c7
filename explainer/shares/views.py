from __future__ import annotations

import ipaddress
import json

from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST, require_safe

from explainer.lifecycle import frames as fr
from explainer.lifecycle.scenario import Scenario, ScenarioError
from explainer.shares import traces as recorder
from explainer.shares.models import Trace
from explainer.shares.traces import ensure_attention
from explainer.stages.registry import BY_SLUG, REQUEST_STEPS
from explainer.stages.runs import codec
from explainer.web.pages import bundled_info, error_page

SCENARIO_FIELDS = ("system", "messages", "model", "max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "stream")


def _from_this_machine(request) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def scenario_of(trace: Trace) -> Scenario | None:
    """The stage pages' scenario for this call (the API samples with seed 0, so it replays exactly)."""
    body = trace.request.get("body")
    if trace.endpoint != "messages" or not isinstance(body, dict) or trace.status != 200 or trace.request.get("body_altered"):
        return None  # altered to be stored (recorder.Cleaner) or truncated: not the request as sent
    data = {k: body[k] for k in SCENARIO_FIELDS if k in body and body[k] is not None}
    if isinstance(data.get("system"), list):
        data["system"] = "".join(b.get("text", "") for b in data["system"] if isinstance(b, dict))
    data.setdefault("temperature", 1.0)
    data["stream"] = bool(data.get("stream", False))
    data["seed"] = 0
    try:
        return Scenario.from_changes(data)
    except (ScenarioError, TypeError):
        return None


def _live(trace_id: str) -> Trace | None:
    return Trace.objects.filter(id=trace_id[:32], expires_at__gt=timezone.now()).first()


def _written(trace_id: str) -> Trace | None:
    """The trace, waiting a moment when this process is still writing it (traces are written after the call answers)."""
    trace = _live(trace_id)
    if trace is None and recorder.wait_until_written(trace_id[:32], timeout=WRITE_WAIT):
        trace = _live(trace_id)
    return trace


WRITE_WAIT = 5.0  # seconds; a write normally lands within milliseconds of the call's answer
RECORDING_RECHECK = 2  # seconds between the "being recorded" page's checks


@cache_control(no_store=True)  # a list of other people's calls: no browser cache or proxy keeps it
@require_GET
def trace_list(request):
    if not _from_this_machine(request):
        return error_page(request, 403, "Traces are private", "The list of traces is shown only on the machine that runs the app. A trace's own link works anywhere.")
    recorder.wait_for_writes(timeout=WRITE_WAIT)  # calls that have answered are listed
    traces = Trace.objects.filter(expires_at__gt=timezone.now())[:100]
    return render(request, "shares/traces.html", {"traces": traces, "bundled": bundled_info()})


@cache_control(no_store=True)  # someone's recorded call, prompt and reply included: no browser cache or proxy keeps it
@require_safe  # HEAD too: the "being recorded" page asks for the status only (static/js/trace-recording.js)
def trace_detail(request, trace_id: str):
    trace = _written(trace_id)
    why = recorder.failure(trace_id[:32]) if trace is None else None
    if why is not None:  # the write failed and not even an outline could be stored: say so, not "no such trace"
        return error_page(request, 404, "This trace was not saved",
                      f"The call was answered, but saving its trace failed ({why}). Nothing of it was stored; "
                      "make the call again for a new trace.")
    if trace is None and (recorder.is_pending(trace_id[:32]) or recorder.recently_issued(trace_id)):
        # Still being written, here or by another process of this server: the page asks again until it is there.
        resp = render(request, "shares/recording.html", {"bundled": bundled_info(), "every": RECORDING_RECHECK}, status=202)
        resp["Cache-Control"] = "no-store"
        return resp
    if trace is None:
        return error_page(request, 404, "No such trace", "This trace does not exist, has expired, or was deleted.")
    _clean_for_the_page(trace)
    scenario = scenario_of(trace)
    links, link_error = [], None
    if scenario is not None:
        try:
            blob = codec().encode(scenario)
            q = f"?s={blob}" if blob else ""
            links = [{"stage": BY_SLUG[s], "url": reverse("stage", args=[s]) + q} for s in ("overview", *REQUEST_STEPS, "recap") if BY_SLUG[s].built]
        except ScenarioError as exc:
            link_error = str(exc)
    attention = []
    for name, row in sorted(ensure_attention(trace).items()):
        parts = name.split("_")  # block_{l}_attn_head_{h}_weights
        attention.append({"name": name, "layer": int(parts[1]), "head": int(parts[4]), **row})
    text = ""
    if trace.response and isinstance(trace.response, dict) and trace.response.get("type") == fr.MESSAGE:
        text = "".join(b.get("text", "") for b in trace.response.get("content", []) if b.get("type") == fr.TEXT)
    elif trace.events:
        text = "".join(e["delta"].get("text", "") for e in trace.events if e["type"] == fr.CONTENT_BLOCK_DELTA)
    return render(request, "shares/trace.html", {
        "trace": trace, "links": links, "link_error": link_error, "attention": attention, "text": text,
        "request_json": json.dumps(trace.request, indent=2, ensure_ascii=False),
        "response_json": json.dumps(trace.response, indent=2, ensure_ascii=False) if trace.response is not None else "",
        "events_json": "\n".join(json.dumps(e, ensure_ascii=False) for e in trace.events),
        "bundled": bundled_info(),
    })


def _clean_for_the_page(trace: Trace) -> None:
    """Rows stored before traces were cleaned (``recorder.Cleaner``) may hold lone surrogates, which no page can encode."""
    clean = recorder.Cleaner()
    for name in ("request", "gateway", "steps", "events", "response", "usage", "timings"):
        setattr(trace, name, clean.clean(getattr(trace, name)))
    trace.model = clean.text(trace.model)


@cache_control(no_store=True)
@require_POST
def trace_delete(request, trace_id: str):
    recorder.wait_until_written(trace_id[:32], timeout=WRITE_WAIT)  # else the pending write would bring it back
    Trace.objects.filter(id=trace_id[:32]).delete()
    return HttpResponseRedirect(reverse("trace-list") if _from_this_machine(request) else "/")
