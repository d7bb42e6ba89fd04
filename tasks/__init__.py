"""Task types: what ingest, preprocess, train and evaluate do for each kind of data.

`get_task(config.task)` returns the `Task` for a recipe's `task` section;
modules are imported on first use so a tabular run never loads image code,
and loading a recipe (`tasks.options`) loads none.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.base import Task

_MODULES = {
    "tabular_classification": "tasks.tabular",
    "tabular_regression": "tasks.regression",
    "image_classification": "tasks.image",
    "forecasting": "tasks.forecasting",
    "series_classification": "tasks.series",
    "text_classification": "tasks.text",
    "seq2seq": "tasks.seq2seq",
}
# Task types that need TensorFlow whatever the recipe: what needs it, for the error where it is missing.
TENSORFLOW_NEEDS = {
    "text_classification": "its Beam tokenisation and its serving model's TextVectorization work on raw text",
}


def task_class(name: str) -> type[Task]:
    if name not in _MODULES:
        raise ValueError(f"Unknown task type {name!r}; valid: {', '.join(_MODULES)}.")
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as e:
        if e.name != "tensorflow" and not (e.name or "").startswith("tensorflow."):
            raise
        from tasks.base import require_tensorflow_backend

        require_tensorflow_backend(name, TENSORFLOW_NEEDS.get(name, "its module imports TensorFlow"))
        raise
    return module.TASK


def get_task(options) -> Task:
    """The task for a recipe's `task` section (one of `tasks.options`)."""
    return task_class(options.type)(options)


__all__ = ["get_task", "task_class"]
