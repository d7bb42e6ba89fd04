"""What each task type can be told: the `task` section of a recipe.

Serving rebuilds a task from the options recorded in `transform.json`, so
they live here, with the tasks, and the served model needs no pipeline code.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TabularClassificationOptions(Options):
    """Rows of numeric and categorical features, one class label.

    `pretrain_epochs` > 0 pretrains TabNet's encoder on the train features
    before fitting, as in Arik & Pfister 2021: a `mask_rate` share of each
    row's features is hidden afresh every epoch and a decoder reconstructs
    them from the rest, at `pretrain_learning_rate` (default:
    `train.learning_rate`). `ignore` names columns that are no features
    (identifiers, free text): read with the rows, never given to the model.
    """

    type: Literal["tabular_classification"] = "tabular_classification"
    categorical: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    pretrain_epochs: int = Field(0, ge=0)
    mask_rate: float = Field(0.5, gt=0, lt=1)
    pretrain_learning_rate: float | None = Field(None, gt=0, lt=10)


class TabularRegressionOptions(Options):
    """Rows of numeric and categorical features, one numeric target.

    The target is standardised on the train split for training and the
    served model returns it in its original units. `loss` is the mean
    squared error (`mse`) or the Huber loss (`huber`, on the standardised
    target, so its threshold is one train standard deviation), which
    outlying targets pull on less. `ignore` names columns that are no
    features, as for classification.
    """

    type: Literal["tabular_regression"]
    categorical: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    loss: Literal["mse", "huber"] = "mse"


class ImageClassificationOptions(Options):
    """Images (height × width × channels), one class label; resized to `image_size` when set.

    Images come either as one column of arrays (`image_column`, as TFDS gives
    them) or as flat pixel columns, one per value in row-major, channels-last
    order (`sklearn:digits`), which `pixel_shape` (height, width, channels)
    reshapes. `top_k` sets the k of the top-k accuracy that evaluate reports.
    `random_translation` (a fraction of height and width), `random_rotation`
    (a fraction of a full turn) and `random_zoom` (a fraction of the size)
    bound the random augmentation of training images; 0 turns each off.
    """

    type: Literal["image_classification"]
    image_column: str = "image"
    pixel_shape: (
        tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None
    ) = None
    image_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = None
    top_k: int = Field(5, ge=1)
    random_translation: float = Field(0.0, ge=0, lt=1)
    random_rotation: float = Field(0.0, ge=0, le=0.5)
    random_zoom: float = Field(0.0, ge=0, lt=1)


class ForecastingOptions(Options):
    """One series over time (`data.label` is its value column), or many (`series_column`), split by time.

    The last `test_periods` of each series are the test split and the
    `eval_periods` before them the eval split; the model reads `window` steps
    and forecasts `horizon`. Evaluation is a rolling-origin backtest over the
    test split: `backtest_origins` origins (every one the test window allows
    when unset, at least 3). `seasonality` is the season length of the
    seasonal-naive baseline and of MASE.

    `scaling: series` scales by the train split's moments and, with
    `seasonal_difference`, learns on `y[t] - y[t - seasonality]`.
    `scaling: window` scales each window by its own level (last value) and
    scale (mean absolute seasonal difference), and the network learns the
    correction to seasonal naive (`seasonal_difference`) or naive in that
    space; it is what a global model over many series needs. With window
    scaling, `history` (default: `window`) is how many raw steps the served
    model reads, and `combine` names statistical forecasts (`auto_ets`,
    `auto_theta`) fitted on that history and averaged with the network's.
    """

    type: Literal["forecasting"]
    time_column: str
    series_column: str | None = None
    window: int = Field(24, ge=1)
    horizon: int = Field(12, ge=1)
    test_periods: int = Field(14, ge=1)
    eval_periods: int = Field(12, ge=1)
    seasonality: int = Field(12, ge=1)
    seasonal_difference: bool = False
    scaling: Literal["series", "window"] = "series"
    loss: Literal["mse", "mae"] = "mse"
    backtest_origins: int | None = Field(None, ge=3)
    history: int | None = Field(None, ge=2)
    combine: list[Literal["auto_ets", "auto_theta"]] = []

    @model_validator(mode="after")
    def _splits_hold_forecasts(self):
        if self.eval_periods < self.horizon:
            raise ValueError(
                f"eval_periods={self.eval_periods} is shorter than horizon={self.horizon}: "
                "the eval split must hold at least one whole forecast"
            )
        origins = self.test_periods - self.horizon + 1
        if origins < 3 or (self.backtest_origins or 0) > origins:
            raise ValueError(
                f"test_periods={self.test_periods} with horizon={self.horizon} holds {origins} forecast origin(s); "
                f"the backtest needs {max(3, self.backtest_origins or 0)}: set test_periods to at least "
                f"{self.horizon + max(3, self.backtest_origins or 0) - 1}"
            )
        if self.scaling == "window" and self.window <= self.seasonality:
            raise ValueError(f"window={self.window} must be longer than seasonality={self.seasonality} "
                             "with scaling: window (the scale is a mean seasonal difference within the window)")
        if self.history is not None and (self.scaling != "window" or self.history < self.window):
            raise ValueError(f"history={self.history} needs scaling: window and at least window={self.window} "
                             "steps (the network reads the last window of it)")
        if self.series_column is not None and self.scaling != "window":
            raise ValueError("series_column needs scaling: window, so that one model reads every series in its "
                             "own units")
        return self


class SeriesClassificationOptions(Options):
    """Whole series (one array of shape `(length,)` or `(length, channels)` per row), one class label.

    Each series is z-normalised on its own (`znormalize`), then padded with
    zeros or truncated to `max_length` steps (the longest train series when
    unset), on the left (`padding: pre`, so the last step is the series' own
    last value, as causal models read it) or on the right (`post`).
    `mask_channel` appends a 0/1 channel per channel that marks observed steps.
    """

    type: Literal["series_classification"]
    series_column: str = "series"
    znormalize: bool = True
    max_length: int | None = Field(None, ge=1)
    padding: Literal["pre", "post"] = "pre"
    mask_channel: bool = False


class TextClassificationOptions(Options):
    """Free text, one class label; tokens are lower-cased words and punctuation marks.

    Texts become their first `max_length` token ids; the vocabulary is the
    `vocabulary_size` most frequent train tokens (ids 0 and 1 are padding and
    unknown tokens besides). `pretrain_epochs` > 0 pretrains a text encoder
    (bert, fnet) with the masked-LM objective on the train texts before fitting:
    a `mask_rate` share of tokens is masked afresh every epoch, and the head
    predicts the `pretrain_vocabulary` most frequent tokens (a smaller softmax;
    rarer masked tokens are corrupted but not scored), at `pretrain_learning_rate`
    (default: `train.learning_rate`).
    """

    type: Literal["text_classification"]
    text_column: str = "text"
    max_length: int = Field(64, ge=1)
    vocabulary_size: int = Field(20000, ge=1)
    pretrain_epochs: int = Field(0, ge=0)
    mask_rate: float = Field(0.15, gt=0, lt=1)
    pretrain_vocabulary: int | None = Field(None, ge=1)
    pretrain_learning_rate: float | None = Field(None, gt=0, lt=10)


class Seq2SeqOptions(Options):
    """Pairs of source and target text; `character` tokens suit scripts such as Hangul.

    `target_column` is the label (`data.label`, when set, must name the same
    column). Sentences are cut to `max_source_length` / `max_target_length`
    tokens; `vocabulary_size` counts the four special ids. `beam_width` 1
    decodes greedily; `length_penalty` is the beam search's GNMT exponent.
    """

    type: Literal["seq2seq"]
    source_column: str = "source"
    target_column: str = "target"
    source_tokens: Literal["word", "character"] = "word"
    target_tokens: Literal["word", "character"] = "character"
    max_source_length: int = Field(20, ge=1)
    max_target_length: int = Field(40, ge=1)
    vocabulary_size: int = Field(8000, ge=5)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    beam_width: int = Field(1, ge=1)
    length_penalty: float = Field(0.6, ge=0)


TaskOptions = Annotated[
    Union[TabularClassificationOptions, TabularRegressionOptions, ImageClassificationOptions, ForecastingOptions,
          SeriesClassificationOptions, TextClassificationOptions, Seq2SeqOptions],
    Field(discriminator="type"),
]
