"""Screenshots of the MLflow UI after a fresh pipeline run, for the README (`make screenshots`).

Runs a short Iris pipeline into a new tracking store in a temporary
directory, starts `mlflow ui` on it, and captures with headless Chromium
(Debian's `chromium` package, driven by `tools/screenshots.cjs` through
playwright-core, which `make screenshots` installs): the experiment's runs,
the parent run, the train run's charts, the evaluate run's confusion matrix
and the registered model version. The PNGs go to `docs/images/`.

    NODE_PATH=DIR/node_modules python tools/screenshots.py [--keep]   # --keep leaves the store and prints its path
    NODE_PATH=DIR/node_modules python tools/screenshots.py --store DIR  # captures a kept store again
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
RUN_ARGS = ["run", "--recipe", "iris_mlp", "--epochs", "60", "--max-trials", "3", "--set", "tune.epochs=15"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"error: {url} did not answer within {seconds:.0f} s")
            time.sleep(1)


# What a reviewer looks for first: the runs table with the parent run expanded to its components and the test
# accuracy and model settings as columns; the parent's description (test metrics against the baseline) unfolded;
# the train run's per-epoch curves; a plot of the evaluate run.
EXPERIMENT_COLUMNS = ["test_accuracy", "model", "epochs", "learning_rate"]
HIDDEN_COLUMNS = ["Source"]  # ticked by default: the pipeline's entry point, the same for every run
TRAIN_CHARTS = "^(val_)?(loss|accuracy)$"  # the search box takes a regular expression
# The expand icon before a parent run's name in the runs table.
EXPAND_PARENT = 'button[data-component-id$="runnamecellrenderer.tsx_46"]'


def pages(uri: str, base: str) -> dict[str, dict]:
    """The UI pages to capture, by file name (a URL and the steps that set the page up), from the newest run."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("iris_mlp")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    run_page = f"{base}/#/experiments/{experiment.experiment_id}/runs"
    found = {
        "experiment.png": {"url": f"{base}/#/experiments/{experiment.experiment_id}",
                           "steps": [{"clickSelector": EXPAND_PARENT},
                                     {"columns": EXPERIMENT_COLUMNS + HIDDEN_COLUMNS}]},
        "parent_run.png": {"url": f"{run_page}/{parent.info.run_id}",
                           "steps": [{"click": "Show more"}, {"fill": ["Search metrics", "test_"]}]},
        "train_charts.png": {"url": f"{run_page}/{children['train'].info.run_id}/model-metrics",
                             "steps": [{"fill": ["Search metric charts", TRAIN_CHARTS]}]},
        "evaluate_artifacts.png": {"url": f"{run_page}/{children['evaluate'].info.run_id}/artifacts",
                                   "steps": [{"click": "plots"}, {"click": "confusion_matrix.png"}]},
    }
    versions = client.search_model_versions("name = 'iris-mlp'")
    if versions:
        newest = max(versions, key=lambda v: int(v.version))
        found["registered_model.png"] = {"url": f"{base}/#/models/iris-mlp/versions/{newest.version}"}
    else:
        print("the model was not blessed, so not registered: no registered_model.png", file=sys.stderr)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary tracking store")
    parser.add_argument("--store", type=Path, help="capture a store kept by --keep instead of running the pipeline")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or shutil.which("node") is None:
        print("error: headless Chromium and Node.js are needed: apt-get install -y chromium nodejs (as root)",
              file=sys.stderr)
        return 2
    work = args.store.resolve() if args.store else Path(tempfile.mkdtemp(prefix="screenshots-"))
    uri = f"sqlite:///{work}/mlflow.db"
    if not args.store:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        env.pop("MLFLOW_EXPERIMENT_NAME", None)
        subprocess.run([sys.executable, "-m", "pipeline.cli", *RUN_ARGS, "--output-dir", str(work / "artifacts")],
                       cwd=work, env={**env, "PYTHONPATH": str(REPO)}, check=True)
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port)],
                              cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health")
        IMAGES.mkdir(parents=True, exist_ok=True)
        spec = work / "pages.json"
        spec.write_text(json.dumps({"pages": {str(IMAGES / name): page for name, page in pages(uri, base).items()}}))
        subprocess.run(["node", str(REPO / "tools" / "screenshots.cjs"), str(spec)], check=True,
                       env={**os.environ, "CHROMIUM": chromium})
    finally:
        server.terminate()
        server.wait(30)
        if args.keep or args.store:
            print(f"tracking store kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
