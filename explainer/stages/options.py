"""View options of a stage page (selected layer, head, token, …): plain query parameters,
checked against the range each stage declares, so a hand-edited URL gets a clear 400."""
from __future__ import annotations

from dataclasses import dataclass


class OptionError(ValueError):
    pass


@dataclass(frozen=True)
class IntOption:
    default: int
    low: int
    high: int | None = None  # None: no upper bound known until the scenario is computed
    label: str = ""

    def parse(self, name: str, raw: str | None) -> int:
        if raw is None or raw == "":
            return self.default
        if len(raw) > 12 or not raw.lstrip("-").isdigit():
            raise OptionError(f"“{name}” must be a whole number.")
        v = int(raw)
        if v < self.low or (self.high is not None and v > self.high):
            hi = "" if self.high is None else f" to {self.high}"
            raise OptionError(f"“{name}” must be from {self.low}{hi}; got {v}.")
        return v


@dataclass(frozen=True)
class ChoiceOption:
    default: str
    choices: tuple[str, ...]

    def parse(self, name: str, raw: str | None) -> str:
        if raw is None or raw == "":
            return self.default
        if raw not in self.choices:
            raise OptionError(f"“{name}” must be one of {', '.join(self.choices)}.")
        return raw


def parse_options(declared: dict, query) -> dict:
    return {name: opt.parse(name, query.get(name)) for name, opt in declared.items()}
