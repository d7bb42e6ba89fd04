"""What every classification task shares: label vocabulary, head, metrics, baseline and plots.

The label's classes are counted on the train split by the Beam analyzer
and sorted; a test label never seen in training is an error that names it.
The model is judged against the majority class of the train split.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data.sources import RawData
from tasks.base import Evaluation, Task


def count_values(column: pa.ChunkedArray | pa.Array) -> Counter:
    counts = pc.value_counts(column.drop_null())
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def label_spec(counts: Counter, name: str) -> dict[str, Any]:
    return {"name": name, "classes": sorted(counts)}


def encode_labels(batch: pa.Table, label: dict[str, Any], split: str) -> pa.Array:
    """Class names → indices into the train split's sorted classes."""
    column = batch.column(label["name"])
    index = pc.index_in(column, value_set=pa.array(label["classes"], pa.string()))
    if index.null_count:
        unseen = sorted(set(pc.filter(column, pc.is_null(index)).to_pylist()))
        raise ValueError(
            f"Split {split!r} has label value(s) {unseen} never seen in the train split "
            f"(known classes: {label['classes']})."
        )
    return index.cast(pa.int64())


def label_schema(train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
    classes = sorted(train[raw.label].astype(str).unique().tolist())
    return {"name": raw.label, "kind": "categorical", "classes": classes}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    labels = list(range(len(classes)))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "per_class": classification_report(
            y_true, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
        ),
    }


def save_confusion_matrix(y_true, y_pred, classes: list[str], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = min(1.2 * len(classes) + 3, 14)
    fig, ax = plt.subplots(figsize=(size, size - 0.5))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(classes))), display_labels=classes, ax=ax, colorbar=False
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def predictions_frame(probabilities: np.ndarray, classes: list[str], index=None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {f"probability_{c}": probabilities[:, i].astype("float64") for i, c in enumerate(classes)}, index=index
    )
    frame.insert(0, "label", np.asarray(classes)[probabilities.argmax(1)])
    return frame


class ClassificationTask(Task):
    head = "classification"
    primary_metric = "accuracy"

    def outputs_frame(self, outputs, transform, index=None) -> pd.DataFrame:
        return predictions_frame(np.asarray(outputs), transform["label"]["classes"], index)

    def extra_metrics(self, y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
        """Task-specific scalars beside accuracy and F1 (top-k for images)."""
        return {}

    def extra_plots(self, predictor, test: pd.DataFrame, y_true, y_pred, output: Path, config) -> list[Path]:
        """Task-specific plots beside the confusion matrix (mistakes, attention maps)."""
        return []

    def evaluate(self, predictor, test: pd.DataFrame, ingest_dir: Path, output: Path, config) -> Evaluation:
        from components.artifact_io import read_json

        transform = predictor.transform
        classes, label = transform["label"]["classes"], transform["label"]["name"]
        features = test.drop(columns=[label])
        y_true = pd.Categorical(test[label], categories=classes).codes.astype(int)
        probabilities = predictor.outputs(features)
        y_pred = probabilities.argmax(1)
        metrics = classification_metrics(y_true, y_pred, classes)

        train_labels = read_json(ingest_dir / "statistics.json")["train"]["columns"][label]["top"]
        majority = classes.index(max(train_labels, key=train_labels.get))
        majority_probabilities = np.eye(len(classes))[np.full_like(y_true, majority)]
        baseline = classification_metrics(y_true, majority_probabilities.argmax(1), classes)

        headline = {k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1")}
        headline.update(self.extra_metrics(y_true, probabilities))
        plots = [save_confusion_matrix(y_true, y_pred, classes, output / "confusion_matrix.png",
                                       f"{config.model.name} on {config.name} (test)")]
        plots += self.extra_plots(predictor, test, y_true, y_pred, output, config)
        return Evaluation(
            headline=headline,
            baseline={k: baseline[k] for k in ("accuracy", "macro_f1", "weighted_f1")},
            details={"per_class": metrics["per_class"]},
            plots=plots,
        )
