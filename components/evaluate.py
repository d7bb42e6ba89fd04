"""Evaluate: test-split metrics of the served model, a baseline, a blessing, and registration.

The model is evaluated as it will be served: the exported `serving.keras` on
the raw test rows. The task computes its metrics, its baseline (majority
class, seasonal naive, ...) and its plots. The model is blessed when every
threshold in the recipe holds and, if asked, it beats the baseline on the
task's primary metric; a blessed model becomes a new version in the MLflow
Model Registry and takes the recipe's alias. Reference models a task reports
beside its baseline (a ridge regression) are logged as `<name>_<metric>`,
kept in `metrics.json`, and compared in `blessing.json` without blocking it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.artifact_io import read_frame, read_json
from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="evaluate",
    inputs=("ingest", "preprocess", "train"),
    config_sections=("evaluate", "name", "model", "task"),
    code=("components/evaluate.py", "components/base.py", "components/artifact_io.py", "tasks"),
    description="Test metrics against a baseline, plots, blessing, Model Registry alias.",
)


def bless(metrics: dict[str, float], baseline: dict[str, float], task, settings,
          references: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Checks each threshold (a floor for scores, a ceiling for the task's error metrics) and the baseline.

    Each reference model (a ridge regression) adds an `informational` check on the primary metric with
    the gap to it: it is reported, and the blessing does not depend on it.
    """
    checks = []
    for name, bound in settings.thresholds.items():
        value = metrics.get(name)
        lower = name in task.error_metrics
        passed = value is not None and (value <= bound if lower else value >= bound)
        checks.append({"check": f"{name} {'<=' if lower else '>='} {bound}", "value": value, "passed": passed})
    if settings.must_beat_baseline:
        name = task.primary_metric
        value, reference = metrics[name], baseline[name]
        lower = name in task.error_metrics
        checks.append({"check": f"{name} {'<' if lower else '>'} baseline {name}", "value": value,
                       "baseline": reference, "passed": value < reference if lower else value > reference})
    blessed = all(c["passed"] for c in checks)
    name = task.primary_metric
    lower = name in task.error_metrics
    for reference_name, reference_metrics in (references or {}).items():
        value, reference = metrics.get(name), reference_metrics.get(name)
        if value is None or reference is None:
            continue
        checks.append({"check": f"{name} {'<=' if lower else '>='} {reference_name} {name}", "value": value,
                       "reference": reference, "gap": value - reference,
                       "passed": value <= reference if lower else value >= reference, "informational": True})
    return {"blessed": blessed, "checks": checks}


def register(model_uri: str, name: str, alias: str) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient

    version = mlflow.register_model(model_uri, name)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": version.version, "alias": alias, "source": model_uri}


def _model_uri(train_dir: Path, example) -> str:
    """The train run's logged model, or, when that run is in another store, a copy logged here."""
    import mlflow

    from tasks.serving import log_pyfunc_model

    uri = read_json(train_dir / "manifest.json").get("summary", {}).get("mlflow_model_uri")
    try:
        if uri and mlflow.models.get_model_info(uri):
            return uri
    except Exception:  # noqa: BLE001  (the cached train run belongs to another tracking store)
        pass
    return log_pyfunc_model(train_dir / "serving.keras", train_dir / "transform.json", example).model_uri


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import mlflow

    from tasks.serving import Predictor

    train_dir = inputs["train"]
    predictor = Predictor(train_dir / "serving.keras", train_dir / "transform.json")
    task = predictor.task
    test = read_frame(inputs["ingest"] / "test")
    evaluation = task.evaluate(predictor, test, inputs["ingest"], output, config)
    blessing = bless(evaluation.headline, evaluation.baseline, task, config.evaluate, evaluation.references)

    mlflow.log_metrics({f"test_{k}": v for k, v in evaluation.headline.items()})
    mlflow.log_metrics({f"baseline_{k}": v for k, v in evaluation.baseline.items()})
    for reference, values in evaluation.references.items():
        mlflow.log_metrics({f"{reference}_{k}": v for k, v in values.items()})
    for plot in evaluation.plots:
        mlflow.log_artifact(str(plot), "plots")
    mlflow.set_tag("blessed", str(blessing["blessed"]).lower())

    registration = None
    if blessing["blessed"]:
        example = task.serving_example(read_frame(inputs["ingest"] / "train", task.example_rows), predictor.transform)
        registration = register(_model_uri(train_dir, example), config.registered_model_name, config.evaluate.alias)
    metrics = {"test": evaluation.headline, "baseline": evaluation.baseline,
               **({"references": evaluation.references} if evaluation.references else {}), **evaluation.details}
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    (output / "blessing.json").write_text(json.dumps({**blessing, "registration": registration}, indent=2))
    mlflow.log_artifact(str(output / "metrics.json"))
    mlflow.log_artifact(str(output / "blessing.json"))
    return {"test_metrics": evaluation.headline, "blessed": blessing["blessed"], "registration": registration}
