"""`Param`: a typed, checked, searchable setting that a method (mtl/methods) or a task kind (mtl/kinds)
declares in its own file. The config holds its values (`method_args`, `kind_options`); `coerce` reads
`--set` strings into its type with one clear line on a bad value; `suggest` draws it in a study."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mtl.errors import UserError


@dataclass(frozen=True)
class Param:
    """Default, type, valid range and search space (`tune=False`: not searched). `per_task`: one value
    per task (a dict task -> value in the config; tasks not named take the default)."""

    default: float | int | str
    low: float | None = None  # search space (and, with `positive`, the check)
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    positive: bool = False
    minimum: float | None = None
    tune: bool = True
    per_task: bool = False

    def coerce(self, owner: str, key: str, value):
        """`value` (a --set string or a number) in the parameter's type; `owner` names who declares it."""
        if self.per_task and isinstance(value, dict):
            return {task: self._coerce_one(owner, f"{key}.{task}", v) for task, v in value.items()}
        if self.per_task:
            raise UserError(f"{owner}: {key} is set per task ({key}.<task>=<value>), got {value!r}")
        return self._coerce_one(owner, key, value)

    def _coerce_one(self, owner: str, key: str, value):
        typ = type(self.default)
        try:
            v = typ(value) if not isinstance(value, bool) else None
            if typ is int and isinstance(value, float) and value != int(value):
                v = None
        except (TypeError, ValueError):
            v = None
        if v is None or (typ is float and not math.isfinite(v)):
            raise UserError(f"{owner}: {key}={value!r} is not a {typ.__name__}")
        if self.choices and v not in self.choices:
            raise UserError(f"{owner}: {key}={v!r}: expected one of {', '.join(map(str, self.choices))}")
        if self.positive and v <= 0:
            raise UserError(f"{owner}: {key} must be > 0, got {v!r}")
        if self.minimum is not None and v < self.minimum:
            raise UserError(f"{owner}: {key} must be >= {self.minimum}, got {v!r}")
        return v

    def suggest(self, trial, name: str, task_names: list[str] = ()):
        if self.per_task:
            return {t: self._suggest_one(trial, f"{name}.{t}") for t in task_names}
        return self._suggest_one(trial, name)

    def _suggest_one(self, trial, name: str):
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if isinstance(self.default, int):
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)


def resolve(owner: str, params: dict[str, Param], values: dict) -> dict:
    """Every declared parameter's value: the given ones coerced, the rest their defaults; unknown ones
    are one line naming the known ones."""
    unknown = set(values) - set(params)
    if unknown:
        raise UserError(f"{owner} has no parameter(s) {', '.join(sorted(unknown))} "
                        f"(parameters: {', '.join(params) or 'none'})")
    return {k: {} if p.per_task else p.default for k, p in params.items()} | {
        k: p.coerce(owner, k, values[k]) for k, p in params.items() if k in values}
