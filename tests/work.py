"""Counting the work a call does, for tests that check "served from the cache" or "no second pass"
without a clock (how fast a page is, is bench/pages.py's to say)."""
from __future__ import annotations


def count_forward_passes(monkeypatch, model) -> list[int]:
    """Count ``model.forward`` from now on (for the rest of the test): the returned list gets the
    number of tokens fed at each call."""
    fed: list[int] = []
    real = model.forward

    def forward(ids, *args, **kwargs):
        fed.append(len(ids))
        return real(ids, *args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    return fed
