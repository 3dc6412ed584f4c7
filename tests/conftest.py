import pytest


@pytest.fixture(autouse=True)
def _test_client_host(settings):
    """Django's test client calls itself "testserver"."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
