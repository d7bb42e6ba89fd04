"""Running components on real data without the runner, for component tests."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import PipelineConfig, load_config


def run_component(name: str, config: PipelineConfig, inputs: dict[str, Path], output: Path) -> dict:
    """Runs one component into `output` inside a throwaway MLflow run."""
    import importlib

    import mlflow

    output.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"components.{name}")
    with mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None):
        return module.run(inputs, output, config)


def run_train(config: PipelineConfig, inputs: dict[str, Path], output: Path) -> dict:
    """Runs the train component and records its summary in the manifest, as the runner does for evaluate."""
    import json

    summary = run_component("train", config, inputs, output)
    (output / "manifest.json").write_text(json.dumps({"summary": summary}))
    return summary


def config_for(recipe: str = "iris_mlp", **overrides) -> PipelineConfig:
    return load_config(recipe, overrides)


def use_mlflow_store(directory: Path) -> str:
    """Points MLflow at a fresh SQLite store in `directory`, with an experiment selected."""
    import mlflow

    uri = f"sqlite:///{Path(directory) / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tests")
    return uri
