"""The environment picks the channel layer and the database; with nothing set, the app needs neither Redis nor PostgreSQL."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import json, django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'explainer.settings'; django.setup(); "
         "from django.conf import settings as s; "
         "print(json.dumps([s.CHANNEL_LAYERS['default'], s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME']], default=str))")


def settings_with(tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**base, "EXPLAINER_DATA_DIR": str(tmp_path), **env}).stdout
    return json.loads(out)


@pytest.mark.slow
def test_defaults_are_in_process_and_sqlite(tmp_path):
    layer, engine, name = settings_with(tmp_path)
    assert layer["BACKEND"] == "explainer.live.layers.SweepingInMemoryChannelLayer" and layer["CONFIG"]["capacity"] >= 1000
    assert engine == "django.db.backends.sqlite3" and name == str(tmp_path / "db.sqlite3")


@pytest.mark.slow
def test_redis_and_postgres_from_the_environment(tmp_path):
    layer, engine, name = settings_with(tmp_path, REDIS_URL="redis://127.0.0.1:6379/3",
                                        DATABASE_URL="postgres://someone@db.example:5433/classroom")
    assert layer["BACKEND"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert layer["CONFIG"]["hosts"] == ["redis://127.0.0.1:6379/3"]
    assert engine == "django.db.backends.postgresql" and name == "classroom"


async def test_the_in_process_layer_still_expires_old_messages(monkeypatch):
    from types import SimpleNamespace

    import channels.layers

    from explainer.live import layers

    layer = layers.SweepingInMemoryChannelLayer(expiry=0.05)
    clock = [1000.0]  # the sweep's clock
    wall = [1_700_000_000.0]  # Channels' own (time.time), which dates each message
    monkeypatch.setattr(layers, "_now", lambda: clock[0])
    monkeypatch.setattr(channels.layers, "time", SimpleNamespace(time=lambda: wall[0]))
    await layer.group_add("room", "student.inmemory!a")
    await layer.send("student.inmemory!a", {"type": "old"})
    wall[0] += 0.1  # the message is past its expiry
    layer._clean_expired()
    assert "student.inmemory!a" not in layer.channels and not layer.groups.get("room")
    await layer.group_add("room", "student.inmemory!b")
    await layer.send("student.inmemory!b", {"type": "old"})
    wall[0] += 0.1
    clock[0] += 0.5
    layer._clean_expired()  # within a second of the last sweep: skipped
    assert "student.inmemory!b" in layer.channels
    clock[0] += 0.6
    layer._clean_expired()
    assert "student.inmemory!b" not in layer.channels
