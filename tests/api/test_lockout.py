"""Wrong API keys never make a right key fail, and cannot be raced (issue 25, item 4).

Through the real ASGI application in this process, so that the key store's lookups can be counted;
concurrency is real: the requests run together on one event loop, as Daphne runs them.
"""
import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from explainer.api import keys, views

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

NAT = "10.20.30.40"  # an office behind one router


@pytest.fixture(autouse=True)
def _fresh_limits(own_services):
    own_services()  # failure counts of this test's own
    keys.live.forget()
    yield
    keys.live.forget()


@pytest.fixture
def lookups(monkeypatch):
    """Every key that reaches the key store (explainer.api.keys.check), in order."""
    seen = []
    real = keys.check

    def counted(key):
        seen.append(key)
        return real(key)

    monkeypatch.setattr(keys, "check", counted)
    return seen


class From(AsyncClient):
    """A client at ``addr`` (AsyncClient always says 127.0.0.1)."""

    def __init__(self, addr):
        super().__init__()
        self.addr = addr

    def _base_scope(self, **request):
        return {**super()._base_scope(**request), "client": [self.addr, 50000]}


async def call(key=None, addr=NAT):
    """GET /v1/models, the cheapest call that checks a key."""
    return await From(addr).get("/v1/models", headers={"x-api-key": key} if key else {})


async def new_key(name):
    return (await sync_to_async(keys.create)(name))[1]


@pytest.mark.django_db(transaction=True)
async def test_a_right_key_never_gets_a_429_however_many_wrong_keys_its_address_sends(lookups):
    right = await new_key("office")
    statuses = {"right": [], "wrong": []}
    for i in range(200):
        statuses["wrong"].append((await call(f"sk-exp-guess{i:04d}-{'x' * 30}")).status_code)
        if i % 5 == 4:
            statuses["right"].append((await call(right)).status_code)
    statuses["right"].append((await call(right)).status_code)
    assert statuses["right"] == [200] * 41
    wrong = statuses["wrong"]
    assert wrong[:20] == [401] * 20 and wrong.count(401) <= 25 and wrong[-1] == 429  # the failures are slowed
    r = await call("sk-exp-one-more-wrong-key")
    assert r.status_code == 429 and int(r["retry-after"]) >= 1 and "wrong API key" in r.json()["error"]["message"]
    # A missing key counts too, and is slowed the same way; it needs no lookup.
    before = len(lookups)
    assert (await call(None)).status_code == 429 and len(lookups) == before
    assert (await call(right)).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_a_key_first_used_while_its_address_is_over_budget_still_passes(lookups):
    for i in range(25):  # the address has spent its budget on wrong keys
        await call(f"sk-exp-wrong-{i}")
    assert (await call("sk-exp-wrong-again")).status_code == 429
    fresh = await new_key("a new colleague")  # never used: it passes at once, and costs no one's budget
    assert (await call(fresh)).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_a_key_created_by_another_process_passes_while_its_address_floods_wrong_keys(lookups):
    from explainer.api.models import ApiKey

    right = "sk-exp-made-by-manage-py-in-another-process-0123"
    await sync_to_async(ApiKey.objects.create)(name="elsewhere", prefix=right[:12], digest=keys.digest(right))
    keys.live.forget()  # this process has not read the table since (as after a restart, or a while later)
    statuses = [(await call(f"sk-exp-flood-{i:04d}")).status_code for i in range(500)]
    assert statuses.count(429) >= 450
    before = len(lookups)
    assert (await call(right)).status_code == 200  # the table is read again for it, once
    assert len(lookups) == before + 1


@pytest.mark.django_db(transaction=True)
async def test_wrong_keys_past_the_budget_cost_no_lookups(lookups):
    for i in range(40):
        await call(f"sk-exp-spent-{i:03d}")
    before = len(lookups)
    statuses = [(await call(f"sk-exp-more-{i:04d}")).status_code for i in range(300)]
    assert statuses == [429] * 300 and len(lookups) == before


@pytest.mark.django_db(transaction=True)
async def test_100_concurrent_wrong_keys_reach_the_key_store_at_most_the_budget_of_times(lookups):
    n = views.settings.EXPLAINER_AUTH_FAILURES_PER_MINUTE
    answers = await asyncio.gather(*(call(f"sk-exp-race-{i:03d}-{'y' * 30}") for i in range(100)))
    codes = [r.status_code for r in answers]
    # a burst of 2n failures checked, the rest refused unchecked
    assert len(lookups) <= 2 * n, len(lookups)
    assert codes.count(401) <= 2 * n and codes.count(401) + codes.count(429) == 100


@pytest.mark.django_db(transaction=True)
async def test_a_wrong_keys_failures_do_not_lock_out_another_prefix_or_address(lookups):
    other = await new_key("elsewhere")
    for i in range(40):  # one address guesses keys under one prefix
        await call(f"sk-exp-AAAAA{i}")
    assert (await call("sk-exp-AAAAAzz")).status_code == 429
    # another address, another prefix: its wrong keys are the usual 401, its right key passes
    assert (await call("sk-exp-BBBBB-wrong", addr="192.0.2.9")).status_code == 401
    assert (await call(other, addr="192.0.2.9")).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_many_addresses_guessing_one_prefix_do_not_lock_out_the_key_with_that_prefix(lookups):
    right = await new_key("targeted")
    prefix = right[:views.KEY_PREFIX_CHARS]
    for i in range(30):  # 30 addresses, one wrong key each, all under the right key's prefix
        await call(prefix + f"-wrong-{i}", addr=f"198.51.100.{i}")
    r = await call(prefix + "-wrong-x", addr="198.51.100.200")
    assert r.status_code == 429  # the prefix is over its budget: its wrong keys are slowed from any address
    assert (await call(right, addr="203.0.113.5")).status_code == 200  # its right key is not


@pytest.mark.django_db(transaction=True)
async def test_an_unreachable_key_store_does_not_charge_the_callers_budget(monkeypatch):
    from django.db import OperationalError

    def down(key):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(keys, "check", down)
    for _ in range(30):
        r = await call("sk-exp-a-right-key-while-the-database-is-down")
        assert r.status_code == 503 and r["retry-after"]
    monkeypatch.undo()
    right = await new_key("back")
    assert (await call(right)).status_code == 200
    assert (await call("sk-exp-a-wrong-one")).status_code == 401  # the outage spent nothing of the budget
