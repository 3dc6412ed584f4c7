"""Frames checked against the committed JSON Schema of the event protocol (static/schema/frames.json, generated
from explainer/lifecycle/frames.py and room_frames.py): what the browser's JavaScript is promised, checked on what it really gets."""
import json
from functools import cache

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from explainer.lifecycle.frame_schema import ROOTS, SCHEMA_PATH


@cache
def validator(root: str) -> Draft202012Validator:
    assert root in ROOTS, root
    doc = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return Draft202012Validator({"$defs": doc["$defs"], "$ref": f"#/$defs/{root}"})


def assert_frames(frames, root: str) -> None:
    """Every frame of ``frames`` (dicts, or JSON text as a socket sends it) is a ``root`` frame of the schema."""
    frames = [json.loads(f) if isinstance(f, str) else f for f in frames]
    assert frames, "no frames to check"
    for frame in frames:
        error = next(validator(root).iter_errors(frame), None)
        assert error is None, f"not a {root} frame ({_why(error)}): {json.dumps(frame)[:400]}"


def _why(error) -> str:
    """What is wrong, said of the frame's own declaration: a union's branches whose tag (``type``, a room.run's
    ``phase``) differs from the frame's are no news."""
    while error.context:
        branches: dict = {}
        for e in error.context:
            branches.setdefault(e.relative_schema_path[0], []).append(e)
        near = [e for errs in branches.values()
                if not any(e.validator in ("const", "enum") and len(e.relative_path) == 1 for e in errs) for e in errs]
        if not near:
            break
        error = best_match(near)
    return f"{error.message} at {'/'.join(map(str, error.absolute_path)) or 'the top'}"
