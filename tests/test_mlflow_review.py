"""What a reviewer reads in MLflow after a pipeline run, read back through `MlflowClient`.

One tuned Iris run and its all-cached rerun, then a run that fails in ingest,
all in one SQLite store.
"""

import pytest
import yaml

from pipeline.config import load_config

SETTINGS = {"epochs": 40, "tuner": "random", "max_trials": 2, "tune.epochs": 2}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import mlflow

    from tests.helpers import new_sqlite_store

    root = tmp_path_factory.mktemp("review")
    uri = new_sqlite_store(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
            patch.delenv(name, raising=False)
        yield root, uri, mlflow.MlflowClient(uri)
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="module")
def runs(store):
    """The first run (everything built) and the second (everything cached), each as {run name: Run}."""
    from pipeline.runner import run_pipeline

    root, _, client = store
    config = load_config("iris_mlp", {**SETTINGS, "output_dir": str(root / "artifacts")})
    results = [run_pipeline(config), run_pipeline(config)]
    trees = []
    for result in results:
        parent = client.get_run(result.run_id)
        children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
        tree = {"parent": parent, **{r.info.run_name: r for r in children}}
        tree["trials"] = client.search_runs([parent.info.experiment_id],
                                            f"tags.mlflow.parentRunId = '{tree['tune'].info.run_id}'")
        trees.append(tree)
    return config, results, trees


def _all_runs(trees):
    for tree in trees:
        yield from (run for name, run in tree.items() if name != "trials")
        yield from tree["trials"]


def test_the_experiment_opens_as_model_development_and_parents_are_named_by_recipe_and_model(runs, store):
    _, results, trees = runs
    client = store[2]
    parent = trees[0]["parent"]
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(parent.info.experiment_id).name == "iris_mlp"
    assert [t["parent"].info.run_name for t in trees] == ["iris_mlp · mlp"] * 2
    assert {n for n in trees[0] if n not in ("parent", "trials")} == {"ingest", "preprocess", "tune", "train", "evaluate"}
    assert sorted(t.info.run_name for t in trees[0]["trials"]) == ["trial-0", "trial-1"]
    assert all(c.cache_hit for c in results[1].components.values())


def test_one_name_per_quantity_each_logged_once_per_epoch(runs, store):
    client = store[2]
    _, _, trees = runs
    for run in _all_runs(trees):
        names = set(run.data.metrics)
        assert not [n for n in names if n.startswith("validation_")], run.info.run_name
        for name in names:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
            assert all(a < b for a, b in zip(steps, steps[1:])), (run.info.run_name, name, steps)
    train = trees[0]["train"]
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(train.data.metrics)
    epochs = [m.step for m in client.get_metric_history(train.info.run_id, "val_loss")]
    assert epochs == list(range(len(epochs))) and len(epochs) >= 10
    for trial in trees[0]["trials"]:
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "loss")] == [0, 1]


def test_params_are_what_a_person_compares_and_the_whole_config_is_an_artifact(runs, store, tmp_path):
    import mlflow

    config, results, trees = runs
    for run in _all_runs(trees):
        assert "" not in run.data.params.values(), run.info.run_name
        assert not [p for p in run.data.params if p.startswith(("optimizer_", "config."))], run.info.run_name
    params = trees[0]["parent"].data.params
    best = results[0].components["tune"].artifact.path / "best_hparams.json"
    winner = yaml.safe_load(best.read_text())
    assert params["model"] == "mlp" and params["epochs"] == "40" and params["batch_size"] == "16"
    assert params["strategy"] == "auto" and params["tuner"] == "random" and params["max_trials"] == "2"
    assert params["data_fingerprint"] == results[0].components["ingest"].artifact.fingerprint[:16]
    assert float(params["learning_rate"]) == pytest.approx(winner["learning_rate"])  # the tuner's winner
    assert {k: v for k, v in params.items() if k.startswith("hp_")} == {
        f"hp_{k}": str(v) for k, v in winner["hparams"].items()}
    path = mlflow.artifacts.download_artifacts(run_id=results[0].run_id, artifact_path="config.yaml",
                                               dst_path=str(tmp_path), tracking_uri=store[1])
    assert load_config(path) == config  # the note's command reruns exactly this


def test_every_run_that_reads_a_split_logs_it_as_a_dataset_cached_or_not_and_the_parent_all_three(runs):
    _, _, trees = runs
    expected = {"parent": ["testing", "training", "validation"], "ingest": ["testing", "training", "validation"],
                "train": ["training", "validation"], "evaluate": ["testing"]}
    digests = {}
    for tree in trees:
        for name, contexts in expected.items():
            inputs = tree[name].inputs.dataset_inputs
            assert sorted(t.value for i in inputs for t in i.tags if t.key == "mlflow.data.context") == contexts
            for i in inputs:
                assert i.dataset.name == "sklearn:iris" and i.dataset.schema and i.dataset.source
                context = next(t.value for t in i.tags if t.key == "mlflow.data.context")
                assert digests.setdefault(context, i.dataset.digest) == i.dataset.digest  # one digest per split
    assert len(set(digests.values())) == 3


def test_test_metrics_belong_to_the_logged_model_and_the_registered_version_says_how_it_scored(runs, store):
    config, results, trees = runs
    client = store[2]
    evaluate = results[0].components["evaluate"].artifact.manifest["summary"]
    model = client.get_logged_model(evaluate["model_id"])
    on_model = {m.key: m.value for m in model.metrics if m.run_id == trees[0]["evaluate"].info.run_id}
    assert on_model == pytest.approx({f"test_{k}": v for k, v in evaluate["test_metrics"].items()})
    assert on_model["test_accuracy"] >= 0.9
    plots = {a.path for a in client.list_artifacts(trees[0]["evaluate"].info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/calibration.png", "plots/roc_curve.png", "plots/pr_curve.png"} <= plots

    (version,) = client.search_model_versions(f"name = '{config.registered_model_name}'")
    assert version.tags == {"recipe": "iris_mlp", "task": "tabular_classification", "model": "mlp",
                            "data_fingerprint": results[0].components["ingest"].artifact.fingerprint[:16],
                            "blessed": "true"}
    accuracy, baseline = evaluate["test_metrics"]["accuracy"], evaluate["baseline_metrics"]["accuracy"]
    assert f"| accuracy | {accuracy:.4f} | {baseline:.4f} |" in version.description
    assert "passed: `accuracy >= 0.9`" in version.description


def test_run_descriptions_summarise_the_run_and_cached_runs_name_their_builder(runs):
    _, results, trees = runs
    note = trees[1]["parent"].data.tags["mlflow.note.content"]
    accuracy = results[1].test_metrics["accuracy"]
    assert f"| accuracy | {accuracy:.4f} |" in note
    for name in ("ingest", "preprocess", "tune", "train", "evaluate"):
        built = trees[0][name].info.run_id
        assert f"| {name} | cached, built by [{built[:8]}](#/experiments/" in note
        cached = trees[1][name].data.tags
        assert cached["cached_from_run"] == built and built in cached["mlflow.note.content"]
        assert "Summary:" in cached["mlflow.note.content"]
    assert f"--run-id {results[1].run_id} --artifact-path config.yaml" in note
    assert "models:/iris-mlp@champion" in trees[0]["parent"].data.tags["mlflow.note.content"]


def test_a_failed_run_says_why_on_its_run_and_the_cli_prints_one_line(runs, store, capsys):
    from pipeline import cli

    root, _, client = store
    experiment_id = runs[2][0]["parent"].info.experiment_id
    status = cli.main(["run", "--recipe", "iris_mlp", "--set", "data.label=nope", "--output-dir", str(root / "bad")])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    failed = {r.info.run_name: r for r in client.search_runs([experiment_id], "attributes.status = 'FAILED'")}
    assert set(failed) == {"iris_mlp · mlp", "ingest"}
    for run in failed.values():
        assert line == f"error: {run.data.tags['pipeline.error']}" and "label column 'nope' not found" in line
        traceback = client.download_artifacts(run.info.run_id, "error.txt", str(root))
        assert "Traceback" in open(traceback).read()


def test_a_plain_mlflow_run_logs_into_the_recipes_experiment_and_points_there(runs, store, monkeypatch):
    """`mlflow run .` without an experiment makes its run in Default, with every entry-point parameter."""
    from pipeline.runner import run_pipeline

    config, _, trees = runs
    client = store[2]
    project = client.create_run("0")
    client.log_param(project.info.run_id, "model", "")  # as `mlflow run` logs an empty parameter
    monkeypatch.setenv("MLFLOW_RUN_ID", project.info.run_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "0")
    result = run_pipeline(config, ["ingest"])
    pipeline = client.get_run(result.run_id)
    assert pipeline.info.experiment_id == trees[0]["parent"].info.experiment_id
    assert "" not in pipeline.data.params.values()
    assert pipeline.data.tags["pipeline.project_run_id"] == project.info.run_id
    pointer = client.get_run(project.info.run_id).data.tags
    assert pointer["pipeline.run_id"] == result.run_id and result.run_id in pointer["mlflow.note.content"]


def test_a_pipeline_that_loses_the_race_to_tag_its_experiment_goes_on(local_mlflow, monkeypatch):
    """Two pipelines started at once on a SQL store both set the experiment's kind; the second insert fails."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import EXPERIMENT_KIND, _tag_experiment_kind

    client = mlflow.MlflowClient()
    experiment = client.create_experiment("raced")

    def lose_the_race(experiment_id, key, value):
        raise MlflowException("duplicate key value violates unique constraint \"experiment_tag_pk\"")

    monkeypatch.setattr(client, "set_experiment_tag", lose_the_race)
    with pytest.raises(MlflowException, match="experiment_tag_pk"):  # nobody set it: the error stands
        _tag_experiment_kind(client, experiment)
    mlflow.MlflowClient().set_experiment_tag(experiment, *EXPERIMENT_KIND)  # the other pipeline won
    _tag_experiment_kind(client, experiment)
    assert client.get_experiment(experiment).tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
