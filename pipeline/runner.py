"""Runs components in order, reusing finished artifacts, under one MLflow parent run.

Order: ingest → preprocess → tune (when a tuner is set) → train → evaluate.
Each component's fingerprint covers its config sections, its inputs'
fingerprints, its code and the library versions; a match with a finished
artifact is a cache hit, recorded as a nested run tagged `cache_hit=true`.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow

from components.base import ComponentSpec
from pipeline.artifacts import Artifact, ArtifactStore, code_digest, fingerprint
from pipeline.config import PipelineConfig
from pipeline.tracking import configure, flatten

log = logging.getLogger("pipeline")
COMPONENTS = ("ingest", "preprocess", "tune", "train", "evaluate")


def component_module(name: str):
    return importlib.import_module(f"components.{name}")


def active_components(config: PipelineConfig) -> list[str]:
    return [c for c in COMPONENTS if c != "tune" or config.tune.tuner != "none"]


def component_config(spec: ComponentSpec, config: PipelineConfig) -> dict[str, Any]:
    """The part of the config that can change the component's output."""
    dumped = config.model_dump(mode="json")
    section: dict[str, Any] = {}
    for key in spec.config_sections:  # a section, or one field of it ("train.batch_size")
        head, _, field_name = key.partition(".")
        section[key] = dumped[head][field_name] if field_name else dumped[head]
    if "preprocess" in section:
        for key in config.preprocess.EXECUTION_ONLY:
            section["preprocess"].pop(key)
    return section


@dataclass
class ComponentResult:
    name: str
    artifact: Artifact
    cache_hit: bool
    run_id: str
    seconds: float


@dataclass
class PipelineResult:
    run_id: str
    tracking_uri: str
    components: dict[str, ComponentResult] = field(default_factory=dict)

    @property
    def test_metrics(self) -> dict[str, float]:
        evaluate = self.components.get("evaluate")
        return evaluate.artifact.manifest["summary"]["test_metrics"] if evaluate else {}


def _upstream(selected: list[str], config: PipelineConfig) -> list[str]:
    """`selected` plus every component they need, in pipeline order."""
    needed = set(selected)
    for component in reversed(active_components(config)):
        if component in needed:
            spec = component_module(component).SPEC
            needed.update(i for i in spec.inputs + spec.optional_inputs if i in active_components(config))
    return [c for c in active_components(config) if c in needed]


def run_pipeline(
    config: PipelineConfig, components: list[str] | None = None, *, no_cache: bool = False
) -> PipelineResult:
    """Runs `components` (default: all) and whatever they need, in a parent MLflow run."""
    uri = configure(config.name)
    order = _upstream(components or active_components(config), config)
    store = ArtifactStore(config.output_dir)
    with mlflow.start_run(run_name=config.name, log_system_metrics=True) as parent:
        mlflow.set_tags({"pipeline.recipe": config.name, "pipeline.components": ",".join(order)})
        mlflow.log_params(flatten(config.model_dump(mode="json"), "config."))
        result = PipelineResult(run_id=parent.info.run_id, tracking_uri=uri)
        for name in order:
            result.components[name] = _run_component(name, config, store, result, no_cache)
        if "evaluate" in result.components:
            mlflow.log_metrics({f"test_{k}": v for k, v in result.test_metrics.items()})
    return result


def _run_component(
    name: str, config: PipelineConfig, store: ArtifactStore, result: PipelineResult, no_cache: bool
) -> ComponentResult:
    module = component_module(name)
    spec: ComponentSpec = module.SPEC
    upstream = {i: result.components[i].artifact for i in spec.inputs + spec.optional_inputs
                if i in result.components}
    section = component_config(spec, config)
    fp = fingerprint(name, section, {k: a.fingerprint for k, a in upstream.items()}, code_digest(list(spec.code)))
    start = time.perf_counter()
    with mlflow.start_run(run_name=name, nested=True) as run:
        mlflow.set_tags({"component": name, "fingerprint": fp})
        artifact = None if no_cache else store.load(name, fp)
        if artifact is not None:
            log.info("%s: reusing finished artifact %s", name, artifact.path)
            mlflow.set_tags({"cache_hit": "true", "cached_from_run": artifact.manifest.get("mlflow_run_id", "")})
        else:
            log.info("%s: running", name)
            mlflow.set_tag("cache_hit", "false")
            manifest = {"config": section, "inputs": {k: a.fingerprint for k, a in upstream.items()},
                        "mlflow_run_id": run.info.run_id}
            with store.build(name, fp, manifest, resume=spec.resumable) as staging:
                manifest["summary"] = module.run({k: a.path for k, a in upstream.items()}, staging, config)
            artifact = store.load(name, fp)
        seconds = time.perf_counter() - start
        mlflow.log_metric("component_seconds", seconds)
        mlflow.set_tag("artifact", str(artifact.path))
    return ComponentResult(name, artifact, artifact.manifest["mlflow_run_id"] != run.info.run_id, run.info.run_id, seconds)
