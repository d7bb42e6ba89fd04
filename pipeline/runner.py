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
import yaml

from components.base import ComponentSpec
from pipeline.artifacts import Artifact, ArtifactError, ArtifactStore, code_digest, fingerprint
from pipeline.config import PipelineConfig
from pipeline.tracking import close_abandoned_runs, configure, link_project_run, owner_tags, record_failure

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


def run_name(config: PipelineConfig) -> str:
    """The parent run's name in the MLflow UI: `<recipe> · <model>`."""
    return f"{config.name} · {config.model.name}"


def review_params(config: PipelineConfig) -> dict[str, Any]:
    """The parent run's params: what a reviewer compares across runs, without unset values.

    The hyperparameters and learning rate are logged once train knows them
    (the tuner's winner, when a tuner runs); the whole resolved config is the
    run's `config.yaml`.
    """
    train, tune = config.train, config.tune
    params = {"recipe": config.name, "task": config.task.type, "model": config.model.name,
              "data": config.data.source, "epochs": train.epochs, "batch_size": train.batch_size,
              "strategy": train.strategy, "seed": config.seed, "tuner": tune.tuner}
    if tune.tuner != "none":
        params.update(max_trials=tune.max_trials, tune_epochs=tune.epochs, tune_objective=tune.objective)
    return {k: v for k, v in params.items() if v not in (None, "")}


def run_pipeline(
    config: PipelineConfig, components: list[str] | None = None, *, no_cache: bool = False
) -> PipelineResult:
    """Runs `components` (default: all) and whatever they need, in a parent MLflow run.

    A component that fails leaves its message as the `pipeline.error` tag and
    its traceback as `error.txt` on its own run and on the parent run.
    """
    uri, project_run = configure(config.name)
    order = _upstream(components or active_components(config), config)
    store = ArtifactStore(config.output_dir)
    with mlflow.start_run(run_name=run_name(config), log_system_metrics=True) as parent:
        mlflow.set_tags({"mlflow.runName": run_name(config), "pipeline.recipe": config.name,
                         "pipeline.components": ",".join(order), **owner_tags()})
        if project_run:
            link_project_run(project_run, parent)
        for run_id in close_abandoned_runs(parent.info.experiment_id, parent.info.run_id):
            log.info("marked MLflow run %s KILLED: the pipeline that ran it is gone", run_id)
        mlflow.log_params(review_params(config))
        mlflow.log_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), "config.yaml")
        result = PipelineResult(run_id=parent.info.run_id, tracking_uri=uri)
        try:
            for name in order:
                result.components[name] = _run_component(name, config, store, result, no_cache)
                _log_review_params(name, config, result)
        except Exception as error:
            record_failure(parent.info.run_id, error)
            raise
        if "evaluate" in result.components:
            mlflow.log_metrics({f"test_{k}": v for k, v in result.test_metrics.items()})
        mlflow.set_tag("mlflow.note.content", pipeline_note(config, result, parent.info.experiment_id))
    return result


def _log_review_params(name: str, config: PipelineConfig, result: PipelineResult) -> None:
    """Once ingest is done, the data fingerprint and the splits as the parent's dataset inputs (the runs table's
    Dataset column); once train is, the trained hyperparameters and learning rate."""
    if name == "ingest":
        from components.ingest import log_datasets

        ingest = result.components["ingest"].artifact
        mlflow.log_param("data_fingerprint", ingest.fingerprint[:16])
        log_datasets(ingest.path, DATASET_SPLITS["ingest"], result.run_id)
    elif name == "train":
        from components.train import model_settings

        tune = result.components.get("tune")
        hparams, learning_rate = model_settings(config, {"tune": tune.artifact.path} if tune else {})
        params = {"learning_rate": learning_rate, **{f"hp_{k}": v for k, v in hparams.items()}}
        mlflow.log_params({k: v for k, v in params.items() if v not in (None, "")})


def _run_link(run_id: str, experiment_id: str | None = None) -> str:
    """A Markdown link to a run, relative to the MLflow UI, so it works on whichever host serves it."""
    if experiment_id is None:
        try:
            experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
        except mlflow.exceptions.MlflowException:  # a run of another tracking store
            return f"`{run_id}`"
    return f"[{run_id[:8]}](#/experiments/{experiment_id}/runs/{run_id})"


def pipeline_note(config: PipelineConfig, result: PipelineResult, experiment_id: str) -> str:
    """The parent run's description: test metrics against the baselines, what ran or was reused, how to rerun it."""
    from components.evaluate import metrics_table

    lines = [f"### {run_name(config)}", ""]
    evaluate = result.components.get("evaluate")
    if evaluate:
        summary = evaluate.artifact.manifest["summary"]
        lines += ["Test split:", "", metrics_table(summary["test_metrics"], summary.get("baseline_metrics", {}),
                                                   summary.get("reference_metrics")), ""]
        registration = summary.get("registration")
        why = f" ({summary['blessing']})" if summary.get("blessing") else ""
        lines += [f"Blessed{why} and registered as `models:/{registration['name']}@{registration['alias']}` "
                  f"(version {registration['version']})." if registration else
                  f"Not blessed{why}: see `blessing.json` on the evaluate run.", ""]
    lines += ["| component | | run | seconds |", "| --- | --- | --- | --- |"]
    for name, component in result.components.items():
        built_by = component.artifact.manifest.get("mlflow_run_id", "")
        state = f"cached, built by {_run_link(built_by)}" if component.cache_hit else "ran"
        lines.append(f"| {name} | {state} | {_run_link(component.run_id, experiment_id)} | {component.seconds:.1f} |")
    lines += ["", "Reproduce it (the resolved config is this run's `config.yaml`):", "", "```",
              f"mlflow artifacts download --run-id {result.run_id} --artifact-path config.yaml --dst-path .",
              "keras-pipeline run --recipe config.yaml", "```"]
    return "\n".join(lines)


def component_note(name: str, artifact: Artifact, cache_hit: bool) -> str:
    """A component run's description: the artifact's summary and, when reused, the run that built it."""
    summary = yaml.safe_dump(artifact.manifest.get("summary") or {}, sort_keys=False, default_flow_style=False)
    head = (f"Reused the `{name}` artifact built by run {_run_link(artifact.manifest.get('mlflow_run_id', ''))} "
            f"on {artifact.manifest.get('created_at', 'an earlier run')}." if cache_hit else f"Built `{name}`.")
    return f"{head}\n\nArtifact: `{artifact.path}`\n\nSummary:\n\n```yaml\n{summary}```"


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
            try:
                artifact = _build_or_reuse(name, module, config, store, fp, section, upstream, artifact, damage, run)
            except Exception as error:
                record_failure(run.info.run_id, error)
                raise
            seconds = time.perf_counter() - start
            mlflow.log_metric("component_seconds", seconds)
            # The path as this host sees it: with `output_dir` on a shared filesystem, any host that mounts
            # `artifact_root` reads it there (the artifact is `<component>/<fingerprint[:16]>` under it).
            mlflow.set_tags({"artifact": str(artifact.path), "artifact_host": socket.gethostname(),
                             "artifact_root": str(store.root)})
            cache_hit = artifact.manifest["mlflow_run_id"] != run.info.run_id
            mlflow.set_tag("mlflow.note.content", component_note(name, artifact, cache_hit))
    return ComponentResult(name, artifact, cache_hit, run.info.run_id, seconds)


# The ingest splits each component reads, logged as its run's dataset inputs (ingest logs its own when it runs).
DATASET_SPLITS = {"ingest": ["train", "eval", "test"], "train": ["train", "eval"], "evaluate": ["test"]}


def _build_or_reuse(name: str, module, config: PipelineConfig, store: ArtifactStore, fp: str,
                    section: dict[str, Any], upstream: dict[str, Artifact], artifact: Artifact | None,
                    damage: str | None, run) -> Artifact:
    """The finished artifact: the one found (logging what the run that built it read), or a new build."""
    from components.ingest import log_datasets

    if damage:
        mlflow.set_tag("rebuilt_damaged_artifact", damage[:500])
    ingest = artifact if name == "ingest" else upstream.get("ingest")
    if ingest is not None and name in DATASET_SPLITS:
        log_datasets(ingest.path, DATASET_SPLITS[name], run.info.run_id)
    if artifact is not None:
        log.info("%s: reusing finished artifact %s", name, artifact.path)
        mlflow.set_tags({"cache_hit": "true", "cached_from_run": artifact.manifest.get("mlflow_run_id", "")})
        mlflow.log_artifact(str(artifact.path / "manifest.json"))
        return artifact
    log.info("%s: running", name)
    mlflow.set_tag("cache_hit", "false")
    manifest = {"config": section, "inputs": {k: a.fingerprint for k, a in upstream.items()},
                "mlflow_run_id": run.info.run_id}
    with store.build(name, fp, manifest, resume=module.SPEC.resumable) as staging:
        store.record_run_id(name, fp, run.info.run_id)
        manifest["summary"] = module.run({k: a.path for k, a in upstream.items()}, staging, config)
    return store.load(name, fp)
