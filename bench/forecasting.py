"""Forecasting benchmark: the recipe `keras-pipeline init` writes, on real series it was not tuned on.

For each series of `data/` (monthly, quarterly and weekly; sources in each
folder's README) it infers the default recipe from the file, as `init` does
(settings from the series' frequency and length only), runs ingest, Beam
preprocess, train and evaluate through the pipeline's components in a
throwaway MLflow store, and reads the rolling-origin backtest from the
evaluate artifact. It prints MASE per series for the pipeline's model,
seasonal naive, naive, drift, AutoETS and AutoTheta (all from the same
origins), whether the model is blessed (beats the strongest of seasonal
naive, naive and drift), and the mean and median of each column.

    .venv/bin/python -m bench.forecasting            # every series, two at a time
    .venv/bin/python -m bench.forecasting --series airline,wineind --jobs 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name → (file under data/, value column, time column)
SERIES = {
    "airline": ("airline_passengers/airline-passengers.csv", "Passengers", "Month"),
    "wineind": ("series_pmdarima/wineind.csv", "bottles", "date"),
    "uk_road_ksi": ("series_sktime/uk_road_ksi.csv", "killed_or_seriously_injured", "date"),
    "elec_equip": ("series_statsmodels/elec_equip.csv", "orders_index", "date"),
    "elnino": ("series_statsmodels/elnino.csv", "sst_celsius", "date"),
    "co2_monthly": ("series_statsmodels/co2_monthly.csv", "co2_ppm", "date"),
    "ausbeer": ("series_pmdarima/ausbeer.csv", "megalitres", "date"),
    "austres": ("series_pmdarima/austres.csv", "residents", "date"),
    "woolyrnq": ("series_pmdarima/woolyrnq.csv", "tonnes", "date"),
    "us_realgdp": ("series_statsmodels/us_realgdp.csv", "realgdp", "date"),
    "us_unemp": ("series_statsmodels/us_unemp.csv", "unemp", "date"),
    "us_cpi": ("series_statsmodels/us_cpi.csv", "cpi", "date"),
    "co2_weekly": ("series_statsmodels/co2_weekly.csv", "co2_ppm", "date"),
}
COLUMNS = ("model", "seasonal_naive", "naive", "drift", "auto_ets", "auto_theta")
BLESSING = ("seasonal_naive", "naive", "drift")  # `tasks.forecasting.Forecasting.blessing_baselines`


def run_one(name: str, workdir: Path) -> dict:
    """The default recipe for one series through ingest, preprocess, train and evaluate; its backtest MASEs."""
    import importlib

    import mlflow

    from pipeline.config import load_config
    from pipeline.recipe_from_data import infer_recipe, recipe_yaml

    path, label, time_column = SERIES[name]
    inferred = infer_recipe(ROOT / "data" / path, label, time_column=time_column, name=name)
    recipe = workdir / f"{name}.yaml"
    recipe.write_text(recipe_yaml(inferred, recipe))
    config = load_config(str(recipe))
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("forecasting-bench")
    inputs: dict[str, Path] = {}
    started = time.perf_counter()
    for component in ("ingest", "preprocess", "train", "evaluate"):
        output = workdir / component
        output.mkdir()
        with mlflow.start_run(run_name=component):
            summary = importlib.import_module(f"components.{component}").run(inputs, output, config)
        if component == "train":
            (output / "manifest.json").write_text(json.dumps({"summary": summary}))
        inputs[component] = output
    metrics = json.loads((workdir / "evaluate" / "metrics.json").read_text())
    found = {"model": metrics["test"], "seasonal_naive": metrics["baseline"], **metrics["references"]}
    task = config.task
    return {"series": name, **{c: found[c]["mase"] for c in COLUMNS},
            "settings": f"m={task.seasonality} h={task.horizon} w={task.window} "
                        f"origins={task.test_periods - task.horizon + 1} history={task.history or task.window}",
            "rows": inferred.rows, "seconds": round(time.perf_counter() - started)}


def in_subprocess(name: str) -> dict:
    """Each series in its own process (its own Keras session and MLflow store)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-forecasting-{name}-") as workdir:
        result = subprocess.run([sys.executable, "-m", "bench.forecasting", "--one", name, "--workdir", workdir],
                                cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode or not lines:
            raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
        return json.loads(lines[-1])


def table(rows: list[dict]) -> str:
    import numpy as np

    def blessed(r):
        return r["model"] < min(r[c] for c in BLESSING)

    lines = ["| series | rows | settings | model | seasonal naive | naive | drift | AutoETS | AutoTheta "
             "| beats seasonal naive | blessed |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['series']} | {r['rows']} | {r['settings']} | "
                     + " | ".join(f"{r[c]:.3f}" for c in COLUMNS)
                     + f" | {'yes' if r['model'] < r['seasonal_naive'] else 'no'} | {'yes' if blessed(r) else 'no'} |")
    for label, reduce in (("mean", np.mean), ("median", np.median)):
        lines.append(f"| **{label}** | | | " + " | ".join(f"{reduce([r[c] for r in rows]):.3f}" for c in COLUMNS)
                     + " | | |")
    wins = sum(r["model"] < r["seasonal_naive"] for r in rows)
    ets_wins = sum(r["model"] < r["auto_ets"] for r in rows)
    blessings = sum(blessed(r) for r in rows)
    lines.append(f"\nThe model beats seasonal naive on {wins} of {len(rows)} series ({100 * wins / len(rows):.0f}%), "
                 f"the strongest of seasonal naive, naive and drift (its blessing) on {blessings}, and AutoETS on "
                 f"{ets_wins}; MASE over rolling origins of each series' test split.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default=",".join(SERIES), help="comma-separated names (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="series run at once, each in its own process")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, Path(args.workdir))))
        return 0
    names = [n.strip() for n in args.series.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SERIES))
    if unknown:
        parser.error(f"--series: unknown {unknown}; choose from {', '.join(SERIES)}")
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(in_subprocess, names))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
