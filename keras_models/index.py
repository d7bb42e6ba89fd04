"""The zoo's table of contents: each model's family, task heads and default hyperparameters.

A recipe is checked against it when it loads, and `--help` lists it, before
anything imports Keras (and with it TensorFlow: seconds of start-up, and
more in every Beam worker). `index.json` is written from the registry,

    python -m keras_models.registry

and a test keeps the two equal.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

INDEX_PATH = Path(__file__).with_name("index.json")
RATES = ("dropout", "momentum")  # hyperparameters named so are fractions in [0, 1)


@dataclass(frozen=True)
class ModelInfo:
    """What a recipe is checked against: a registered model without its builder."""

    name: str
    family: str
    tasks: tuple[str, ...]
    defaults: dict[str, Any]
    paper: str = ""


@functools.cache
def _read() -> dict[str, ModelInfo]:
    entries = json.loads(INDEX_PATH.read_text())
    return {name: ModelInfo(name=name, **{**e, "tasks": tuple(e["tasks"])}) for name, e in entries.items()}


def unknown_model(name: str, known: Iterable[str]) -> ValueError:
    """The error for an unregistered model name, with the closest registered one."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"Unknown model {name!r}.{hint} Registered models: {', '.join(known)}.")


def model_info(name: str) -> ModelInfo:
    """The index entry for `name`, or an error that lists the registered names."""
    index = _read()
    if name not in index:
        raise unknown_model(name, index)
    return index[name]


def list_models() -> list[ModelInfo]:
    """Every model in the index, sorted by family then name."""
    return sorted(_read().values(), key=lambda e: (e.family, e.name))


def _range_problem(key: str, value: Any, default: Any) -> str | None:
    """What is wrong with `value` for a hyperparameter whose default is `default`, judged by type and name.

    Integers (sizes, counts, depths) and floats other than rates
    (penalties, widths) are not negative, floats named like a rate lie in
    [0, 1), flags are booleans. This runs when a recipe loads; each builder
    then checks its own tighter ranges (`heads.require_range`) and choices.
    """
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            return "expected a whole number"
        return None if value >= 0 else "expected 0 or more"
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "expected a number"
        if any(word in key for word in RATES):
            return None if 0 <= value < 1 else "expected a fraction in [0, 1)"
        return None if value >= 0 else "expected 0 or more"
    return None


def check_hparams(name: str, defaults: dict[str, Any], hparams: dict[str, Any]) -> None:
    """Rejects hyperparameters model `name` does not take, naming the valid ones, and values out of range."""
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {unknown} for model {name!r}. "
            f"Valid: {', '.join(sorted(defaults)) or '(none)'}."
        )
    for key, value in hparams.items():
        problem = _range_problem(key, value, defaults[key])
        if problem:
            raise ValueError(f"Hyperparameter {key}={value!r} is out of range for model {name!r}: {problem}.")


def index_of(entries) -> dict[str, dict[str, Any]]:
    """The index of registry entries, as `index.json` holds it."""
    return {
        e.name: {"family": e.family, "tasks": list(e.tasks), "defaults": e.defaults, "paper": e.paper}
        for e in sorted(entries, key=lambda e: e.name)
    }
