"""Evaluate: test-split metrics of the served model, a baseline, a blessing, and registration.

The model is evaluated as it will be served: the exported `serving.keras` on
the raw test rows. It is compared with a majority-class baseline (the most
frequent train label) and blessed when every threshold in the recipe holds
and, if asked, it beats the baseline. A blessed model becomes a new version
in the MLflow Model Registry and takes the recipe's alias.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.artifact_io import read_columns, read_json
from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="evaluate",
    inputs=("ingest", "preprocess", "train"),
    config_sections=("evaluate", "name", "model"),
    code=("components/evaluate.py", "components/base.py", "components/artifact_io.py", "keras_models/serving.py"),
    description="Test metrics, majority baseline, confusion matrix, blessing, Model Registry alias.",
)


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


def save_confusion_matrix(y_true, y_pred, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2.5))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(classes))), display_labels=classes, ax=ax, colorbar=False
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bless(metrics: dict[str, float], baseline: dict[str, float], settings) -> dict[str, Any]:
    checks = [
        {"check": f"{name} >= {minimum}", "value": metrics.get(name), "passed": metrics.get(name, -np.inf) >= minimum}
        for name, minimum in settings.thresholds.items()
    ]
    if settings.must_beat_baseline:
        checks.append({"check": "accuracy > baseline accuracy", "value": metrics["accuracy"],
                       "baseline": baseline["accuracy"], "passed": metrics["accuracy"] > baseline["accuracy"]})
    return {"blessed": all(c["passed"] for c in checks), "checks": checks}


def register(model_uri: str, name: str, alias: str) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient

    version = mlflow.register_model(model_uri, name)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": version.version, "alias": alias, "source": model_uri}


def _model_uri(train_dir: Path, test_frame: pd.DataFrame, serving) -> str:
    """The train run's logged model, or, when that run is in another store, a copy logged here."""
    import mlflow

    manifest = read_json(train_dir / "manifest.json")
    uri = manifest.get("summary", {}).get("mlflow_model_uri")
    try:
        if uri and mlflow.models.get_model_info(uri):
            return uri
    except Exception:  # noqa: BLE001  (the cached train run belongs to another tracking store)
        pass
    from keras_models.serving import log_pyfunc_model

    example = test_frame.head(5)
    return log_pyfunc_model(
        train_dir / "serving.keras", train_dir / "transform.json", example, serving.predict(example)
    ).model_uri


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import mlflow

    from keras_models.serving import ServingModel

    train_dir = inputs["train"]
    serving = ServingModel(train_dir / "serving.keras", train_dir / "transform.json")
    classes = serving.classes
    label = serving.transform["label"]["name"]
    test = pd.DataFrame(read_columns(inputs["ingest"] / "test"))
    features = test.drop(columns=[label])
    y_true = pd.Categorical(test[label], categories=classes).codes.astype(int)
    y_pred = serving.probabilities(features).argmax(1)

    metrics = classification_metrics(y_true, y_pred, classes)
    train_labels = read_json(inputs["ingest"] / "statistics.json")["train"]["columns"][label]["top"]
    majority = classes.index(max(train_labels, key=train_labels.get))
    baseline = classification_metrics(y_true, np.full_like(y_true, majority), classes)
    blessing = bless(metrics, baseline, config.evaluate)

    save_confusion_matrix(y_true, y_pred, classes, output / "confusion_matrix.png",
                          f"{config.model.name} on {config.name} (test)")
    headline = {k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1")}
    mlflow.log_metrics({f"test_{k}": v for k, v in headline.items()})
    mlflow.log_metrics({f"baseline_{k}": baseline[k] for k in headline})
    mlflow.log_metrics({
        f"test_f1_{name}": report["f1-score"] for name, report in metrics["per_class"].items() if name in classes
    })
    mlflow.log_artifact(str(output / "confusion_matrix.png"), "plots")
    mlflow.set_tag("blessed", str(blessing["blessed"]).lower())

    registration = None
    if blessing["blessed"]:
        registration = register(_model_uri(train_dir, features, serving), config.registered_model_name,
                                config.evaluate.alias)
    results = {"metrics": metrics, "baseline": baseline, "blessing": blessing, "registration": registration}
    (output / "metrics.json").write_text(json.dumps({"test": metrics, "baseline": baseline}, indent=2))
    (output / "blessing.json").write_text(json.dumps({**blessing, "registration": registration}, indent=2))
    mlflow.log_artifact(str(output / "metrics.json"))
    mlflow.log_artifact(str(output / "blessing.json"))
    return {"test_metrics": headline, "blessed": blessing["blessed"], "registration": registration}
