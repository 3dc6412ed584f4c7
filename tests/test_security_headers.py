"""Security headers and static paths, as a browser gets them: through a real Daphne serving
explainer.asgi (its static files handler included, which Django's middleware never sees).

- every HTML page carries the full Content-Security-Policy, once; embeds widen only frame-ancestors;
- every response, static files and their 404s included, says X-Content-Type-Options: nosniff;
- a path under /static/ that tries to leave the static folders, or that the file system refuses,
  is a plain 404, never a 500 and never the file.
"""
from __future__ import annotations

import socket

import pytest
from django.template import Context, Template

from explainer.stages.registry import built
from tests.live_server import daphne

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

EXPECTED = {
    "default-src": {"'self'"},
    "script-src": {"'self'"},
    "style-src": {"'self'"},
    "style-src-attr": {"'unsafe-inline'"},
    "img-src": {"'self'", "data:", "blob:"},
    "connect-src": {"'self'"},
    "frame-src": {"'self'"},
    "object-src": {"'none'"},
    "base-uri": {"'self'"},
    "form-action": {"'self'"},
    "frame-ancestors": {"'self'"},
}
STAGES = [s.slug for s in built()]
PAGES = ["/", "/rooms/", "/tutorial/", "/join", "/traces/", *[f"/learn/{slug}/" for slug in STAGES]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with daphne(tmp_path_factory.mktemp("appdata")) as srv:
        yield srv


def raw_get(server, target: bytes | str) -> tuple[int, dict[str, list[str]], bytes]:
    """GET ``target`` exactly as given (no client-side normalising or quoting) -> status, headers, body."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    port = int(server["url"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body


def policy(headers) -> dict[str, set[str]]:
    values = headers.get("content-security-policy", [])
    assert len(values) == 1, f"expected one CSP header, got {values}"
    out: dict[str, set[str]] = {}
    for part in values[0].split(";"):
        name, *sources = part.split()
        assert name not in out, f"{name} twice in {values[0]}"
        out[name] = set(sources)
    return out


@pytest.mark.parametrize("path", PAGES)
def test_it_sends_the_full_policy_on_every_page(server, path):
    status, headers, body = raw_get(server, path)
    assert status == 200 and b"<html" in body
    assert policy(headers) == EXPECTED
    assert headers["x-content-type-options"] == ["nosniff"]
    assert headers["x-frame-options"] == ["SAMEORIGIN"]


def test_no_page_has_inline_script_or_event_handlers(server):
    import re

    for path in PAGES:
        _, _, body = raw_get(server, path)
        html = body.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), path
        assert "javascript:" not in html, path


@pytest.mark.parametrize("slug", STAGES)
def test_embeds_may_be_framed_anywhere_but_keep_the_rest_of_the_policy(server, slug):
    status, headers, _ = raw_get(server, f"/learn/{slug}/?embed=1")
    assert status == 200
    assert policy(headers) == EXPECTED | {"frame-ancestors": {"*"}}
    assert "x-frame-options" not in headers


def test_an_embed_error_page_keeps_the_policy_too(server):
    status, headers, _ = raw_get(server, "/learn/overview/?embed=1&s=not-a-real-scenario")
    assert status == 400
    assert policy(headers) == EXPECTED | {"frame-ancestors": {"*"}}


def test_error_pages_and_json_carry_the_policy(server):
    status, headers, _ = raw_get(server, "/no/such/page")
    assert status == 404 and policy(headers) == EXPECTED
    status, headers, _ = raw_get(server, "/v1/models")
    assert headers["x-content-type-options"] == ["nosniff"]


@pytest.mark.parametrize("path, kind", [("/static/css/app.css", "text/css"), ("/static/js/lib/text.js", "text/javascript"),
                                        ("/static/favicon.svg", "image/svg+xml")])
def test_static_files_say_nosniff(server, path, kind):
    status, headers, body = raw_get(server, path)
    assert status == 200 and body
    assert headers["content-type"][0].startswith(kind)
    assert headers["x-content-type-options"] == ["nosniff"]
    assert policy(headers) == EXPECTED  # an SVG opened on its own runs no script either


TRAVERSALS = [
    "/static/../x",
    "/static/../explainer/settings.py",
    "/static/css/../../explainer/settings.py",
    "/static/%2e%2e/settings.py",
    "/static/%2e%2e/explainer/settings.py",
    "/static/%2E%2E/%2E%2E/etc/passwd",
    "/static/..%2fx",
    "/static/..%2f..%2fexplainer%2fsettings.py",
    "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/..%5c..%5cexplainer%5csettings.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/css/app.css%00.txt",
    "/static/%00",
    "/static/x%00y/../../etc/passwd",
    "/static/" + "a" * 300,
    "/static/" + "a" * 4000 + ".css",
    "/static/" + "a/" * 1500 + "x",
    "/static/" + "../" * 50 + "etc/passwd",
    "/static/%c0%ae%c0%ae/explainer/settings.py",
    "/static/%ff%fe",
    "/static/",
    "/static/css/",
    "/static/css/missing.css",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_bad_static_paths_are_404(server, path):
    status, headers, body = raw_get(server, path)
    assert status == 404, (path, status, body[:300])
    assert b"SECRET_KEY" not in body and b"root:" not in body
    assert headers["x-content-type-options"] == ["nosniff"]


def test_a_raw_nul_byte_in_a_static_path_is_refused(server):
    status, _, body = raw_get(server, b"/static/css/app.css\x00.txt")
    assert status == 400, (status, body[:300])  # refused by the HTTP server before any view


def test_none_of_the_bad_paths_logged_a_server_error(server):
    for path in TRAVERSALS:
        raw_get(server, path)
    log = server["log"].read_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]


# ---- the show_controls filter ------------------------------------------------------------------

def render(text: str) -> str:
    return Template("{% load usertext %}{{ v|show_controls }}").render(Context({"v": text}))


def test_the_filter_marks_every_bidi_and_control_character():
    bidi = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    c0c1 = "".join(chr(c) for c in [*range(0, 9), *range(11, 32), *range(0x7f, 0xa0)])
    html = render("a" + bidi + c0c1 + "b")
    for c in bidi + c0c1:
        assert c not in html
        assert f"⟨U+{ord(c):04X}⟩" in html
    assert html.count('<span class="ctl"') == len(bidi + c0c1)


def test_the_filter_keeps_escaping_and_plain_text():
    assert render("Pay \u202e1000") == ('Pay <span class="ctl" title="U+202E, right-to-left override (invisible in the text)">'
                                         "⟨U+202E⟩</span>1000")
    assert render('<script>alert("x")</script>\u202e') .startswith("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;<span")
    assert render("line\n\ttab é 日本") == "line\n\ttab é 日本"
    # markup smuggled next to a control character stays text
    assert "<img" not in render("\u202e<img src=x onerror=alert(1)>")


# ---- behind the TLS proxy (EXPLAINER_BEHIND_PROXY): Secure cookies and HSTS -------------------------

def _settings_of(tmp_path, **env) -> dict:
    """The security settings a fresh process builds from ``env``."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import json, django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'explainer.settings'; django.setup(); "
             "from django.conf import settings as s; "
             "print(json.dumps({k: getattr(s, k) for k in ('SECURE_PROXY_SSL_HEADER', 'CSRF_COOKIE_SECURE', "
             "'SESSION_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', 'USE_X_FORWARDED_HOST')}))")
    base = {k: v for k, v in os.environ.items() if k != "EXPLAINER_BEHIND_PROXY"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                         text=True, check=True, env={**base, "EXPLAINER_DATA_DIR": str(tmp_path), **env}).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def proxy_settings(tmp_path_factory):
    return _settings_of(tmp_path_factory.mktemp("proxy"), EXPLAINER_BEHIND_PROXY="1")


def test_behind_the_proxy_cookies_are_secure_and_hsts_is_on(proxy_settings, tmp_path):
    assert proxy_settings["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert proxy_settings["CSRF_COOKIE_SECURE"] is True and proxy_settings["SESSION_COOKIE_SECURE"] is True
    assert proxy_settings["SECURE_HSTS_SECONDS"] >= 180 * 24 * 3600
    plain = _settings_of(tmp_path)  # plain http://127.0.0.1: none of it
    assert plain["SECURE_PROXY_SSL_HEADER"] is None and plain["CSRF_COOKIE_SECURE"] is False and plain["SECURE_HSTS_SECONDS"] == 0
    assert _settings_of(tmp_path, EXPLAINER_BEHIND_PROXY="1", EXPLAINER_HSTS_SECONDS="600")["SECURE_HSTS_SECONDS"] == 600


def test_through_the_proxy_the_csrf_cookie_says_secure_and_hsts_is_sent(client, settings, proxy_settings):
    for k, v in proxy_settings.items():
        setattr(settings, k, tuple(v) if isinstance(v, list) else v)
    r = client.get("/rooms/", HTTP_X_FORWARDED_PROTO="https")
    assert r.status_code == 200
    cookie = r.cookies["csrftoken"]
    assert cookie["secure"] is True and cookie["samesite"] == "Lax"
    assert r["Strict-Transport-Security"] == f"max-age={proxy_settings['SECURE_HSTS_SECONDS']}"
    assert "Secure" in r.cookies.output()


@pytest.mark.django_db
def test_plain_http_development_keeps_plain_cookies_and_no_hsts(client):
    r = client.get("/rooms/")
    assert r.status_code == 200
    assert not r.cookies["csrftoken"]["secure"]
    assert "Strict-Transport-Security" not in r
    # and the form still works over plain http: the cookie comes back and the room starts
    from django.test import Client

    c = Client(enforce_csrf_checks=True)
    html = c.get("/rooms/").content.decode()
    import re
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert c.post("/rooms/new", {"csrfmiddlewaretoken": token}).status_code == 303


# ---- trace pages are never cached -------------------------------------------------------------------

@pytest.mark.django_db
def test_trace_pages_say_no_store(client):
    from datetime import timedelta

    from django.utils import timezone

    from explainer.shares.models import Trace

    t = Trace.objects.create(expires_at=timezone.now() + timedelta(hours=1), endpoint="messages", status=200,
                             model="claude-haiku-4-5", request={"method": "POST", "path": "/v1/messages", "headers": {}, "body": {
                                 "model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "secret"}]}})
    answers = [client.get(f"/traces/{t.id}/"), client.get("/traces/"), client.get("/traces/no-such-trace/"),
               client.get("/traces/", REMOTE_ADDR="192.0.2.7"), client.post(f"/traces/{t.id}/delete")]
    assert [r.status_code for r in answers] == [200, 200, 404, 403, 302]
    for r in answers:
        assert r["Cache-Control"] == "no-store", r["Cache-Control"]
