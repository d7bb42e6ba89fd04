"""Tabular regression: the tabular features, one numeric target, predictions in the target's units.

Features are prepared exactly as for tabular classification (`TabularTask`).
The Beam analyzer also takes the target's train mean and variance (the same
mergeable moments as the features'), the network learns the standardised
target, and the serving model ends in a `Destandardize` layer, so served
predictions are in the units of the data. The model is blessed when it beats
the train mean; a ridge regression on the same features is reported beside
it, as the reference a network on a small table should at least match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from data.sources import RawData, SourceError
from keras_models.specs import OutputSpec
from tasks.base import Evaluation
from tasks.tabular import (
    AnalyzeFn,
    TabularTask,
    build_serving_model,
    feature_matrix,
    raw_feature_matrix,
    transform_features,
)

MAX_STRATA = 10
RIDGE_ALPHAS = np.logspace(-3, 3, 25)


def numeric_target(frame: pd.DataFrame, label: str, origin: str) -> pd.DataFrame:
    """`frame` with its target as float64, or an error naming the values that are not finite numbers."""
    column = frame[label]
    if pd.api.types.is_bool_dtype(column):
        raise SourceError(
            f"{origin}: target {label!r} is boolean; task tabular_regression needs a numeric target "
            "(use task.type: tabular_classification for a class label)."
        )
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    bad = column[values.isna() | np.isinf(values)]
    if len(bad):
        shown = ", ".join(f"row {i}: {v!r}" for i, v in bad.head(5).items())
        raise SourceError(
            f"{origin}: target {label!r} has {len(bad)} value(s) that are not finite numbers ({shown}); "
            "task tabular_regression needs a numeric target: fix the values, or use "
            "task.type: tabular_classification for a class label."
        )
    return frame.assign(**{label: values})


def target_strata(values: pd.Series, smallest_side: int) -> pd.Series | None:
    """Quantile bins of the target to stratify a split on, so each split spans the target's range.

    None when the rows are too few for two bins on each side of the split.
    """
    bins = min(MAX_STRATA, smallest_side, len(values) // 2)
    if bins < 2:
        return None
    strata = pd.qcut(values.rank(method="first"), bins, labels=False)
    return strata if strata.value_counts().min() >= 2 else None


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² in the target's units; MAPE in percent where every true value is positive."""
    from sklearn.metrics import (
        mean_absolute_error,
        mean_absolute_percentage_error,
        r2_score,
        root_mean_squared_error,
    )

    metrics = {
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }
    if np.all(y_true > 0):
        metrics["mape"] = float(100 * mean_absolute_percentage_error(y_true, y_pred))
    return metrics


def save_regression_plots(y_true, y_pred, output: Path, title: str, unit: str) -> list[Path]:
    """Predicted against actual (with the identity line) and residuals against predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 6))
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="0.5", linestyle="--", linewidth=1, label="identity")
    ax.scatter(y_true, y_pred, s=14, alpha=0.7, color="tab:blue", label="test rows")
    ax.set(xlabel=f"actual {unit}", ylabel=f"predicted {unit}", title=title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper left")
    fig.tight_layout()
    paths.append(output / "predicted_vs_actual.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(0.0, color="0.5", linestyle="--", linewidth=1)
    ax.scatter(y_pred, y_true - y_pred, s=14, alpha=0.7, color="tab:blue")
    ax.set(xlabel=f"predicted {unit}", ylabel="residual (actual - predicted)", title=title)
    fig.tight_layout()
    paths.append(output / "residuals.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


class TabularRegression(TabularTask):
    name = "tabular_regression"
    head = "regression"
    primary_metric = "rmse"
    error_metrics = frozenset({"rmse", "mae", "mape"})
    baseline_name = "train mean"  # ridge is a fitted model: a reference reported beside it, not a baseline

    # ---- ingest ---------------------------------------------------------

    def read_splits(self, data, seed: int) -> tuple[RawData, dict[str, pd.DataFrame]]:
        raw, splits = super().read_splits(data, seed)
        return raw, {name: numeric_target(frame, raw.label, raw.origin) for name, frame in splits.items()}

    def split(self, raw: RawData, train: float, eval: float, test: float, seed: int) -> dict[str, pd.DataFrame]:
        """Random split, stratified on quantile bins of the target; the same seed always gives the same rows."""
        from sklearn.model_selection import train_test_split

        frame = numeric_target(raw.frame, raw.label, raw.origin)
        held = len(frame) - int(len(frame) * train)
        first, rest = train_test_split(frame, train_size=train, random_state=seed,
                                       stratify=target_strata(frame[raw.label], held))
        if not test:
            return {"train": first, "eval": rest}
        smallest = int(len(rest) * min(eval, test) / (eval + test))
        evaluation, held_out = train_test_split(rest, test_size=test / (eval + test), random_state=seed,
                                                stratify=target_strata(rest[raw.label], smallest))
        return {"train": first, "eval": evaluation, "test": held_out}

    def schema(self, train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
        return {"features": self.feature_schema(train, raw.label), "label": {"name": raw.label, "kind": "numeric"}}

    def to_arrow(self, frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        label = schema["label"]["name"]
        return self.features_to_arrow(frame, schema).append_column(
            pa.field(label, pa.float64()), pa.array(frame[label].to_numpy("float64"), pa.float64()))

    # ---- preprocess (Beam) ----------------------------------------------

    def analyzer(self, schema, settings):
        """The target's moments are taken with the numeric features' and come last in the accumulator."""
        numeric, categorical, label = self._kinds(schema)
        return AnalyzeFn([*numeric, label], categorical)

    def finalize(self, acc, schema, settings) -> dict[str, Any]:
        numeric, categorical, label = self._kinds(schema)
        transform = self.feature_transform(acc, numeric, categorical, settings)
        mean, variance, count = float(acc["mean"][-1]), float(acc["m2"][-1] / acc["count"][-1]), acc["count"][-1]
        if variance == 0:
            raise ValueError(f"Target {label!r} takes one value ({mean:g}) in the train split: nothing to learn.")
        return {
            **transform,
            "label": {"name": label, "kind": "numeric", "mean": mean, "variance": variance},
            "num_train_rows": int(count),
        }

    def transform_batch(self, batch, transform, split):
        """The features as for classification, and the target z-scored with the train moments."""
        columns, names = transform_features(batch, transform)
        label = transform["label"]
        target = batch.column(label["name"]).to_numpy(zero_copy_only=False).astype("float64")
        columns.append(((target - label["mean"]) / np.sqrt(label["variance"])).astype("float32"))
        return pa.Table.from_arrays(columns, names=[*names, label["name"]])

    def output_schema(self, schema) -> pa.Schema:
        return pa.schema([*self.feature_fields(schema), pa.field(schema["label"]["name"], pa.float32())])

    # ---- train ----------------------------------------------------------

    def specs(self, transform):
        return self.input_spec(transform), OutputSpec("regression", 1)

    def arrays(self, columns, transform):
        return feature_matrix(columns, transform), np.asarray(columns[transform["label"]["name"]], "float32")[:, None]

    def compile_args(self, transform):
        """MSE or Huber on the standardised target; `mae` is in train standard deviations."""
        import keras

        loss = keras.losses.Huber() if self.options.loss == "huber" else keras.losses.MeanSquaredError()
        return {"loss": loss, "metrics": ["mae"]}

    def serving_model(self, network, transform):
        from tasks.layers import Destandardize

        label = transform["label"]
        return build_serving_model(
            network, transform, Destandardize(label["mean"], label["variance"], name="destandardize"))

    def outputs_frame(self, outputs, transform, index=None) -> pd.DataFrame:
        return pd.DataFrame({"prediction": np.asarray(outputs, "float64").reshape(len(outputs), -1)[:, 0]},
                            index=index)

    # ---- evaluate -------------------------------------------------------

    def evaluate(self, predictor, test: pd.DataFrame, ingest_dir: Path, output: Path, config) -> Evaluation:
        """The served model against the train mean (the blessing's baseline) and a ridge regression (a reference)."""
        from sklearn.linear_model import RidgeCV

        transform = predictor.transform
        label = transform["label"]
        name = label["name"]
        y_true = test[name].to_numpy("float64")
        y_pred = predictor.outputs(test.drop(columns=[name])).reshape(-1).astype("float64")
        headline = regression_metrics(y_true, y_pred)
        baseline = regression_metrics(y_true, np.full_like(y_true, label["mean"]))

        train = pd.read_parquet(Path(ingest_dir) / "train")
        ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(raw_feature_matrix(train, transform), train[name].to_numpy("float64"))
        ridge_metrics = regression_metrics(y_true, ridge.predict(raw_feature_matrix(test, transform)))

        title = (f"{config.model.name} on {config.name} (test): RMSE {headline['rmse']:.4g}, R² {headline['r2']:.3f}; "
                 f"ridge {ridge_metrics['rmse']:.4g}")
        plots = save_regression_plots(y_true, y_pred, output, title, name)
        plots += self.feature_mask_plots(predictor, test, output, config)
        return Evaluation(
            headline=headline,
            baseline=baseline,
            references={"ridge": ridge_metrics},
            details={
                "baseline_name": "train mean",
                "target": {"name": name, "train_mean": label["mean"], "train_std": float(np.sqrt(label["variance"]))},
                "ridge_alpha": float(ridge.alpha_),
            },
            plots=plots,
        )


TASK = TabularRegression
