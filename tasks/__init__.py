"""Task types: what ingest, preprocess, train and evaluate do for each kind of data.

`get_task(config.task)` returns the `Task` for a recipe's `task` section;
modules are imported on first use so a tabular run never loads image code.
"""

from __future__ import annotations

import importlib

from tasks.base import Evaluation, Task

_MODULES = {
    "tabular_classification": "tasks.tabular",
    "image_classification": "tasks.image",
    "forecasting": "tasks.forecasting",
    "series_classification": "tasks.series",
    "text_classification": "tasks.text",
    "seq2seq": "tasks.seq2seq",
}


def task_class(name: str) -> type[Task]:
    if name not in _MODULES:
        raise ValueError(f"Unknown task type {name!r}; valid: {', '.join(_MODULES)}.")
    return importlib.import_module(_MODULES[name]).TASK


def get_task(options) -> Task:
    """The task for a recipe's `task` section (a `pipeline.config` task model)."""
    return task_class(options.type)(options)


__all__ = ["Evaluation", "Task", "get_task", "task_class"]
