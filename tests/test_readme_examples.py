"""The README's worked examples (a model, a task type, a component) run as written.

A block whose first line names a file is that file: a new one is written
under a temporary directory that joins its package's path, so the checkout
stays as it is; one that exists gets the block's code added to its module.
Every other block runs as a script after them, in a fresh process.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("Adding a model", "Adding a task type", "Adding a component")
# Runs the blocks given on stdin, in order, in this process.
DRIVER = """
import importlib, json, sys
from pathlib import Path

root, files = Path(sys.argv[1]), Path(sys.argv[2])
script = {"__name__": "__main__"}
for path, code in json.load(sys.stdin):
    if path is None:
        exec(compile(code, "README.md", "exec"), script)
    elif (root / path).exists():  # code added to an existing module
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        exec(compile(code, path, "exec"), vars(module))
    else:  # a new module of an existing package
        (files / path).parent.mkdir(parents=True, exist_ok=True)
        (files / path).write_text(code)
        package = importlib.import_module(str(Path(path).parent).replace("/", "."))
        package.__path__.append(str((files / path).parent))
"""


def readme_blocks(section: str) -> list[tuple[str | None, str]]:
    """The section's Python blocks, each with the file its first line names (`# tasks/top_two.py`), if any."""
    text = (ROOT / "README.md").read_text()
    body = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.S | re.M)[1]
    blocks = []
    for code in re.findall(r"^```python\n(.*?)^```", body, re.S | re.M):
        named = re.match(r"# ([\w/]+\.py)\n", code)
        blocks.append((named[1] if named else None, code))
    return blocks


@pytest.mark.parametrize("section", SECTIONS)
def test_readme_example_runs(section, tmp_path):
    blocks = readme_blocks(section)
    assert blocks and any(path is None for path, _ in blocks), f"{section}: no example to run"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        env.pop(name, None)
    (tmp_path / "files").mkdir()
    result = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT), str(tmp_path / "files")],
                            input=json.dumps(blocks), cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
