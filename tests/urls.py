"""Stage-page URLs for tests: signed permalinks exactly as the app builds them."""
from urllib.parse import urlencode


def stage_url(slug: str, scenario=None, **opts) -> str:
    from explainer.stages.runs import codec

    q = {}
    if scenario is not None:
        blob = codec().encode(scenario)
        if blob:
            q["s"] = blob
    q.update(opts)
    return f"/learn/{slug}/" + ("?" + urlencode(q) if q else "")
