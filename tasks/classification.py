"""What every classification task shares: label vocabulary, head, metrics, baseline and plots.

A label may hold strings, integers, booleans or floats that code classes.
Parquet stores each class as its canonical string (`canonical_label`), so
Beam, the trainer and the metrics see one vocabulary whatever the source's
type; the label entry of `schema.json` and `transform.json` keeps the
original value of each class and its type (`dtype`), and predictions come
back as those values. The classes are counted on the train split by the
Beam analyzer and sorted; a test label never seen in training is an error
that names it. The model is judged against the majority class of the train
split, whose probabilities are the train class frequencies.
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

LABEL_DTYPES = ("string", "integer", "boolean", "float")
# The CSV reader's column types → the label dtype they give (a date labels classes by its text).
DECLARED_DTYPES = {"string": "string", "date": "string", "integer": "integer", "float": "float",
                   "boolean": "boolean"}
NUMPY_DTYPES = {"string": object, "integer": "int64", "boolean": "bool", "float": "float64"}


def canonical_label(value: Any) -> str:
    """One class value → the string Parquet stores for it.

    Booleans are `"true"`/`"false"`; a whole number is written without a
    fraction whether it is held as an int or a float (pandas makes an integer
    column float when it has missing values), so `1` and `1.0` are both `"1"`;
    other floats are their shortest round-tripping `repr`.
    """
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def canonical_labels(column: pd.Series) -> np.ndarray:
    """A label column → its canonical strings, as an object array (missing values become None)."""
    present = column.notna().to_numpy()
    values = column[present]
    strings = np.full(len(column), None, dtype=object)
    strings[present] = values.map({v: canonical_label(v) for v in values.unique().tolist()}).to_numpy(dtype=object)
    return strings


def label_array(frame: pd.DataFrame, label: dict[str, Any]) -> pa.Array:
    """The label column of a split as Parquet stores it: canonical strings."""
    return pa.array(canonical_labels(frame[label["name"]]), pa.string())


def label_dtype(column: pd.Series, declared: str | None = None) -> str:
    """The label's type: the column type a CSV source declares for it, else its values' type.

    pandas holds an integer column that had missing values as floats, so such
    a label serves floats unless `data.csv.column_types` declares it `integer`
    (its classes are "1", "2", ... either way).
    """
    if declared is not None:
        return DECLARED_DTYPES[declared]
    values = column.dropna()
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_float_dtype(values):
        return "float"
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    return {"boolean": "boolean", "integer": "integer", "floating": "float",
            "mixed-integer-float": "float"}.get(inferred, "string")


def _declared_type(raw: RawData) -> str | None:
    """The type `data.csv.column_types` gives the label column (None when the source declares none)."""
    types = (raw.csv_format or {}).get("column_types") or {}
    originals = [original for original, name in raw.renamed.items() if name == raw.label]
    return next((types[name] for name in originals if name in types), None)


def _json_value(value: Any, dtype: str) -> Any:
    return {"integer": int, "boolean": bool, "float": float}.get(dtype, canonical_label)(value)


def _class_order(dtype: str, values: dict[str, Any]):
    """Numbers in numeric order (3 before 13), anything else by its canonical string."""
    if dtype in ("integer", "float"):
        return lambda c: values[c]
    return lambda c: c


def label_schema(train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
    """The label entry of `schema.json`: sorted canonical classes, their original values and the type."""
    column = train[raw.label].dropna()
    dtype = label_dtype(column, _declared_type(raw))
    values = {}
    for value in column.unique().tolist():
        values.setdefault(canonical_label(value), _json_value(value, dtype))
    classes = sorted(values, key=_class_order(dtype, values))
    return {"name": raw.label, "kind": "categorical", "classes": classes,
            "values": [values[c] for c in classes], "dtype": dtype}


def label_spec(counts: Counter, label: dict[str, Any]) -> dict[str, Any]:
    """The label entry of `transform.json`: the schema's, with the classes and counts Beam found in the train split.

    A schema entry without classes (a hand-written one) is taken for string labels.
    """
    known = dict(zip(label["classes"], label.get("values", label["classes"]))) if "classes" in label else None
    order = {c: i for i, c in enumerate(label.get("classes", ()))}
    classes = sorted(counts, key=lambda c: (order.get(c, len(order)), c))
    unknown = [c for c in classes if known is not None and c not in known]
    if unknown:
        raise ValueError(f"Label {label['name']!r}: train value(s) {unknown} are not in the ingest schema's classes "
                         f"{label['classes']}; re-run ingest.")
    return {"kind": "categorical", **label, "classes": classes,
            "values": [known[c] for c in classes] if known is not None else classes,
            "dtype": label.get("dtype", "string"), "counts": {c: int(counts[c]) for c in classes}}


def class_values(label: dict[str, Any]) -> np.ndarray:
    """The original value of each class, in the label's own type (strings for a transform without `values`)."""
    dtype = label.get("dtype", "string")
    return np.asarray(label.get("values", label["classes"]), dtype=NUMPY_DTYPES[dtype])


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


def probabilistic_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Log-loss; ROC AUC and average precision of the second class for two classes, else macro one-vs-rest ROC AUC.

    A class absent from `y_true` has no ROC curve: the one-vs-rest average
    is over the classes present, and with two classes both must be present.
    """
    import warnings

    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    probabilities = np.asarray(probabilities, "float64")
    probabilities = probabilities / probabilities.sum(1, keepdims=True)
    labels = list(range(probabilities.shape[1]))
    metrics = {"log_loss": float(log_loss(y_true, probabilities, labels=labels))}
    present = np.unique(y_true)
    if len(labels) == 2:
        if present.size == 2:
            metrics["roc_auc"] = float(roc_auc_score(y_true, probabilities[:, 1]))
            metrics["pr_auc"] = float(average_precision_score(y_true, probabilities[:, 1]))
    elif present.size >= 2:
        with warnings.catch_warnings():  # an absent class scores NaN, left out of the mean
            warnings.simplefilter("ignore")
            per_class = roc_auc_score(y_true, probabilities, multi_class="ovr", labels=labels, average=None)
        metrics["roc_auc_ovr"] = float(np.nanmean(per_class))
    return metrics


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


def save_binary_curves(y_true, scores, classes: list[str], output: Path, name: str, title: str) -> list[Path]:
    """The ROC and precision-recall curves of the second class (the positive one), with chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    names = np.asarray(classes, dtype=object)[y_true]
    paths = []
    for display, file in ((RocCurveDisplay, "roc_curve.png"), (PrecisionRecallDisplay, "pr_curve.png")):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        display.from_predictions(names, scores, pos_label=classes[1], name=name, ax=ax, plot_chance_level=True)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(output / file, dpi=120)
        plt.close(fig)
        paths.append(output / file)
    return paths


def predictions_frame(probabilities: np.ndarray, label: dict[str, Any], index=None) -> pd.DataFrame:
    """`prediction` (the class in the label's own type) and one `probability_<class>` column per class."""
    frame = pd.DataFrame(
        {f"probability_{c}": probabilities[:, i].astype("float64") for i, c in enumerate(label["classes"])},
        index=index,
    )
    frame.insert(0, "prediction", class_values(label)[probabilities.argmax(1)])
    return frame


class ClassificationTask(Task):
    head = "classification"
    primary_metric = "accuracy"
    error_metrics = frozenset({"log_loss"})
    baseline_name = "majority class"

    def outputs_frame(self, outputs, transform, index=None) -> pd.DataFrame:
        return predictions_frame(np.asarray(outputs), transform["label"], index)

    def extra_metrics(self, y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
        """Task-specific scalars beside accuracy and F1 (top-k for images)."""
        return {}

    def extra_plots(self, predictor, test: pd.DataFrame, y_true, y_pred, output: Path, config) -> list[Path]:
        """Task-specific plots beside the confusion matrix (mistakes, attention maps)."""
        return []

    def evaluate(self, predictor, test: pd.DataFrame, ingest_dir: Path, output: Path, config) -> Evaluation:
        label = predictor.transform["label"]
        classes = label["classes"]
        y_true = pd.Categorical(test[label["name"]], categories=classes).codes.astype(int)
        probabilities = predictor.outputs(test.drop(columns=[label["name"]]))
        y_pred = probabilities.argmax(1)
        metrics = classification_metrics(y_true, y_pred, classes)

        counts = np.array([label["counts"][c] for c in classes], "float64")
        frequencies = np.tile(counts / counts.sum(), (len(y_true), 1))
        baseline = classification_metrics(y_true, frequencies.argmax(1), classes)

        scalars = ("accuracy", "macro_f1", "weighted_f1")
        headline = {k: metrics[k] for k in scalars} | probabilistic_metrics(y_true, probabilities)
        headline.update(self.extra_metrics(y_true, probabilities))
        title = f"{config.model.name} on {config.name} (test)"
        plots = [save_confusion_matrix(y_true, y_pred, classes, output / "confusion_matrix.png", title)]
        if "roc_auc" in headline:
            plots += save_binary_curves(y_true, np.asarray(probabilities)[:, 1], classes, output,
                                        config.model.name, title)
        plots += self.extra_plots(predictor, test, y_true, y_pred, output, config)
        return Evaluation(
            headline=headline,
            baseline={k: baseline[k] for k in scalars} | probabilistic_metrics(y_true, frequencies),
            details={"per_class": metrics["per_class"]},
            plots=plots,
        )
