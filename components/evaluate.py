"""Evaluate: test-split metrics of the served model, a baseline, a blessing, and registration.

The model is evaluated as it will be served: the exported `serving.keras` on
the raw test rows. The task computes its metrics, its baselines (majority
class, seasonal naive, a translation memory, ...) and its plots. The model is
blessed when every threshold in the recipe holds and, if asked, it beats the
strongest of the task's blessing baselines on the task's primary metric; a
blessed model becomes a new version in the MLflow Model Registry and takes
the recipe's alias. Other systems a task reports beside its baseline are
logged as `<name>_<metric>` and kept in `metrics.json`; those that are not
blessing baselines (a ridge regression, AutoETS) are compared in
`blessing.json` without blocking it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.artifact_io import read_json
from data.splits import read_frame
from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="evaluate",
    inputs=("ingest", "preprocess", "train"),
    config_sections=("evaluate", "name", "model", "task"),
    code=("components/evaluate.py", "components/base.py", "components/artifact_io.py", "data/splits.py", "tasks"),
    description="Test metrics against a baseline, plots, blessing, Model Registry alias.",
)


def bless(metrics: dict[str, float], baseline: dict[str, float], task, settings,
          references: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Checks each threshold (a floor for scores, a ceiling for the task's error metrics) and the baselines.

    The baseline check compares the primary metric with the strongest of the
    task's `blessing_baselines` on it (the best score, or the lowest error)
    and names that baseline; `margin` is how far the model is ahead of it,
    positive when it beats it. Each other reference model (a ridge
    regression) adds an `informational` check with the gap to it: it is
    reported, and the blessing does not depend on it.
    """
    references = references or {}
    checks = []
    for name, bound in settings.thresholds.items():
        value = metrics.get(name)
        lower = name in task.error_metrics
        passed = value is not None and (value <= bound if lower else value >= bound)
        checks.append({"check": f"{name} {'<=' if lower else '>='} {bound}", "value": value, "passed": passed})
    name = task.primary_metric
    lower = name in task.error_metrics
    if settings.must_beat_baseline:
        candidates = {}
        for key in task.blessing_baselines:
            table = baseline if key == "baseline" else references.get(key, {})
            if name in table:
                candidates[task.baseline_name if key == "baseline" else key] = table[name]
        checks.append(baseline_check(name, metrics.get(name), lower, candidates))
    blessed = all(c["passed"] for c in checks)
    for reference_name, reference_metrics in references.items():
        value, reference = metrics.get(name), reference_metrics.get(name)
        if value is None or reference is None or reference_name in task.blessing_baselines:
            continue
        checks.append({"check": f"{name} {'<=' if lower else '>='} {reference_name} {name}", "value": value,
                       "reference": reference, "gap": value - reference,
                       "passed": value <= reference if lower else value >= reference, "informational": True})
    return {"blessed": blessed, "checks": checks}


def baseline_check(metric: str, value: float | None, lower: bool, baselines: dict[str, float]) -> dict[str, Any]:
    """The check that `value` beats the strongest of `baselines` (their `metric` by name) strictly.

    >>> baseline_check("chrf", 15.97, False, {"most frequent target": 1.83, "retrieval": 21.57})["outcome"]
    'chrf 15.97 <= retrieval 21.57'
    >>> baseline_check("mase", 0.9, True, {"seasonal naive": 1.2, "naive": 2.0})["outcome"]
    'mase 0.9 < seasonal naive 1.2, by 0.3'
    """
    if not baselines:
        raise ValueError(f"No blessing baseline reports {metric!r}.")
    strongest = (min if lower else max)(baselines, key=baselines.get)
    reference = baselines[strongest]
    passed = value is not None and (value < reference if lower else value > reference)
    margin = None if value is None else (reference - value if lower else value - reference)
    sign = ("<" if lower else ">") if passed else (">=" if lower else "<=")
    outcome = (f"{metric} {value:.4g} {sign} {strongest} {reference:.4g}" + (f", by {margin:.4g}" if passed else "")
               if value is not None else f"{metric} missing; {strongest} {reference:.4g}")
    return {"check": f"{metric} {'<' if lower else '>'} {strongest} {metric}", "value": value,
            "baseline": strongest, "baseline_value": reference, "margin": margin, "baselines": baselines,
            "outcome": outcome, "passed": passed}


def blessing_outcome(checks: list[dict[str, Any]]) -> str:
    """One line on why the model was blessed or not: the failed checks, else the baseline it beat."""
    failed = [c.get("outcome") or f"{c['check']} failed (value {c['value']})" for c in checks
              if not c["passed"] and not c.get("informational")]
    if failed:
        return "; ".join(failed)
    return "; ".join(c["outcome"] for c in checks if "outcome" in c) or "every check passed"


def register(model_uri: str, name: str, alias: str, description: str = "",
             tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Registers the model as a new version of `name` with `description` and `tags`, and points `alias` at it."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    version = mlflow.register_model(model_uri, name, tags=tags)
    if description:
        client.update_model_version(name, version.version, description=description)
    client.set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": version.version, "alias": alias, "source": model_uri}


def metrics_table(metrics: dict[str, float], baseline: dict[str, float],
                  references: dict[str, dict[str, float]] | None = None) -> str:
    """A Markdown table of the test metrics beside the baseline's and each reference model's."""
    references = references or {}
    header = ["metric", "model", "baseline", *references]
    rows = [[name, f"{value:.4f}", *(f"{table[name]:.4f}" if name in table else "" for table in
                                     (baseline, *references.values()))] for name, value in metrics.items()]
    return "\n".join("| " + " | ".join(row) + " |" for row in (header, ["---"] * len(header), *rows))


def version_description(config, evaluation, blessing: dict[str, Any], data_fingerprint: str) -> str:
    """The registered version's description: what it was trained on, how it scored, and why it was blessed."""
    def line(c):
        state = f"{'passed' if c['passed'] else 'failed'}{' (informational)' if c.get('informational') else ''}"
        if "outcome" in c:
            return f"- {state}: `{c['outcome']}` (the strongest of the baselines {_listed(c['baselines'])})"
        return f"- {state}: `{c['check']}` (value {c['value']:.4f})" if c.get("value") is not None \
            else f"- failed: `{c['check']}` (no value)"

    checks = "\n".join(line(c) for c in blessing["checks"])
    return (f"**{config.model.name}** trained by recipe `{config.name}` ({config.task.type}) on "
            f"`{config.data.source}` (data fingerprint `{data_fingerprint[:16]}`).\n\n"
            f"Test split:\n\n{metrics_table(evaluation.headline, evaluation.baseline, evaluation.references)}\n\n"
            f"Blessing checks:\n\n{checks or '- none'}\n")


def _listed(baselines: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in baselines.items())


def classifier_plots(predictor, test, output: Path, title: str) -> list[Path]:
    """A calibration curve, and one-vs-rest ROC and precision-recall curves when there are more than two classes.

    The task's own plots hold the confusion matrix and, for two classes, the
    ROC and PR curves of the positive class. Calibration is that of the
    positive class for two classes, else of the top class's probability
    (how often the predicted class is right at each confidence).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    label = predictor.transform["label"]
    classes = label["classes"]
    y_true = pd.Categorical(test[label["name"]], categories=classes).codes.astype(int)
    probabilities = np.asarray(predictor.outputs(test.drop(columns=[label["name"]])), dtype="float64")
    binary = len(classes) == 2
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if binary:
        CalibrationDisplay.from_predictions(y_true, probabilities[:, 1], n_bins=10, name=f"P({classes[1]})", ax=ax)
    else:
        CalibrationDisplay.from_predictions(probabilities.argmax(1) == y_true, probabilities.max(1), n_bins=10,
                                            name="top class", ax=ax)
        ax.set_xlabel("mean predicted probability of the predicted class")
        ax.set_ylabel("fraction predicted correctly")
    ax.set_title(f"Calibration: {title}")
    fig.tight_layout()
    paths = [output / "calibration.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    present = [k for k in range(len(classes)) if 0 < (y_true == k).sum() < len(y_true)]
    if binary or len(classes) > 10 or not present:
        return paths
    for display, file, chance in ((RocCurveDisplay, "roc_curve.png", True),
                                  (PrecisionRecallDisplay, "pr_curve.png", False)):
        fig, ax = plt.subplots(figsize=(6, 5.5))
        for k in present:
            display.from_predictions(y_true == k, probabilities[:, k], name=str(classes[k]), ax=ax,
                                     plot_chance_level=chance and k == present[-1])
        ax.set_title(f"{'ROC' if chance else 'Precision-recall'}, one class against the rest: {title}")
        fig.tight_layout()
        fig.savefig(output / file, dpi=120)
        plt.close(fig)
        paths.append(output / file)
    return paths


def _logged_model(train_dir: Path, example) -> tuple[str, str]:
    """The train run's logged model (URI, MLflow 3 model id), or, when that run is in another store, a copy logged here."""
    import mlflow

    from tasks.serving import log_pyfunc_model

    uri = read_json(train_dir / "manifest.json").get("summary", {}).get("mlflow_model_uri")
    try:
        info = mlflow.models.get_model_info(uri) if uri else None
    except Exception:  # noqa: BLE001  (the cached train run belongs to another tracking store)
        info = None
    if info is None:
        info = log_pyfunc_model(train_dir / "serving.keras", train_dir / "transform.json", example)
    return info.model_uri, info.model_id


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import mlflow

    from tasks.classification import ClassificationTask
    from tasks.serving import Predictor

    train_dir = inputs["train"]
    predictor = Predictor(train_dir / "serving.keras", train_dir / "transform.json")
    task = predictor.task
    test = read_frame(inputs["ingest"] / "test")
    evaluation = task.evaluate(predictor, test, inputs["ingest"], output, config)
    if isinstance(task, ClassificationTask):
        evaluation.plots += classifier_plots(predictor, test, output, f"{config.model.name} on {config.name} (test)")
    blessing = bless(evaluation.headline, evaluation.baseline, task, config.evaluate, evaluation.references)

    # The test metrics belong to the logged model (MLflow 3's model page lists them) and to the test split.
    example = task.serving_example(read_frame(inputs["ingest"] / "train", task.example_rows), predictor.transform)
    model_uri, model_id = _logged_model(train_dir, example)
    recorded = inputs["ingest"] / "datasets.json"  # written by ingest: the splits as MLflow datasets
    test_split = read_json(recorded).get("test") if recorded.exists() else None
    dataset = mlflow.entities.Dataset(**test_split) if test_split else None
    mlflow.log_metrics({f"test_{k}": v for k, v in evaluation.headline.items()}, model_id=model_id, dataset=dataset)
    mlflow.log_metrics({f"baseline_{k}": v for k, v in evaluation.baseline.items()})
    for reference, values in evaluation.references.items():
        mlflow.log_metrics({f"{reference}_{k}": v for k, v in values.items()})
    for plot in evaluation.plots:
        mlflow.log_artifact(str(plot), "plots")
    mlflow.set_tag("blessed", str(blessing["blessed"]).lower())
    mlflow.set_tag("blessing", blessing_outcome(blessing["checks"]))

    registration = None
    if blessing["blessed"]:
        manifest = inputs["ingest"] / "manifest.json"  # absent when evaluate runs outside the runner
        data_fingerprint = read_json(manifest).get("fingerprint", "") if manifest.exists() else ""
        tags = {"recipe": config.name, "task": config.task.type, "model": config.model.name,
                "data_fingerprint": data_fingerprint[:16], "blessed": "true"}
        registration = register(model_uri, config.registered_model_name, config.evaluate.alias,
                                version_description(config, evaluation, blessing, data_fingerprint), tags)
    metrics = {"test": evaluation.headline, "baseline": evaluation.baseline,
               **({"references": evaluation.references} if evaluation.references else {}),
               "blessing": blessing, **evaluation.details}
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    (output / "blessing.json").write_text(json.dumps({**blessing, "registration": registration}, indent=2))
    mlflow.log_artifact(str(output / "metrics.json"))
    mlflow.log_artifact(str(output / "blessing.json"))
    return {"test_metrics": evaluation.headline, "baseline_metrics": evaluation.baseline,
            "reference_metrics": evaluation.references, "blessed": blessing["blessed"],
            "checks": blessing["checks"], "blessing": blessing_outcome(blessing["checks"]), "model_id": model_id,
            "registration": registration}
