"""Stage-page URLs for tests: signed permalinks exactly as the app builds them, and the data a stage
page embeds, read from its JSON endpoint ``/learn/<slug>/data`` (never scraped out of the HTML)."""
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


def data_url(slug: str, scenario=None, **opts) -> str:
    """The stage's ``/data`` endpoint with the query string ``stage_url`` would give the page."""
    path, _, query = stage_url(slug, scenario, **opts).partition("?")
    return path + "data" + ("?" + query if query else "")


def _fetch(client, slug: str, url: str, **extra) -> dict:
    r = client.get(url, **extra)
    assert r.status_code == 200, (url[:200], r.status_code, r.content[:500])
    assert r["Content-Type"].startswith("application/json"), r["Content-Type"]
    body = r.json()
    assert body["stage"] == slug and isinstance(body["data"], dict), body
    return body["data"]


def stage_data(client, slug: str, scenario=None, **opts) -> dict:
    """``{element id: value}``: what the stage's page embeds for this scenario and these view options,
    from ``GET /learn/<slug>/data`` (which must answer 200)."""
    return _fetch(client, slug, data_url(slug, scenario, **opts))


def data_of(response) -> dict:
    """The data of the page a test client already fetched: the same path and query string's ``/data``,
    requested through the client that made ``response``."""
    from django.urls import resolve, reverse

    req = response.request
    match = resolve(req["PATH_INFO"])
    assert match.url_name in ("stage", "home"), f"{req['PATH_INFO']} is not a stage page"
    slug = match.kwargs.get("slug", "overview")
    query = req.get("QUERY_STRING", "")
    url = reverse("stage-data", args=[slug]) + ("?" + query if query else "")
    extra = {"HTTP_HOST": req["HTTP_HOST"]} if "HTTP_HOST" in req else {}
    return _fetch(response.client, slug, url, **extra)
