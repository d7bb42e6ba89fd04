"""Writes MLproject from the CLI's options: one entry point per command, each passing every option.

    python -m tools.mlproject        (or `make mlproject`)

MLflow reads MLproject itself; `tests/test_mlproject.py` keeps it equal to what this writes.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import COMPONENT_HELP, MLPROJECT_OPTIONS

PATH = Path(__file__).resolve().parents[1] / "MLproject"
HEADER = """\
# MLflow Project: `mlflow run .` runs the whole pipeline; `-e NAME` one component.
# Parameters are strings so that an empty value keeps the recipe's setting (no recipe and no
# data: iris_mlp); the CLI parses and validates them (MLflow does not check float/int values).
# Your own file: mlflow run . -P data=/absolute/path/file.csv -P label=COLUMN
# Written by `make mlproject` from pipeline/cli.py's MLPROJECT_OPTIONS: edit those, not this file.
name: keras-pipeline
python_env: python_env.yaml
entry_points:
"""


def render() -> str:
    entry_points = {"main": "run", **{name: name for name in COMPONENT_HELP}}
    lines = [HEADER.rstrip("\n")]
    for entry_point, command in entry_points.items():
        lines += [f"  {entry_point}:", "    parameters:"]
        for name in MLPROJECT_OPTIONS:
            lines.append(f'      {name}: {{type: string, default: ""}}')
        flags = " ".join(f"--{name.replace('_', '-')}={{{name}}}" for name in MLPROJECT_OPTIONS)
        lines.append(f'    command: "python -m pipeline.cli {command} {flags}"')
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
    print(f"wrote {PATH}")
