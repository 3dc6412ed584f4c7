import pytest
from django.core.management import call_command

from explainer.api import keys
from explainer.api.models import ApiKey

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    from io import StringIO
    out = StringIO()
    call_command("apikeys", *args, stdout=out)
    return out.getvalue().strip()


def test_create_list_revoke():
    key = run("create", "laptop")
    assert key.startswith("sk-exp-") and keys.check(key).name == "laptop"
    stored = ApiKey.objects.get(name="laptop")
    assert key not in (stored.digest, stored.prefix) and stored.digest == keys.digest(key)  # only the hash is kept
    assert "laptop" in run("list") and key not in run("list")
    run("revoke", stored.prefix)
    assert keys.check(key) is None
    assert "revoked" in run("list")


def test_the_development_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EXPLAINER_API_KEY", "sk-exp-from-env")
    assert run("dev") == "sk-exp-from-env"
    assert keys.check("sk-exp-from-env") is not None


def test_a_wrong_key_reveals_nothing():
    key = run("create", "x")
    for wrong in (key[:-1], key + "a", "", "x" * 500, key.upper()):
        assert keys.check(wrong) is None


def test_both_header_forms():
    assert keys.key_from_headers({"x-api-key": "k1"}) == "k1"
    assert keys.key_from_headers({"authorization": "Bearer k2"}) == "k2"
    assert keys.key_from_headers({"authorization": "Basic zzz"}) is None
