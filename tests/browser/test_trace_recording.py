"""The "being recorded" page that a trace link shows until its trace is written."""
import pytest
from django.conf import settings

from explainer.shares.traces import issue_id
from tests.browser.conftest import assert_fits_phone
from tests.live_server import API_KEY

pytestmark = pytest.mark.browser


def test_the_recording_page_is_accessible_fits_a_phone_and_gives_up_on_a_trace_that_never_comes(server, page, phone, axe, shoot):
    url = f"{server['url']}/traces/{issue_id()}/"
    resp = page.goto(url)
    assert resp.status == 202
    assert page.locator("h1").inner_text() == "This trace is being recorded"
    axe(page)
    shoot(page, "trace-recording")
    phone.goto(url)
    assert_fits_phone(phone)
    assert not page.js_errors and not phone.js_errors


def test_the_recording_page_shows_the_trace_once_it_is_written(server, page):
    """A trace written by another process after the page opened: the page finds it and shows it."""
    import subprocess
    import sys

    tid = issue_id()
    url = f"{server['url']}/traces/{tid}/"
    assert page.goto(url).status == 202
    # Another process of the same deployment writes the trace (the same database, not this server's writer).
    code = ("import django; django.setup(); from django.test import RequestFactory; from explainer.shares.traces import TraceRecorder; "
            f"r = TraceRecorder(RequestFactory().post('/v1/messages'), 'messages'); r.id = {tid!r}; "
            "r.set_body({'model': 'claude-haiku-4-5', 'max_tokens': 3, 'messages': [{'role': 'user', 'content': 'written elsewhere'}]}); "
            "r.save(200, None)")
    subprocess.run([sys.executable, "-c", code], env=server["env"], cwd=settings.BASE_DIR, check=True, capture_output=True)
    page.wait_for_selector("text=written elsewhere", timeout=10000)
    assert "Trace of an API call" in page.content() and API_KEY not in page.content()
