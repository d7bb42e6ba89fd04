import re
import subprocess
import sys

import pytest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=300)


# A value for each flat parameter, unlike iris_mlp's own, and the config field it must land in.
OPTION_VALUES = {
    "model": ("tabnet", "model.name"),
    "epochs": ("3", "train.epochs"),
    "batch_size": ("8", "train.batch_size"),
    "learning_rate": ("0.005", "train.learning_rate"),
    "tuner": ("bayesian", "tune.tuner"),
    "max_trials": ("7", "tune.max_trials"),
    "seed": ("11", "seed"),
    "runner": ("DaskRunner", "preprocess.runner"),
    "output_dir": ("elsewhere", "output_dir"),
    "workers": ("2", "tune.workers"),
}


def _field(config, dotted: str):
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


def test_each_option_sets_its_config_field_and_an_empty_one_keeps_the_recipe_s():
    from pipeline.cli import _config, build_parser
    from pipeline.config import PARAMETERS, load_config

    assert set(OPTION_VALUES) == {*PARAMETERS, "workers"}
    recipe = load_config("iris_mlp")
    args = [arg for name, (value, _) in OPTION_VALUES.items() for arg in (f"--{name.replace('_', '-')}", value)]
    config = _config(build_parser().parse_args(["train", *args]))
    for name, (value, target) in OPTION_VALUES.items():
        assert str(_field(config, target)) == value != str(_field(recipe, target)), name
    unset = [arg for name in OPTION_VALUES for arg in (f"--{name.replace('_', '-')}", "")]  # as MLproject passes them
    assert _config(build_parser().parse_args(["train", *unset])) == recipe


def test_help_lists_the_recipes_and_models_there_are():
    from keras_models import index
    from pipeline.config import list_recipes

    result = _cli("--help")
    assert result.returncode == 0
    listed = " ".join(result.stdout.split())
    assert re.search(r"recipes: (.*?) models:", listed)[1].split(", ") == list_recipes()
    assert re.search(r"models: (.*?) Unset options", listed)[1].split(", ") == [e.name for e in index.list_models()]


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
