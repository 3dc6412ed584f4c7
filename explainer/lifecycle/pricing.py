"""List prices and the cost of a usage block. The table is data (``prices.json``), dated and sourced.

A model that is not in the table has an unknown price: the cost is ``None`` and pages say
"price unknown" rather than guess.

Example:
    >>> cost("claude-sonnet-4-5", {"input_tokens": 1_000_000, "output_tokens": 0})["total"]
    3.0
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

PRICES_PATH = Path(__file__).resolve().parent / "prices.json"


@lru_cache(maxsize=1)
def table() -> dict:
    return json.loads(PRICES_PATH.read_text())


def known_models() -> tuple[str, ...]:
    """Every model name the app knows, newest first: the one list (``GET /v1/models`` serves it)."""
    return tuple(table()["models"])


def priced_models() -> tuple[str, ...]:
    """The known models whose list price is known: what Compose offers, so no page says "price unknown" for its own choice."""
    return tuple(name for name, price in table()["models"].items() if price is not None)


def price_of(model: str) -> dict | None:
    t = table()
    name = t["aliases"].get(model, model)
    return t["models"].get(name)


def cost(model: str, usage: dict) -> dict | None:
    """Dollars for one response's usage, split by kind; None when the model's price is unknown."""
    p = price_of(model)
    if p is None:
        return None
    m = table()["cache_multipliers"]
    per = 1_000_000
    created = usage.get("cache_creation") or {}
    write_1h = created.get("ephemeral_1h_input_tokens", 0) or 0
    write_5m = (usage.get("cache_creation_input_tokens") or 0) - write_1h
    parts = {
        "input": usage.get("input_tokens", 0) * p["input"] / per,
        "cache_write": (write_5m * m["write_5m"] + write_1h * m["write_1h"]) * p["input"] / per,
        "cache_read": (usage.get("cache_read_input_tokens") or 0) * m["read"] * p["input"] / per,
        "output": usage.get("output_tokens", 0) * p["output"] / per,
    }
    parts["total"] = sum(parts.values())
    return parts


def usd(x: float | None) -> str:
    """Dollars with about three significant digits for small amounts: $0.000315, $0.0123, $412.50."""
    if x is None:
        return "price unknown"
    if x == 0:
        return "$0"
    digits = max(2, -math.floor(math.log10(abs(x))) + 2)
    return f"${x:,.{digits}f}"
