"""Wall time of the default pipeline next to a bare Keras script doing the same training.

    python -m bench.pipeline_overhead

Runs, each in a fresh process and a fresh output directory:
1. `keras-pipeline run` (ingest → preprocess → tune → train → evaluate), no cache;
2. the same, re-run on its finished artifacts (every component cached);
3. `bench/bare_keras_iris.py` with the trials and winner the pipeline found,
   each fit as many epochs as the pipeline's;
and prints one table. Start-up is the time from launching the process to
the start of the first component's MLflow run (as the store recorded it):
imports, MLflow set-up (creating the store on the first run) and reading
the recipe.
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


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str, float]:
    """Wall seconds, output and launch time (epoch seconds) of `command`."""
    launched, start = time.time(), time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, result.stdout + result.stderr, launched


def start_up(uri: str, launched: float) -> float:
    """Seconds from `launched` to the start of the first component run the store holds after it."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.component = 'ingest' and attributes.start_time >= {int(launched * 1000)}")
    return min(r.info.start_time for r in runs) / 1000 - launched


def epochs_run(uri: str, train_dir: Path) -> dict:
    """Epochs the cold run trained: each tuning trial's (its `epochs_run` tag) and the final fit's."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    trials = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                "tags.component = 'tune' and tags.trial_id != ''")
    history = json.loads(next(train_dir.glob("*/history.json")).read_text())
    return {"trials": {t.data.tags["trial_id"]: int(t.data.tags["epochs_run"]) for t in trials},
            "final": len(history["loss"])}


def component_seconds(output: str) -> dict[str, tuple[str, float]]:
    return {m[0]: (m[1], float(m[2])) for m in re.findall(r"^\s+(\w+)\s+(ran|cached)\s+([\d.]+)s", output, re.M)}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    pipeline = [sys.executable, "-m", "pipeline.cli", "run", "--output-dir", str(work / "artifacts")]
    cold, cold_log, cold_launch = timed(pipeline, env)
    warm, warm_log, warm_launch = timed(pipeline, env)
    tune_dir = next(p.parent for p in (work / "artifacts" / "tune").glob("*/trials.json"))
    epochs = epochs_run(env["MLFLOW_TRACKING_URI"], work / "artifacts" / "train")
    bare, bare_log, _ = timed([sys.executable, "-m", "bench.bare_keras_iris", "--trials", str(tune_dir / "trials.json"),
                               "--best", str(tune_dir / "best_hparams.json"), "--epochs-run", json.dumps(epochs)], env)
    bare_result = json.loads(next(line for line in reversed(bare_log.splitlines()) if line.startswith("{")))
    components = component_seconds(cold_log)
    outside = cold - sum(s for _, s in components.values())
    accuracy = re.search(r"accuracy=([\d.]+)", cold_log).group(1)

    print("| measure | seconds | note |\n| --- | ---: | --- |")
    total = sum(epochs["trials"].values()) + epochs["final"]
    print(f"| pipeline, cold (no cache) | {cold:.1f} | test accuracy {accuracy}, {total} epochs |")
    for name, (state, seconds) in components.items():
        print(f"| &nbsp;&nbsp;{name} | {seconds:.1f} | {state} |")
    print(f"| &nbsp;&nbsp;outside components | {outside:.1f} | of it start-up "
          f"{start_up(env['MLFLOW_TRACKING_URI'], cold_launch):.1f} s, creating the MLflow store included |")
    print(f"| pipeline, re-run (all cached) | {warm:.1f} | start-up "
          f"{start_up(env['MLFLOW_TRACKING_URI'], warm_launch):.1f} s; " + ", ".join(
        f"{n} {s:.2f}s" for n, (_, s) in component_seconds(warm_log).items()) + " |")
    print(f"| bare Keras script, same training | {bare:.1f} | test accuracy {bare_result['test_accuracy']:.4f}, "
          f"{bare_result['epochs']} epochs |")
    print(f"| overhead of the pipeline | {cold - bare:.1f} | {100 * (cold - bare) / cold:.0f}% of its wall time |")


if __name__ == "__main__":
    main()
