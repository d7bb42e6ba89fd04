"""Wall time of the default pipeline next to a bare Keras script doing the same training.

    python -m bench.pipeline_overhead

For each scenario (the default recipe without tuning, as in the overhead
goal; with its tuning; without tuning and a fixed, longer training) runs,
each in a fresh process and output directory:
1. `keras-pipeline run`, no cache;
2. the same, re-run on its finished artifacts (every component cached);
3. `bench/bare_keras_iris.py` with the trials and winner the pipeline found,
   each fit as many epochs as the pipeline's;
and prints one table, a column per scenario. All runs share one MLflow
store, created first and timed on its own: only a machine's first run pays
for it. Start-up is the time from launching the process to the start of
the first component's MLflow run (as the store recorded it): imports,
MLflow set-up and reading the recipe.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {
    "no tuning": ["--tuner", "none"],
    "3 tuning trials": [],
    "no tuning, 400 epochs": ["--tuner", "none", "--epochs", "400", "--set", "train.early_stopping_patience=400"],
}
STORE_TIMING = "import time, mlflow; t = time.perf_counter(); mlflow.MlflowClient().search_experiments(); " \
               "print(f'store_seconds={time.perf_counter() - t}')"


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str, float]:
    """Wall seconds, output and launch time (epoch seconds) of `command`."""
    launched, start = time.time(), time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, result.stdout + result.stderr, launched


def component_runs(uri: str, since: float, query: str):
    import mlflow

    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"{query} and attributes.start_time >= {int(since * 1000)}")


def start_up(uri: str, launched: float) -> float:
    """Seconds from `launched` to the start of the first component run the store holds after it."""
    return min(r.info.start_time for r in component_runs(uri, launched, "tags.component = 'ingest'")) / 1000 - launched


def epochs_run(uri: str, launched: float, train_dir: Path) -> dict:
    """Epochs the cold run trained: each tuning trial's (its `epochs_run` tag) and the final fit's."""
    trials = component_runs(uri, launched, "tags.component = 'tune' and tags.trial_id != ''")
    history = json.loads(next(train_dir.glob("*/history.json")).read_text())
    return {"trials": {t.data.tags["trial_id"]: int(t.data.tags["epochs_run"]) for t in trials},
            "final": len(history["loss"])}


def component_seconds(output: str) -> dict[str, tuple[str, float]]:
    return {m[0]: (m[1], float(m[2])) for m in re.findall(r"^\s+(\w+)\s+(ran|cached)\s+([\d.]+)s", output, re.M)}


def scenario(work: Path, args: list[str], env: dict[str, str]) -> dict[str, str]:
    """One scenario's cells, by row name."""
    uri = env["MLFLOW_TRACKING_URI"]
    pipeline = [sys.executable, "-m", "pipeline.cli", "run", "--output-dir", str(work / "artifacts"), *args]
    cold, cold_log, cold_launch = timed(pipeline, env)
    warm, warm_log, warm_launch = timed(pipeline, env)
    epochs = epochs_run(uri, cold_launch, work / "artifacts" / "train")
    tuned = [f"--{option}={path}" for option, file in (("trials", "trials.json"), ("best", "best_hparams.json"))
             for path in (work / "artifacts" / "tune").glob(f"*/{file}")]
    bare, bare_log, _ = timed([sys.executable, "-m", "bench.bare_keras_iris", *tuned,
                               "--epochs-run", json.dumps(epochs)], env)
    bare_result = json.loads(next(line for line in reversed(bare_log.splitlines()) if line.startswith("{")))
    components = component_seconds(cold_log)
    accuracy = re.search(r"accuracy=([\d.]+)", cold_log).group(1)
    total = sum(epochs["trials"].values()) + epochs["final"]
    cells = {"pipeline, cold (no cache)": f"**{cold:.1f}** ({total} epochs, test accuracy {accuracy})"}
    cells.update({f"&nbsp;&nbsp;{name}": f"{seconds:.1f}" for name, (_, seconds) in components.items()})
    cells["&nbsp;&nbsp;outside components"] = f"{cold - sum(s for _, s in components.values()):.1f}"
    cells["&nbsp;&nbsp;&nbsp;&nbsp;of it start-up"] = f"{start_up(uri, cold_launch):.1f}"
    cells["pipeline, re-run (all cached)"] = f"{warm:.1f}"
    cells["&nbsp;&nbsp;slowest cached component"] = f"{max(s for _, s in component_seconds(warm_log).values()):.2f}"
    cells["&nbsp;&nbsp;start-up"] = f"{start_up(uri, warm_launch):.1f}"
    cells["bare Keras script, same training"] = (f"**{bare:.1f}** ({bare_result['epochs']} epochs, "
                                                 f"test accuracy {bare_result['test_accuracy']:.4f})")
    cells["overhead of the pipeline"] = f"**{cold - bare:.1f} ({100 * (cold - bare) / cold:.0f}%)**"
    return cells


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    store = [float(re.search(r"store_seconds=([\d.]+)", timed([sys.executable, "-c", STORE_TIMING], env)[1])[1])
             for _ in ("new", "existing")]
    columns = {name: scenario(work / f"scenario-{i}", args, env) for i, (name, args) in enumerate(SCENARIOS.items())}
    rows = list(dict.fromkeys(row for cells in sorted(columns.values(), key=len, reverse=True) for row in cells))
    print(f"MLflow store: {store[0]:.2f} s to create and migrate a new one, "
          f"{store[1]:.2f} s to open it once it exists (both after importing MLflow).\n")
    print("| seconds | " + " | ".join(columns) + " |\n| --- |" + " ---: |" * len(columns))
    for row in rows:
        print(f"| {row} | " + " | ".join(cells.get(row, "") for cells in columns.values()) + " |")


if __name__ == "__main__":
    main()
