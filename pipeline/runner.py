"""Runs components in order, reusing finished artifacts, under one MLflow parent run.

Order: ingest → preprocess → tune (when a tuner is set) → train → evaluate.
Each component's fingerprint covers its config sections, its inputs'
fingerprints, its code and the library versions; a match with a finished
artifact is a cache hit, recorded as a nested run tagged `cache_hit=true`;
an artifact whose files no longer match its manifest is set aside and rebuilt.
A resumable component killed mid-build (train, tune) continues its staging
directory and its MLflow run; runs of killed pipelines are marked KILLED.
"""

from __future__ import annotations

import importlib
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import mlflow

from components.base import ComponentSpec
from pipeline.artifacts import Artifact, ArtifactError, ArtifactStore, code_digest, fingerprint
from pipeline.config import PipelineConfig
from pipeline.tracking import close_abandoned_runs, configure, flatten, owner_tags

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
        mlflow.set_tags({"pipeline.recipe": config.name, "pipeline.components": ",".join(order), **owner_tags()})
        for run_id in close_abandoned_runs(parent.info.experiment_id, parent.info.run_id):
            log.info("marked MLflow run %s KILLED: the pipeline that ran it is gone", run_id)
        mlflow.log_params(flatten(config.model_dump(mode="json"), "config."))
        result = PipelineResult(run_id=parent.info.run_id, tracking_uri=uri)
        for name in order:
            result.components[name] = _run_component(name, config, store, result, no_cache)
        if "evaluate" in result.components:
            mlflow.log_metrics({f"test_{k}": v for k, v in result.test_metrics.items()})
    return result


def _load_or_set_aside(store: ArtifactStore, name: str, fp: str) -> tuple[Artifact | None, str | None]:
    """The finished artifact, or None to build it, also when its files no longer match its manifest (why)."""
    try:
        return store.load(name, fp), None
    except ArtifactError as e:
        log.warning("%s; rebuilding it", e)
        return None, str(e)


def component_run(name: str, resumed: str | None, parent_id: str, tags: dict[str, str]):
    """A nested MLflow run for a component: the one a killed build left, when it resumes that build.

    Continuing the killed run keeps one run per artifact, with one metric
    history (`BackupAndRestore` picks up at the epoch after the last one logged).
    A new run gets `tags` at creation, which writes them at once: `set_tags`
    under asynchronous logging reaches the store up to a second later, and a
    short component can be over by then for whoever looks the run up. A
    resumed run has them from its first attempt.
    """
    if resumed:
        try:
            run = mlflow.start_run(run_id=resumed, nested=True)
        except mlflow.exceptions.MlflowException as e:
            log.warning("%s: cannot continue MLflow run %s (%s); starting a new one", name, resumed, e)
        else:
            log.info("%s: resuming the unfinished build and its MLflow run %s", name, resumed)
            mlflow.set_tags({"mlflow.parentRunId": parent_id, "resumed": "true"})
            return run
    return mlflow.start_run(run_name=name, nested=True, tags=tags)


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
    # Under the artifact's lock, a second pipeline waits for a build in progress and then reuses it.
    with store.lock(name, fp):
        artifact, damage = (None, None) if no_cache else _load_or_set_aside(store, name, fp)
        resumed = store.staged_run_id(name, fp) if artifact is None and spec.resumable and not no_cache else None
        with component_run(name, resumed, result.run_id, {"component": name, "fingerprint": fp}) as run:
            if damage:
                mlflow.set_tag("rebuilt_damaged_artifact", damage[:500])
            if artifact is not None:
                log.info("%s: reusing finished artifact %s", name, artifact.path)
                mlflow.set_tags({"cache_hit": "true", "cached_from_run": artifact.manifest.get("mlflow_run_id", "")})
            else:
                log.info("%s: running", name)
                mlflow.set_tag("cache_hit", "false")
                manifest = {"config": section, "inputs": {k: a.fingerprint for k, a in upstream.items()},
                            "mlflow_run_id": run.info.run_id}
                with store.build(name, fp, manifest, resume=spec.resumable) as staging:
                    store.record_run_id(name, fp, run.info.run_id)
                    manifest["summary"] = module.run({k: a.path for k, a in upstream.items()}, staging, config)
                artifact = store.load(name, fp)
            seconds = time.perf_counter() - start
            mlflow.log_metric("component_seconds", seconds)
            # The path as this host sees it: with `output_dir` on a shared filesystem, any host that mounts
            # `artifact_root` reads it there (the artifact is `<component>/<fingerprint[:16]>` under it).
            mlflow.set_tags({"artifact": str(artifact.path), "artifact_host": socket.gethostname(),
                             "artifact_root": str(store.root)})
    return ComponentResult(name, artifact, artifact.manifest["mlflow_run_id"] != run.info.run_id, run.info.run_id, seconds)
