"""The tutorial: the lesson path page, the lessons as JSON for the stage pages' task panel,
the start of a lesson, and the server-side check of its task.

The lessons run on the bundled model unless the learner picks a local model on the path page
(``?model=NAME``): the start links then carry that model in their scenario, and the check's
"next lesson" link keeps it, except for a lesson that needs the bundled model's own replies."""
from __future__ import annotations

import re
from urllib.parse import urlencode

from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from explainer.lifecycle.scenario import ScenarioError
from explainer.llm.catalog import BUNDLED_NAME
from explainer.llm.interface import ModelLoadError
from explainer.stages.examples import examples
from explainer.stages.options import OptionError, parse_options, single
from explainer.stages.runs import check_model, codec, link_model
from explainer.stages.views import StagePage
from explainer.tutorial.checks import CHECKS, Verdict
from explainer.tutorial.lessons import Lesson, by_id, following, lessons
from explainer.web.pages import MAX_QUERY_CHARS, bundled_info
from explainer.web.runner import catalog, is_local_model, model_view, refused_json, refused_page


def _start_url(lesson: Lesson, model: str | None = None) -> str:
    """The lesson's start link, on the local model ``model`` unless the lesson needs the bundled one."""
    url = reverse("tutorial-start", args=[lesson.id])
    return url + "?" + urlencode({"model": model}) if model and not lesson.bundled_only else url


def _lesson_json(lesson: Lesson, model: str | None = None) -> dict:
    nxt = following(lesson)
    return {
        "id": lesson.id, "number": lesson.number, "stage": lesson.stage_slug, "stage_title": lesson.stage.title,
        "title": lesson.title, "task": lesson.task, "hint": lesson.hint, "learned": lesson.learned, "target": lesson.target,
        "start_url": _start_url(lesson, model), "bundled_only": lesson.bundled_only,
        "check_url": reverse("tutorial-check", args=[lesson.id]),
        "next": nxt.id if nxt else None,
    }


def _local_model(request) -> str | None:
    """The installed local model that ``?model=`` names; None for none (the bundled model)."""
    name = request.GET.get("model", "")
    return name if is_local_model(name) else None


@require_GET
def lesson_path(request):
    model = _local_model(request)
    rows = [_lesson_json(x, model) for x in lessons()]
    return render(request, "tutorial/path.html", {
        "lessons": rows, "bundled": bundled_info(), "model": model, "local_models": catalog().names(),
        "bundled_name": BUNDLED_NAME, "unknown_model": request.GET.get("model", "")[:64] if not model else "",
        "examples": [{**e, "url": reverse("stage", args=["overview"]) + "?" + urlencode({"s": e["s"]})} for e in examples()],
        "tutorial_data": {"lessons": [{"id": r["id"], "start_url": r["start_url"], "title": r["title"]} for r in rows]},
    })


@require_GET
def lessons_json(request):
    return JsonResponse({"lessons": [_lesson_json(x) for x in lessons()], "path_url": reverse("tutorial")})


@model_view(lambda request, lesson_id: request.GET.get("model"), refused_page)  # a local model opens in its workers
@require_GET
def start(request, lesson_id: str):
    """The lesson's stage with its start scenario (on ``?model=``, a local model, if given) and options; the
    fragment tells tutorial.js which lesson is on."""
    lesson = by_id().get(lesson_id)
    if lesson is None:
        return render(request, "error.html", {
            "title": "No such lesson", "message": f"“{lesson_id[:60]}” is not a lesson of the tutorial.",
            "back": reverse("tutorial"), "bundled": bundled_info()}, status=404)
    model = _local_model(request)
    if request.GET.get("model") and model is None:
        return render(request, "error.html", {
            "title": "No such model", "message": f"“{request.GET['model'][:60]}” is not a local model on this server.",
            "back": reverse("tutorial"), "bundled": bundled_info()}, status=404)
    try:
        url = lesson.start_url(model)
    except ModelLoadError as exc:  # installed, but its folder cannot be opened
        return render(request, "error.html", {
            "title": "This model cannot be opened", "message": str(exc), "back": reverse("tutorial"),
            "bundled": bundled_info()}, status=400)
    return HttpResponseRedirect(f"{url}#tutorial={lesson.id}")


SEEN = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
SEEN_PROMPTS = {
    "never-429": "This request could never pass: now press Fire request and see the gateway answer 429, with no retry-after.",
}


def _seen(request) -> set[str]:
    """What the learner has seen on the page (``seen=never-429``): the page reports it to tutorial.js when it happens."""
    values = request.GET.getlist("seen")
    if len(values) > 8 or not all(SEEN.fullmatch(v) for v in values):
        raise OptionError("“seen” must be up to 8 short names of things the page showed.")
    return set(values)


def _refuse(status: int, message: str) -> JsonResponse:
    return JsonResponse({"done": False, "error": message}, status=status)


@model_view(link_model, refused_json(lambda exc: {"done": False, "error": exc.message}))
@require_GET
def check(request, lesson_id: str):
    """``GET /tutorial/check/<lesson>?<the stage page's own query string>`` -> ``{"done", "message", "next_url"}``.

    The scenario and view options are read exactly as the stage page reads them (an altered
    link, a local model that is not here or has other weights, or an option out of range is a 400
    with the same message), and the stage's page module computes its context, which the lesson's
    check then reads. ``next_url`` starts the next lesson on the model this page runs.
    """
    lesson = by_id().get(lesson_id)
    if lesson is None:
        return _refuse(404, f"“{lesson_id[:60]}” is not a lesson of the tutorial.")
    if len(request.META.get("QUERY_STRING", "")) > MAX_QUERY_CHARS:
        return _refuse(400, f"This link is longer than {MAX_QUERY_CHARS:,} characters, so it is not read.")
    st = lesson.stage
    try:
        blob = single(request.GET, "s") or ""
        scenario = codec().decode(blob)
        why = check_model(scenario)
        if why:
            raise ScenarioError(why)
        opts = parse_options(st.page.OPTIONS, request.GET)
        seen = _seen(request)
        local = scenario.model if is_local_model(scenario.model) else None
        if lesson.bundled_only and local:
            verdict = Verdict(False, f"This lesson needs the bundled model ({BUNDLED_NAME}): {lesson.bundled_only} "
                                     f"This page runs the local model {local}; start the lesson from the lesson path "
                                     "to do it on the bundled model.")
        else:
            page = StagePage(st, scenario, blob, opts)
            verdict = CHECKS[lesson.check](lesson, page, st.page.context(page))
    except (ScenarioError, OptionError) as exc:
        return _refuse(400, str(exc))
    need = lesson.params.get("seen")
    if verdict.done and need and need not in seen:
        # The request is right, but the task teaches what the page shows when it is used: wait for that.
        verdict = Verdict(False, SEEN_PROMPTS.get(need, "Now try it on this page and look at what happens."))
    nxt = following(lesson)
    return JsonResponse({"lesson": lesson.id, "done": verdict.done, "message": verdict.message,
                         "next_url": _start_url(nxt, local) if nxt else None})
