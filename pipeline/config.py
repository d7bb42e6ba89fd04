"""Typed pipeline configuration: a recipe YAML, then parameter overrides.

Every section is a strict pydantic model, so an unknown key or a bad value
fails at load time with a message that names it and lists what is valid.
"""

from __future__ import annotations

import codecs
import copy
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.options import TabularClassificationOptions, TaskOptions

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = PROJECT_ROOT / "pipeline" / "recipes"
ROOTS_ENV = "PIPELINE_DATA_ROOTS"
SOURCE_SCHEMES = ("sklearn:", "tfds:")


class ConfigError(ValueError):
    """A recipe or parameter the pipeline cannot run with."""


def allowed_roots() -> list[Path]:
    """The checkout, then the directories listed in `$PIPELINE_DATA_ROOTS` (separated like `$PATH`)."""
    extra = os.environ.get(ROOTS_ENV, "").split(os.pathsep)
    return [PROJECT_ROOT, *(Path(p).resolve() for p in extra if p)]


def inside_roots(path: str | Path, what: str, extra_roots: tuple[Path, ...] = ()) -> Path:
    """`path` (relative to the checkout), resolved through links; an error when it leaves the allowed roots.

    `extra_roots` widen them for one recipe: a recipe outside the checkout may read the files beside it.
    """
    resolved = (PROJECT_ROOT / path).resolve()
    roots = [*allowed_roots(), *extra_roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise ConfigError(
            f"{what} {str(path)!r} resolves to {resolved}, outside the allowed roots "
            f"({', '.join(map(str, roots))}); add its directory to ${ROOTS_ENV} to allow it."
        )
    return resolved


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(Section):
    """Fractions of the rows for each split; stratified on the label."""

    train: float = Field(0.7, gt=0, lt=1)
    eval: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.eval + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class CsvOptions(Section):
    """How a CSV source is read; each option left unset is sniffed from the file (`data/csv_format.py`).

    `delimiter` separates the fields (one character, or `tab`; sniffed among
    `,` `;` tab `|`). `encoding` is a Python codec name such as `cp1252`
    (sniffed: UTF-8, UTF-8 with a byte-order mark, else detected); other
    encodings are transcoded while reading. `header` says whether the first
    row names the columns (sniffed from whether its values fit the columns
    below it). `column_names` names the columns in file order: those of a
    headerless file (else `column_1` … `column_N`), or replacing the header.
    `column_types` forces a column (by its name in the file) to `string`,
    `integer`, `float`, `boolean` or `date`, e.g. zip codes to `string`.
    `na_values` lists the strings read as missing (unset: pyarrow's `""`,
    `NA`, `N/A`, `NaN`, `null` and the like; `?` is not among them).
    `quote_char` quotes fields that hold the delimiter, quotes or newlines.
    `decimal` is the decimal mark of the numbers, `.` or `,` (sniffed: `,`
    when the delimiter is not a comma and the numbers are written `3,14`).
    `thousands` groups their digits: `.`, `,`, `'`, a space, or `""` for none
    (sniffed from numbers only it explains, such as `1.234,5` or `1,234,567`).
    """

    delimiter: str | None = Field(None, min_length=1, max_length=1)
    encoding: str | None = None
    header: bool | None = None
    column_names: tuple[str, ...] | None = None
    column_types: dict[str, Literal["string", "integer", "float", "boolean", "date"]] | None = None
    na_values: tuple[str, ...] | None = None
    quote_char: str | None = Field(None, min_length=1, max_length=1)
    decimal: Literal[".", ","] | None = None
    thousands: Literal["", ".", ",", "'", " "] | None = None

    @field_validator("delimiter", mode="before")
    @classmethod
    def _named_delimiter(cls, value: Any) -> Any:
        return {"tab": "\t", "\\t": "\t"}.get(value, value) if isinstance(value, str) else value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding {value!r}; use a codec name such as utf-8 or cp1252") from None
        return value


class DataConfig(Section):
    """Where the examples come from.

    `source` is `sklearn:<name>` (a bundled scikit-learn dataset),
    `tfds:<name>[:<version>]` (a TensorFlow Datasets catalog name, or a
    builder in `data/tfds_builders/` over a shipped file), or a path to a
    data file: relative to the checkout, or to the recipe's own directory
    for a recipe outside the checkout (`recipe_base`). `test_source`, when set, is the
    dataset's own test set; `source` is then split into train and eval only.

    Rows that cannot be examples (a CSV line of the wrong width, a number
    that does not parse, an infinite value, a missing label) fail the ingest
    under `bad_rows_policy: fail`; under `quarantine` they are set aside in
    the artifact's `rejected_rows.csv` with the reason, unless they are more
    than `max_bad_rows_fraction` of the rows read.

    `csv` says how a CSV source (and test source) is read; what it leaves
    unset is sniffed from the file (see `CsvOptions`).
    """

    source: str
    test_source: str | None = None
    label: str | None = None
    split: SplitConfig = SplitConfig()
    tfds_data_dir: str | None = None
    bad_rows_policy: Literal["fail", "quarantine"] = "fail"
    max_bad_rows_fraction: float = Field(0.01, ge=0, le=1)
    csv: CsvOptions = CsvOptions()


class PreprocessConfig(Section):
    """Full-pass analyzers and the Beam runner that executes them."""

    vocabulary_max_size: int | None = Field(None, gt=0)
    vocabulary_min_frequency: int = Field(1, ge=1)
    runner: str = "DirectRunner"
    direct_num_workers: int = Field(1, ge=0)
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"
    beam_args: tuple[str, ...] = ()

    # How Beam runs, not what it computes: left out of the cache key.
    EXECUTION_ONLY: ClassVar[tuple[str, ...]] = ("runner", "direct_num_workers", "direct_running_mode", "beam_args")


class ModelConfig(Section):
    name: str = "mlp"
    hparams: dict[str, Any] = {}


class TrainConfig(Section):
    """How the model is fit.

    `strategy` spreads training over devices (`components/distribution.py`):
    `default` (one device), `mirrored` (TensorFlow's MirroredStrategy over the
    local GPUs or CPUs), `data_parallel` (Keras's DataParallel on JAX, across
    hosts too), `multi_worker` (TensorFlow's MultiWorkerMirroredStrategy, one
    worker only under Keras 3), or `auto` (data parallel when there is more
    than one accelerator). `batch_size` is per replica: the global batch is
    `batch_size` × replicas and the learning rate is scaled by the replica
    count (the linear scaling rule).

    The learning rate rises linearly from 0 over the first `warmup_epochs`
    (fractions allowed), as when fine-tuning a pretrained encoder, and then
    stays put (`decay: constant`) or follows a cosine to 0 by the last epoch
    (`decay: cosine`).

    `input` feeds `fit` from the whole split as arrays (`memory`) or from
    Parquet a row group at a time (`stream`, `components/input_pipeline.py`),
    whose memory stays bounded as the data grows; `auto` streams a train
    split whose arrays would take more than `stream_above_mib` on one replica.
    """

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-2, gt=0, lt=10)
    warmup_epochs: float = Field(0, ge=0)
    decay: Literal["constant", "cosine"] = "constant"
    early_stopping_patience: int = Field(10, ge=1)
    strategy: Literal["auto", "default", "mirrored", "multi_worker", "data_parallel"] = "auto"
    input: Literal["auto", "memory", "stream"] = "auto"
    stream_above_mib: float = Field(1024, ge=0)

    @model_validator(mode="after")
    def _warmup_ends_before_the_last_epoch(self):
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs:g} must be below epochs={self.epochs}")
        return self


class TuneConfig(Section):
    """The Keras Tuner search; `workers` > 0 runs it as a chief (the oracle) and that many worker processes."""

    tuner: Literal["none", "random", "bayesian", "hyperband"] = "random"
    max_trials: int = Field(5, ge=1)
    epochs: int = Field(30, ge=1)
    objective: str = "val_loss"
    workers: int = Field(0, ge=0)


class EvaluateConfig(Section):
    """The blessing: every threshold met and the baseline beaten.

    A threshold is a floor for scores (accuracy, chrF) and a ceiling for
    errors (rmse, mae, mape): the task says which of its metrics are errors.
    """

    thresholds: dict[str, float] = {}
    must_beat_baseline: bool = True
    registered_model_name: str | None = None
    alias: str = "champion"


class PipelineConfig(Section):
    name: str
    seed: int = 42
    output_dir: str = "artifacts"
    data: DataConfig
    task: TaskOptions = TabularClassificationOptions()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_task_type(cls, data: Any) -> Any:
        """A `task` section without `type` (say, only `--set task.pretrain_epochs=50`) is the default task's."""
        if isinstance(data, dict) and isinstance(data.get("task"), dict) and "type" not in data["task"]:
            data = {**data, "task": {"type": TabularClassificationOptions().type, **data["task"]}}
        return data

    @property
    def registered_model_name(self) -> str:
        return self.evaluate.registered_model_name or self.name.replace("_", "-")


# Flat parameters (CLI options, MLproject -P) and the config field each sets.
PARAMETERS: dict[str, str] = {
    "model": "model.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "learning_rate": "train.learning_rate",
    "tuner": "tune.tuner",
    "max_trials": "tune.max_trials",
    "seed": "seed",
    "runner": "preprocess.runner",
    "output_dir": "output_dir",
}


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(recipe: str) -> Path:
    """A recipe name from `pipeline/recipes/`, or a path to a YAML file, wherever it is (the user named it)."""
    if recipe.endswith((".yaml", ".yml")):
        path = Path(recipe).expanduser().absolute()
        if not path.is_file():
            raise ConfigError(f"Recipe file {recipe} does not exist; check the path, or write one with "
                              f"`keras-pipeline init DATA --label COLUMN -o {recipe}`.")
        return path
    path = RECIPES_DIR / f"{recipe}.yaml"
    if not re.fullmatch(r"[\w-]+", recipe) or not path.is_file():
        close = difflib.get_close_matches(recipe, list_recipes(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"Unknown recipe {recipe!r}.{hint} Available: {', '.join(list_recipes())}."
        )
    return path


def recipe_base(path: Path) -> Path:
    """Where the relative paths in the recipe at `path` start.

    The checkout for a recipe inside it (shipped recipes say `data/...`);
    the recipe's own directory for one elsewhere, so that a recipe and its
    data can sit side by side anywhere.
    """
    path = path.resolve()
    return PROJECT_ROOT if path.is_relative_to(PROJECT_ROOT) else path.parent


def _resolve_data_paths(tree: dict, base: Path, trusted: set[Path]) -> None:
    """Confines the recipe's data files to the allowed roots, and makes paths relative to `base` absolute.

    A file the user named on the command line (`trusted`) is read wherever it
    is; a path written in a recipe may reach the checkout, `$PIPELINE_DATA_ROOTS`,
    and, for a recipe outside the checkout, the recipe's own directory.
    """
    data = tree.get("data")
    if not isinstance(data, dict):
        return
    extra = () if base == PROJECT_ROOT else (base,)
    for key in ("source", "test_source"):
        value = data.get(key)
        if not isinstance(value, str) or value.startswith(SOURCE_SCHEMES):
            continue
        full = Path(os.path.normpath(base / value))
        if full.resolve() not in trusted:
            inside_roots(value if base == PROJECT_ROOT else full, f"data.{key}", extra)
        if base != PROJECT_ROOT:
            data[key] = str(full)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Cannot set {dotted!r}: {key!r} is not a section.")
    node[leaf] = value


def _section_at(model: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The section model at a validation error's location; a task union is resolved by its `type` tag."""
    node, parts = model, list(path)
    while parts:
        field = node.model_fields.get(str(parts.pop(0)))
        if field is None:
            return None
        members = get_args(field.annotation) if get_origin(field.annotation) is Union else (field.annotation,)
        if len(members) > 1 and parts:
            tag = str(parts.pop(0))
            members = tuple(m for m in members if get_args(m.model_fields["type"].annotation) == (tag,))
        node = members[0] if members and isinstance(members[0], type) else None
        if node is None or not issubclass(node, BaseModel):
            return None
    return node


def _describe(error: dict, model: type[BaseModel]) -> str:
    """One line for one validation error, listing the valid keys for an unknown one."""
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section = _section_at(model, error["loc"][:-1])
        valid = sorted(section.model_fields) if section is not None else []
        close = difflib.get_close_matches(str(error["loc"][-1]), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{location}: unknown key{hint}; valid keys: {', '.join(valid)}"
    return f"{location}: {error['msg']} (got {error.get('input')!r})"


def _read_recipe(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            tree = yaml.safe_load(f) or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"Recipe {path} is not valid YAML{where}: {e.problem}; fix the file there.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"Recipe {path} is not valid YAML ({e}); fix the file.") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"Recipe {path} must be a mapping at the top level (section: values).")
    return tree


def load_config(
    recipe: str | Mapping[str, Any] = "iris_mlp",
    overrides: dict[str, Any] | None = None,
    *,
    trusted: Iterable[str | Path] = (),
) -> PipelineConfig:
    """Loads a recipe and applies `overrides` (flat parameter names or dotted paths).

    `recipe` is a name, a YAML path, or a recipe already built in memory (with
    its `name`; `run --data` infers one). `trusted` are data files the user
    named on the command line, read wherever they are.
    """
    if isinstance(recipe, Mapping):
        tree, base, label = copy.deepcopy(dict(recipe)), PROJECT_ROOT, f"recipe {recipe.get('name')!r}"
    else:
        path = recipe_path(recipe)
        tree, base, label = _read_recipe(path), recipe_base(path), f"recipe {path.name}"
        tree.setdefault("name", path.stem)
    model = tree.get("model") or {}
    if overrides and overrides.get("model") not in (None, model.get("name", "mlp")):
        # The recipe's hyperparameters belong to its own model, not to the one asked for.
        tree["model"] = {"name": overrides["model"]}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(tree, PARAMETERS.get(key, key), value)
    _resolve_data_paths(tree, base, {Path(p).expanduser().resolve() for p in trusted})
    try:
        config = PipelineConfig.model_validate(tree)
    except ValidationError as e:
        lines = [_describe(err, PipelineConfig) for err in e.errors()]
        if len(lines) == 1:
            raise ConfigError(f"Invalid configuration from {label}: {lines[0]}") from None
        raise ConfigError(f"Invalid configuration from {label}:\n  " + "\n  ".join(lines)) from None
    _check_model(config)
    return config


def _check_model(config: PipelineConfig) -> None:
    """The model exists, takes these hyperparameters, and has a head for the task."""
    from keras_models import index
    from tasks import task_class

    try:
        entry = index.model_info(config.model.name)
        index.check_hparams(entry.name, entry.defaults, config.model.hparams)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
    head = task_class(config.task.type).head
    if head not in entry.tasks:
        fitting = [e.name for e in index.list_models() if head in e.tasks]
        raise ConfigError(
            f"model: {config.model.name!r} has no {head} head for task {config.task.type!r}; "
            f"models that do: {', '.join(fitting)}."
        )
    families = MODEL_FAMILIES.get(config.task.type)
    if families and entry.family not in families:
        fitting = [e.name for e in index.list_models() if e.family in families and head in e.tasks]
        raise ConfigError(
            f"model: {config.model.name!r} ({entry.family}) cannot read the inputs of task {config.task.type!r}; "
            f"use one of {', '.join(fitting)}, e.g. --model {fitting[0]}."
        )


# The model families whose builders read each task type's inputs (a row of features, an image, a window
# of a series, token ids, a sentence pair), so a mismatch fails at load time rather than in train.
MODEL_FAMILIES: dict[str, tuple[str, ...]] = {
    "tabular_classification": ("dense", "tabular"),
    "tabular_regression": ("dense", "tabular"),
    "image_classification": ("convolutional", "attention_vision", "dense"),
    "forecasting": ("sequence", "dense"),
    "series_classification": ("sequence", "dense"),
    "text_classification": ("text", "sequence", "dense"),
    "seq2seq": ("seq2seq",),
}
