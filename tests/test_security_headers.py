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
