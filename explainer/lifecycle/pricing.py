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
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

PRICES_PATH = Path(__file__).resolve().parent / "prices.json"


class Price(TypedDict):
    input: float  # dollars per million tokens
    output: float


class Prices(TypedDict):
    """``prices.json``."""

    about: str
    currency: str
    unit: str
    source: str
    checked: str  # the date the prices were read
    cache_multipliers: dict[str, float]  # write_5m, write_1h and read: times the input price
    models: dict[str, Price | None]  # every known name, newest first; None: price unknown
    aliases: dict[str, str]  # a dated name -> the name it is priced under


class Cost(TypedDict):
    """Dollars for one usage block, by kind."""

    input: float
    cache_write: float
    cache_read: float
    output: float
    total: float


@lru_cache(maxsize=1)
def table() -> Prices:
    prices: Prices = json.loads(PRICES_PATH.read_text())
    return prices


def known_models() -> tuple[str, ...]:
    """Every model name the app knows, newest first: the one list (``GET /v1/models`` serves it)."""
    return tuple(table()["models"])


def priced_models() -> tuple[str, ...]:
    """The known models whose list price is known: what Compose offers, so no page says "price unknown" for its own choice."""
    return tuple(name for name, price in table()["models"].items() if price is not None)


def price_of(model: str) -> Price | None:
    t = table()
    name = t["aliases"].get(model, model)
    return t["models"].get(name)


def cost(model: str, usage: Mapping[str, Any]) -> Cost | None:
    """Dollars for one response's usage, split by kind; None when the model's price is unknown."""
    p = price_of(model)
    if p is None:
        return None
    m = table()["cache_multipliers"]
    per = 1_000_000
    created = usage.get("cache_creation") or {}
    write_1h = created.get("ephemeral_1h_input_tokens", 0) or 0
    write_5m = (usage.get("cache_creation_input_tokens") or 0) - write_1h
    fresh = usage.get("input_tokens", 0) * p["input"] / per
    cache_write = (write_5m * m["write_5m"] + write_1h * m["write_1h"]) * p["input"] / per
    cache_read = (usage.get("cache_read_input_tokens") or 0) * m["read"] * p["input"] / per
    output = usage.get("output_tokens", 0) * p["output"] / per
    return {"input": fresh, "cache_write": cache_write, "cache_read": cache_read, "output": output,
            "total": fresh + cache_write + cache_read + output}


def usd(x: float | None) -> str:
    """Dollars with about three significant digits for small amounts: $0.000315, $0.0123, $412.50."""
    if x is None:
        return "price unknown"
    if x == 0:
        return "$0"
    digits = max(2, -math.floor(math.log10(abs(x))) + 2)
    return f"${x:,.{digits}f}"
