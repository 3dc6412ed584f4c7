from __future__ import annotations

import json
import re
from functools import cached_property
from urllib.parse import urlencode

from django.http import JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from explainer.lifecycle.engine import Run
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.pricing import priced_models
from explainer.lifecycle.scenario import Scenario, ScenarioError
from explainer.llm import jsonlimits
from explainer.llm.catalog import BUNDLED_NAME
from explainer.llm.interface import ModelLoadError
from explainer.stages.options import OptionError, parse_options, single
from explainer.stages.registry import BY_SLUG, LAST_NUMBER, STAGES, Stage, neighbours
from explainer.stages.runs import check_model, codec, engine, link_model, run_of, stamp
from explainer.web.pages import MAX_QUERY_CHARS, bundled_info, error_page, frameable
from explainer.web.runner import catalog, engine_for, model_view, refused_json, refused_page

MODEL_NAMES = priced_models()  # the models a page offers: the known ones whose price is known


class StagePage:
    """What a stage's page module gets: the scenario, the view options, the computed run."""

    def __init__(self, stage: Stage, scenario: Scenario, blob: str, opts: dict, embed: bool = False,
                 origin: tuple[str, int] | None = None):
        self.stage, self.scenario, self.blob, self.opts = stage, scenario, blob, opts
        self.embed = embed  # shown inside an iframe: every link to a stage stays embedded
        # The inspector's recorded call this walk-through replays (session id, call number): its stages link
        # back to it, and keep it in their links to each other, but never in a permalink (the session's id is
        # what lets its holder see the session).
        self.origin = origin
        self.engine = engine(scenario)

    @property
    def origin_url(self) -> str | None:
        return reverse("inspect-call", args=[self.origin[0], str(self.origin[1])]) if self.origin else None

    @cached_property
    def run(self) -> Run:
        return run_of(self.scenario)

    def url(self, slug: str | None = None, scenario: Scenario | None = None, **opts) -> str:
        """Link to a stage (this one by default) keeping the scenario (and embed mode); ``opts`` are view options."""
        return self._url(slug, scenario, self.embed, opts)

    def full_url(self, slug: str | None = None, scenario: Scenario | None = None, **opts) -> str:
        """Like ``url`` but always the full page, never embedded: for permalinks and "open in the explainer"."""
        return self._url(slug, scenario, False, opts, origin=False)

    def _url(self, slug, scenario, embed: bool, opts: dict, origin: bool = True) -> str:
        blob = self.blob if scenario is None else codec().encode(_stamped(scenario))
        query = {"s": blob} if blob else {}
        query.update({k: v for k, v in opts.items() if v is not None})
        if embed:
            query["embed"] = "1"
        if origin and self.origin and scenario is None:  # the same replay, another stage of it
            query["call"] = f"{self.origin[0]}/{self.origin[1]}"
        path = reverse("stage", args=[slug or self.stage.slug])
        return path + ("?" + urlencode(query) if query else "")


def _stamped(scenario: Scenario) -> Scenario:
    try:
        return stamp(scenario)
    except ModelLoadError:  # evicted and not reopenable since the page was checked: the link says so when opened
        return scenario


_ORIGIN = re.compile(r"([A-Za-z0-9_-]{1,32})/([1-9][0-9]{0,5})")


def _origin(request) -> tuple[str, int] | None:
    """``call=<inspector session>/<n>``: the recorded call a replay link came from (the inspector's call page)."""
    raw = single(request.GET, "call")
    if raw in (None, ""):
        return None
    m = _ORIGIN.fullmatch(raw)
    if m is None:
        raise OptionError("“call” must be an inspector session's id and a call number, like abc123/4: "
                          "the recorded call this replay came from.")
    return m.group(1), int(m.group(2))


def _embed_flag(request) -> bool:
    """``embed=1`` shows a stage without the site's chrome, for an iframe; ``0`` or absent is the full page."""
    raw = single(request.GET, "embed")
    if raw in (None, "", "0"):
        return False
    if raw == "1":
        return True
    raise OptionError("“embed” must be 1 (the stage alone, for an iframe) or 0.")


def _og_image(request, slug: str) -> str:
    """Absolute URL of the stage's preview picture (made by scripts/og_images.py)."""
    return request.build_absolute_uri(static(f"og/{slug}.png"))


@model_view(link_model, refused_page)  # a local model's page is computed in its own workers (runner.py)
@require_GET
def home(request):
    return stage.__wrapped__(request, "overview")


class Refused(Exception):
    """A stage request that cannot be shown: a 404 (no such stage) or a 400 (a link that does not decode)."""

    def __init__(self, status: int, title: str, message: str, back: str, embed: bool = False):
        super().__init__(message)
        self.status, self.title, self.message, self.back, self.embed = status, title, message, back, embed


def computed(request, slug: str) -> tuple[Stage, StagePage, dict]:
    """The stage, its page (scenario, view options, run) and its context, for a request's query string."""
    st = BY_SLUG.get(slug)
    if st is None or not st.built:
        msg = (f"“{slug[:60]}” is not a stage of the walk-through." if st is None
               else f"The {st.title} stage is not part of this version yet.")
        raise Refused(404, "No such stage", msg, reverse("stage", args=["overview"]))
    path = reverse("stage", args=[slug])
    if len(request.META.get("QUERY_STRING", "")) > MAX_QUERY_CHARS:
        raise Refused(400, "Link too long", f"This link is longer than {MAX_QUERY_CHARS:,} characters, so it is not read.", path)
    try:
        embed = _embed_flag(request)
        origin = _origin(request)
        blob = single(request.GET, "s") or ""
    except OptionError as exc:
        raise Refused(400, "This link cannot be shown", str(exc), path) from None
    try:
        scenario = codec().decode(blob)
        why = check_model(scenario)
        if why:
            raise ScenarioError(why)
        opts = parse_options(st.page.OPTIONS, request.GET)
        page = StagePage(st, scenario, blob, opts, embed=embed, origin=origin)
        ctx = st.page.context(page)
    except (ScenarioError, OptionError) as exc:
        raise Refused(400, "This link cannot be shown", str(exc), path + ("?embed=1" if embed else ""), embed) from None
    return st, page, ctx


def page_data(st: Stage, ctx: dict) -> dict:
    """The stage's data as its scripts read it: ``{element id: value}`` from the page module's ``DATA``."""
    return {element: ctx[key] for element, key in getattr(st.page, "DATA", {}).items() if key in ctx}


# Stages whose first visit runs seconds of the model's work (Serving: a case of up to 17 requests at once):
# they run in the bundled model's pool, not on the one thread every other synchronous page waits for.
LONG_STAGES = frozenset({"serving"})


def _long(request, slug: str) -> bool:
    return slug in LONG_STAGES


@model_view(link_model, refused_json(), long=_long)
@require_GET
def stage_data(request, slug: str):
    """``/learn/<slug>/data?<the page's query string>``: the same data the page embeds, as JSON, for
    scripts that change the view in place and for tests; never HTML to scrape."""
    try:
        st, page, ctx = computed(request, slug)
    except Refused as exc:
        return JsonResponse({"error": {"type": "not_found_error" if exc.status == 404 else "invalid_request_error",
                                       "message": exc.message}}, status=exc.status)
    return JsonResponse({"stage": slug, "data": page_data(st, ctx)}, json_dumps_params={"ensure_ascii": False})


@model_view(link_model, refused_page, long=_long)
@require_GET
def stage(request, slug: str):
    try:
        st, page, ctx = computed(request, slug)
    except Refused as exc:
        return error_page(request, exc.status, exc.title, exc.message, back=exc.back, embed=exc.embed)
    scenario, blob, opts, embed = page.scenario, page.blob, page.opts, page.embed
    prev, nxt = neighbours(slug)
    rail = [{"stage": x, "url": page.url(x.slug), "current": x.slug == slug} for x in STAGES if x.built]
    # The link to share is always the full page; "Copy embed code" adds embed=1 itself.
    permalink = request.build_absolute_uri(page.full_url(**{k: v for k, v in opts.items() if v != st.page.OPTIONS[k].default}))
    common = {
        "stage": st, "page": page, "scenario": scenario, "s": blob, "opts": opts,
        "prev": {"stage": prev, "url": page.url(prev.slug)} if prev else None,
        "next": {"stage": nxt, "url": page.url(nxt.slug)} if nxt else None,
        "rail": rail, "stages": STAGES, "bundled": bundled_info(page.engine),
        "step_number": st.number, "last_number": LAST_NUMBER,
        "model_names": MODEL_NAMES, "local_models": catalog().names(), "bundled_name": BUNDLED_NAME,
        "run_error_json": json.dumps(page.run.error, indent=2, ensure_ascii=False) if page.run.error else "",
        "permalink": permalink,
        "embed": embed,
        "compose_url": page.url("compose"),
        "transformer_url": page.url("transformer"),
        "og_image": _og_image(request, slug),
        "page_data": page_data(st, ctx),
    }
    return frameable(render(request, st.template, common | ctx), embed)


def _body_model(request) -> str | None:
    """The model a scenario body names (stamping a local model's link opens it: that runs in its workers)."""
    data = jsonlimits.loads(request.body or b"{}") if len(request.body) <= 64 * 1024 else None
    return data.get("model") if isinstance(data, dict) else None


@model_view(_body_model, refused_json(lambda exc: {"error": exc.message}))
@csrf_exempt  # a pure function of its input: it changes nothing on the server
@require_POST
def encode_scenario(request):
    """JSON in (scenario fields), ``{"s": blob}`` out: lets pages update their permalink after local edits."""
    if len(request.body) > 64 * 1024:
        return JsonResponse({"error": "The scenario is too large."}, status=413)
    try:
        data = jsonlimits.loads(request.body or b"{}")
        scenario = Scenario.from_changes(data)
        why = check_model(scenario.replace(weights=""))
        if why:
            raise ScenarioError(why)
        return JsonResponse({"s": codec().encode(stamp(scenario))})
    except jsonlimits.TooDeep as exc:
        return JsonResponse({"error": f"The scenario is nested too deeply: {exc}."}, status=400)
    except (ValueError, ScenarioError) as exc:
        msg = str(exc) if isinstance(exc, ScenarioError) else "The body must be a JSON object of scenario fields."
        return JsonResponse({"error": msg}, status=400)
    except TypeError:
        return JsonResponse({"error": "The body must be a JSON object of scenario fields."}, status=400)


MAX_COUNT_BODY = 256 * 1024  # a page's request as it is typed: far more than a window of text
_AT_LEAST = re.compile(r"at least (\d+) tokens")
_COUNTED = ("model", "system", "messages", "tools", "tool_choice")  # what count_tokens reads of a body


@model_view(_body_model, refused_json(lambda exc: {"error": exc.message}))
@csrf_exempt  # a pure function of its input: it changes nothing on the server
@require_POST
def count_prompt(request):
    """JSON in (a Messages body, as a page would send it), ``{"input_tokens", "window", "fits"}`` out: the prompt
    counted by the tokenizer and chat template that will run it, against the most the model's window lets a prompt
    take, while a person types (Compose, the overview, a room's stage). ``at_least``: the text is too long to count
    exactly (more bytes than the window could ever hold), and ``input_tokens`` is the least it would take."""
    if len(request.body) > MAX_COUNT_BODY:
        return JsonResponse({"error": f"The request is larger than {MAX_COUNT_BODY // 1024} KB, far more than the window holds."},
                            status=413)
    try:
        data = jsonlimits.loads(request.body or b"{}")
    except (ValueError, jsonlimits.TooDeep):
        return JsonResponse({"error": "The body must be a JSON object: a Messages API request."}, status=400)
    if not isinstance(data, dict):
        return JsonResponse({"error": "The body must be a JSON object: a Messages API request."}, status=400)
    data = {k: v for k, v in data.items() if k in _COUNTED}  # the sampling settings change no prompt
    try:
        req = parse_request(data, counting=True)
        eng = engine_for(req.model)
        window = eng.max_prompt_tokens
        try:
            n, at_least = len(eng.prompt_ids(req)), False
        except APIError as exc:  # more text than any count of it could fit
            found = _AT_LEAST.search(exc.message)
            if not found:
                raise
            n, at_least = int(found.group(1)), True
    except APIError as exc:
        return JsonResponse({"error": exc.message}, status=exc.status if exc.status < 500 else 400)
    except ModelLoadError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"input_tokens": n, "at_least": at_least, "window": window, "fits": n <= window})


def bad_request(request, exception=None):
    return error_page(request, 400, "Bad request", "This address could not be understood.")


def not_found(request, exception=None):
    return error_page(request, 404, "Page not found", "There is no page at this address.")


def server_error(request):
    return error_page(request, 500, "Something went wrong", "The server hit an error. It has been logged; try again.")
