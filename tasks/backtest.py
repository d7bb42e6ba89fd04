"""Rolling-origin backtests: forecast origins, error metrics and the statistical baselines.

One forecast origin lets one unlucky year decide, so a forecaster is judged
from several origins over the test window, each forecasting `horizon` steps
from the values before it only. Every baseline is computed on the same
origins from the same past. Metrics follow the M4 competition: MASE is the
mean absolute error over the in-sample mean absolute seasonal-naive error of
the values before the origin (so a MASE under 1 beats, on average, what
copying last season did in the past), sMAPE is `200·|y - ŷ| / (|y| + |ŷ|)`.

Baselines: naive (last value), seasonal naive (last season), drift (the line
from the first to the last value, extended), and statsforecast's `AutoETS`
(exponential smoothing, model picked by AICc) and `AutoTheta` (the Theta
variant picked by in-sample MSE), fitted afresh at each origin.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

METRICS = ("mase", "smape", "rmse", "mae")
BASELINES = ("naive", "seasonal_naive", "drift", "auto_ets", "auto_theta")
MIN_ORIGINS = 3


def forecast_origins(start: int, end: int, horizon: int, count: int | None = None) -> list[int]:
    """Origins `o` in `[start, end - horizon]` (each forecasts `o .. o + horizon - 1`), `count` of them evenly
    spread from the first to the last, or all of them when `count` is None."""
    last = end - horizon
    if last < start:
        raise ValueError(f"A test window of {end - start} periods holds no forecast of horizon {horizon}.")
    every = list(range(start, last + 1))
    if count is None or count >= len(every):
        return every
    return sorted({int(round(x)) for x in np.linspace(start, last, count)})


def mase_scale(history: np.ndarray, season: int) -> float:
    """Mean absolute seasonal-naive error in-sample (lag 1 when the history is not longer than a season)."""
    history = np.asarray(history, "float64")
    lag = season if len(history) > season else 1
    if len(history) <= lag:
        raise ValueError(f"MASE needs more than {lag} values before the origin; there are {len(history)}.")
    scale = float(np.mean(np.abs(history[lag:] - history[:-lag])))
    return scale if scale > 0 else float(np.finfo("float64").eps)


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE in percent, 0 to 200; a step where both are 0 counts as no error."""
    actual, forecast = np.asarray(actual, "float64"), np.asarray(forecast, "float64")
    denominator = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(np.abs(actual - forecast), denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(200 * ratio.mean())


def errors(actual: np.ndarray, forecast: np.ndarray, scale: float) -> dict[str, float]:
    """MASE (with the origin's in-sample `scale`), sMAPE, and RMSE and MAE in the series' units."""
    error = np.asarray(actual, "float64") - np.asarray(forecast, "float64")
    mae = float(np.abs(error).mean())
    return {"mase": mae / scale, "smape": smape(actual, forecast), "rmse": float(np.sqrt((error**2).mean())),
            "mae": mae}


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    return np.full(horizon, float(history[-1]))


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The last season repeated; the last value when the history is shorter than a season."""
    if len(history) < season or season < 2:
        return naive(history, horizon)
    last = np.asarray(history[-season:], "float64")
    return last[np.arange(horizon) % season]


def drift(history: np.ndarray, horizon: int) -> np.ndarray:
    history = np.asarray(history, "float64")
    slope = (history[-1] - history[0]) / max(len(history) - 1, 1)
    return history[-1] + slope * np.arange(1, horizon + 1)


def statistical(history: np.ndarray, horizon: int, season: int) -> dict[str, np.ndarray]:
    """statsforecast's AutoETS and AutoTheta fitted on `history`.

    AutoETS fits seasonal models for seasons up to 24 only (statsforecast's
    limit), so a weekly series gets its non-seasonal models.
    """
    from statsforecast.models import AutoETS, AutoTheta

    y = np.asarray(history, "float64")
    season = max(int(season), 1)
    ets_season = season if 1 < season <= 24 and len(y) >= 2 * season + 2 else 1
    theta_season = season if len(y) >= 2 * season else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"auto_ets": np.asarray(AutoETS(season_length=ets_season).forecast(y=y, h=horizon)["mean"]),
                "auto_theta": np.asarray(AutoTheta(season_length=theta_season).forecast(y=y, h=horizon)["mean"])}


def baseline_forecasts(history: np.ndarray, horizon: int, season: int) -> dict[str, np.ndarray]:
    """Every baseline's forecast of the `horizon` steps after `history`."""
    return {"naive": naive(history, horizon), "seasonal_naive": seasonal_naive(history, horizon, season),
            "drift": drift(history, horizon), **statistical(history, horizon, season)}


@dataclass
class Backtest:
    """Forecasts of one series from each origin, by forecaster (`"model"` and the baselines).

    `values` is the whole series; `forecasts[name]` has one row of `horizon`
    steps per origin.
    """

    values: np.ndarray
    origins: list[int]
    horizon: int
    season: int
    forecasts: dict[str, np.ndarray] = field(default_factory=dict)

    def actual(self) -> np.ndarray:
        return np.stack([self.values[o : o + self.horizon] for o in self.origins])

    def scales(self) -> np.ndarray:
        return np.array([mase_scale(self.values[:o], self.season) for o in self.origins])

    def per_origin(self, name: str) -> list[dict[str, float]]:
        actual, scales = self.actual(), self.scales()
        return [errors(actual[i], self.forecasts[name][i], scales[i]) for i in range(len(self.origins))]

    def summary(self, name: str) -> dict[str, float]:
        """Each metric's mean over the origins."""
        rows = self.per_origin(name)
        return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}

    def by_step(self, name: str) -> dict[str, list[float]]:
        """MAE and MASE at each horizon step, averaged over the origins."""
        error = np.abs(self.actual() - self.forecasts[name])
        return {"mae": error.mean(axis=0).tolist(), "mase": (error / self.scales()[:, None]).mean(axis=0).tolist()}


def run_baselines(values: np.ndarray, origins: list[int], horizon: int, season: int) -> Backtest:
    """A `Backtest` holding every baseline's forecasts from each origin, fitted on the values before it."""
    values = np.asarray(values, "float64")
    result = Backtest(values, list(origins), horizon, season)
    per_origin = [baseline_forecasts(values[:o], horizon, season) for o in origins]
    result.forecasts = {name: np.stack([f[name] for f in per_origin]) for name in BASELINES}
    return result


def pooled(backtests: list[Backtest], name: str) -> dict[str, float]:
    """The mean over series of each series' mean over origins (RMSE and MAE mix the series' units)."""
    summaries = [b.summary(name) for b in backtests]
    return {m: float(np.mean([s[m] for s in summaries])) for m in METRICS}
