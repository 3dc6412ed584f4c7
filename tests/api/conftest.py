import pytest

from tests.live_server import daphne


@pytest.fixture(scope="package")
def api_server(tmp_path_factory):
    with daphne(tmp_path_factory.mktemp("apidata")) as srv:
        yield srv


@pytest.fixture
def client(api_server):
    """The official SDK pointed at the live server (no retries unless a test asks for them)."""
    import anthropic

    return anthropic.Anthropic(api_key=api_server["api_key"], base_url=api_server["url"], max_retries=0, timeout=60)
