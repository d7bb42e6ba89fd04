"""MLproject's entry points pass exactly the CLI's options, each to the config field the CLI sets with it."""

import shlex
from pathlib import Path

import yaml

from pipeline.cli import COMPONENT_HELP, DEFAULT_RECIPE, MLPROJECT_OPTIONS, _config, build_parser
from tools.mlproject import render

MLPROJECT = Path(__file__).resolve().parents[1] / "MLproject"


def test_mlproject_is_what_tools_mlproject_writes():
    assert MLPROJECT.read_text() == render(), "MLproject is stale: run `make mlproject`"


def test_each_entry_point_passes_every_option_to_its_command():
    project = yaml.safe_load(MLPROJECT.read_text())
    assert set(project["entry_points"]) == {"main", *COMPONENT_HELP}
    for entry_point, spec in project["entry_points"].items():
        parameters = spec["parameters"]
        assert list(parameters) == list(MLPROJECT_OPTIONS), entry_point
        assert all(p == {"type": "string", "default": ""} for p in parameters.values()), entry_point
        # Each parameter's value, as `mlflow run -P` fills it in, reaches the CLI option of the same name:
        # a distinct number each, which every option's type parses.
        values = {name: str(i) for i, name in enumerate(MLPROJECT_OPTIONS, 1)}
        python, m, module, command, *args = shlex.split(spec["command"].format(**values))
        assert (python, m, module, command) == ("python", "-m", "pipeline.cli",
                                                "run" if entry_point == "main" else entry_point)
        parsed = vars(build_parser().parse_args([command, *args]))
        assert {name: float(parsed[name]) for name in MLPROJECT_OPTIONS} == \
               {name: float(value) for name, value in values.items()}, entry_point


def main_entry_point_config(**values: str):
    """The config `mlflow run . -P NAME=VALUE ...` gives the main entry point; the others are left empty."""
    spec = yaml.safe_load(MLPROJECT.read_text())["entry_points"]["main"]
    command = spec["command"].format(**{name: values.get(name, "") for name in spec["parameters"]})
    return _config(build_parser().parse_args(shlex.split(command)[3:]))


def test_without_parameters_the_main_entry_point_runs_the_default_recipe():
    assert main_entry_point_config().name == DEFAULT_RECIPE


def test_the_main_entry_point_runs_a_file_of_ones_own(tmp_path):
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame.to_csv(tmp_path / "cellar.csv", sep=";", index=False)
    config = main_entry_point_config(data=str(tmp_path / "cellar.csv"), label="target", epochs="3")
    assert (config.name, config.data.label, config.train.epochs) == ("cellar", "target", 3)
    assert config.data.csv.delimiter == ";"
