"""The tutorial's lessons, read from ``lessons.json``: one per stage, in walk-through order.

A lesson names its stage, the scenario and view options it starts from, and the check (a
function in ``checks.py``) that decides on the server whether its task is done. A learner may
do the lessons on a local model instead of the bundled one (the start scenario's ``model``);
a lesson whose task rests on what the bundled model itself says names why in ``bundled_only``.

Example:
    >>> lesson = by_id()["temperature"]
    >>> lesson.stage_slug, lesson.start_scenario().temperature
    ('overview', 0.8)
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlencode

from django.urls import reverse

from explainer.lifecycle.scenario import Scenario
from explainer.stages.options import parse_options
from explainer.stages.registry import BY_SLUG, STAGES, Stage
from explainer.stages.runs import codec, stamp

DATA = Path(__file__).with_name("lessons.json")
_ID = re.compile(r"[a-z][a-z0-9-]{0,39}")


class LessonDataError(ValueError):
    """lessons.json does not describe a usable lesson path (a bug in the data, found at start-up)."""


@dataclass(frozen=True)
class Lesson:
    id: str
    number: int  # 1-based, in walk-through order
    stage_slug: str
    title: str
    task: str
    hint: str
    learned: str
    target: str  # a CSS selector: the part of the stage page the task needs (the tutorial panel never covers it)
    scenario: dict  # the start scenario's fields that differ from a fresh Scenario
    options: dict  # the start view options, as the stage page's query string has them
    check: str  # the kind of check, a key of checks.CHECKS
    params: dict  # the check's own settings
    bundled_only: str = ""  # why the task needs the bundled model's own replies ("" when any model will do)

    @property
    def stage(self) -> Stage:
        return BY_SLUG[self.stage_slug]

    def start_scenario(self, model: str | None = None) -> Scenario:
        """The lesson's request; on ``model`` (a local model's name, stamped with its weights) when one is given."""
        scenario = Scenario.from_changes(json.loads(json.dumps(self.scenario)))  # a fresh copy every time
        return stamp(scenario.replace(model=model)) if model else scenario

    def start_url(self, model: str | None = None) -> str:
        """The stage page as the lesson starts: its scenario (on ``model`` if given) and view options (what
        /tutorial/start/<id> redirects to)."""
        query = {}
        blob = codec().encode(self.start_scenario(model))
        if blob:
            query["s"] = blob
        query.update({k: str(v) for k, v in self.options.items()})
        return reverse("stage", args=[self.stage_slug]) + ("?" + urlencode(query) if query else "")


def _lesson(i: int, raw: dict, checks: dict) -> Lesson:
    where = f"lesson {i + 1}"
    try:
        start, check = raw["start"], dict(raw["check"])
        lesson = Lesson(
            id=raw["id"], number=i + 1, stage_slug=raw["stage"], title=raw["title"], task=raw["task"],
            hint=raw["hint"], learned=raw["learned"], target=raw["target"], scenario=start.get("scenario", {}),
            options=start.get("options", {}), check=check.pop("kind"), params=check, bundled_only=raw.get("bundled_only", ""),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise LessonDataError(f"{where}: missing or malformed field {exc}") from None
    if not isinstance(lesson.id, str) or not _ID.fullmatch(lesson.id):
        raise LessonDataError(f"{where}: id {lesson.id!r} must be lower-case letters, digits and dashes")
    if lesson.stage_slug not in BY_SLUG:
        raise LessonDataError(f"{where}: {lesson.stage_slug!r} is not a stage")
    if lesson.check not in checks:
        raise LessonDataError(f"{where}: no check called {lesson.check!r}")
    if not isinstance(lesson.target, str) or not re.fullmatch(r"#[a-z][a-z0-9_-]*", lesson.target):
        raise LessonDataError(f"{where}: target must be an element id such as #temperature")
    for name in ("title", "task", "hint", "learned"):
        if not isinstance(getattr(lesson, name), str) or not getattr(lesson, name).strip():
            raise LessonDataError(f"{where}: {name} must be text")
    if not isinstance(lesson.bundled_only, str):
        raise LessonDataError(f"{where}: bundled_only must be text (why the task needs the bundled model)")
    lesson.start_scenario()  # raises ScenarioError for a start the codec would refuse
    unknown = set(lesson.options) - set(lesson.stage.page.OPTIONS)
    if unknown:
        raise LessonDataError(f"{where}: the {lesson.stage_slug} page has no option {sorted(unknown)[0]!r}")
    parse_options(lesson.stage.page.OPTIONS, {k: str(v) for k, v in lesson.options.items()})
    return lesson


def load(path: Path = DATA) -> tuple[Lesson, ...]:
    """Every lesson, checked: known stages and checks, valid starts, at most one lesson a stage, in walk-through order."""
    from explainer.tutorial.checks import CHECKS

    raw = json.loads(path.read_text(encoding="utf-8"))["lessons"]
    lessons = tuple(_lesson(i, r, CHECKS) for i, r in enumerate(raw))
    ids = [x.id for x in lessons]
    if len(set(ids)) != len(ids):
        raise LessonDataError("lesson ids must be unique")
    # In walk-through order, at most one lesson a stage; a stage may have none (a new stage needs no lesson
    # to be on the walk-through).
    order = [s.slug for s in STAGES]
    at = [order.index(x.stage_slug) for x in lessons]
    if at != sorted(set(at)):
        raise LessonDataError(f"the lessons must follow the stages, at most one each, in the order {order}")
    return lessons


@lru_cache(maxsize=1)
def lessons() -> tuple[Lesson, ...]:
    return load()


def by_id() -> dict[str, Lesson]:
    return {x.id: x for x in lessons()}


def following(lesson: Lesson) -> Lesson | None:
    """The next lesson on the path, or None after the last."""
    all_ = lessons()
    return all_[lesson.number] if lesson.number < len(all_) else None
