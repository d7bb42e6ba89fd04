import subprocess
import sys

import pytest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_components_recipes_models_and_parameters():
    result = _cli("--help")
    assert result.returncode == 0
    for word in ("ingest", "preprocess", "tune", "train", "evaluate", "init", "iris_mlp", "mlp"):
        assert word in result.stdout
    component = _cli("train", "--help").stdout
    for option in ("--recipe", "--data", "--label", "--time-column", "--model", "--epochs", "--batch-size",
                   "--learning-rate", "--tuner", "--max-trials", "--seed", "--runner", "--output-dir", "--no-cache"):
        assert option in component
    init = _cli("init", "--help").stdout
    for option in ("DATA", "--label", "--time-column", "--name", "--output", "--force"):
        assert option in init


def test_bad_parameter_values_are_named():
    result = _cli("run", "--epochs", "ten")
    assert result.returncode == 2 and "--epochs: 'ten' is not a valid int" in result.stderr
    result = _cli("run", "--tuner", "grid")
    assert result.returncode == 2 and "tune.tuner: Input should be 'none', 'random'" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "--label", "species"], "error: --label goes with --data FILE; to change a recipe's columns, use "
                                    "--set data.label=COLUMN or --set task.time_column=COLUMN."),
    (["run", "--recipe", "iris_mlp", "--data", "x.csv", "--label", "y"],
     "error: --data infers a recipe from the file; drop --recipe, or drop --data and set data.source in the recipe."),
    (["init", "data/ucr_timeseries/GunPoint_TRAIN.ts", "--label", "label"],
     "error: {root}/data/ucr_timeseries/GunPoint_TRAIN.ts: `init` infers recipes for tabular rows and dated series "
     "in CSV or Parquet files; this is whole series per row (series_classification): start from "
     "pipeline/recipes/italypower_cnn1d.yaml."),
])
def test_options_that_do_not_go_together_are_named(args, message, capsys, monkeypatch):
    from pipeline.cli import main
    from pipeline.config import PROJECT_ROOT

    monkeypatch.chdir(PROJECT_ROOT)
    assert main(args) == 2
    assert capsys.readouterr().err == message.format(root=PROJECT_ROOT) + "\n"


def test_exit_keeps_the_status_and_the_atexit_handlers_but_skips_the_final_collection():
    """What the CLI's processes do last: `atexit` handlers (MLflow's metric flush) still run, on frozen objects."""
    script = (
        "import atexit, gc, sys\n"
        "from pipeline.cli import exit_process\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, flush=True))\n"
        "exit_process(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and result.stdout.strip() == "frozen True"
