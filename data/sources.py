"""Readers that turn a configured source into one pandas DataFrame of raw examples.

Sources: `sklearn:<name>` (datasets bundled with scikit-learn),
`tfds:<name>[:<version>][/<split>]` (the TensorFlow Datasets catalog, or a
local builder registered by importing `data.tfds_builders`; all splits
unless one is named), and paths to data files, read by their suffix (see
`READERS`). Column names are normalised to snake_case identifiers so they
can name model inputs and MLflow signature columns.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SKLEARN_DATASETS = ("iris", "wine", "breast_cancer", "digits")
DATA_ROOT = Path(__file__).resolve().parent


class SourceError(ValueError):
    """A source that cannot be read, with the file, row or column at fault."""


@dataclass(frozen=True)
class RawData:
    frame: pd.DataFrame
    label: str
    origin: str
    renamed: dict[str, str]
    path: str | None = None


def column_name(name: str) -> str:
    """`"sepal length (cm)"` → `"sepal_length_cm"`."""
    clean = re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower()
    return clean if clean and not clean[0].isdigit() else f"f_{clean}"


def _normalise_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    renamed = {str(c): column_name(c) for c in frame.columns}
    seen: dict[str, str] = {}
    for original, new in renamed.items():
        if new in seen:
            raise SourceError(
                f"Columns {seen[new]!r} and {original!r} both normalise to {new!r}; rename one."
            )
        seen[new] = original
    return frame.rename(columns=renamed), renamed


def _read_sklearn(name: str) -> tuple[pd.DataFrame, str]:
    if name not in SKLEARN_DATASETS:
        raise SourceError(
            f"Unknown scikit-learn dataset {name!r}; available: {', '.join(SKLEARN_DATASETS)}."
        )
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    target_names = np.asarray(bunch.target_names)
    label = {"iris": "species", "wine": "cultivar", "breast_cancer": "diagnosis"}.get(name, "label")
    frame = frame.drop(columns=["target"])
    frame[label] = target_names[bunch.target.to_numpy()] if target_names.size else bunch.target
    return frame, label


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, on_bad_lines="error", skipinitialspace=True)
    except pd.errors.ParserError as e:
        raise SourceError(f"{path}: malformed CSV: {e}") from None
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 at byte {e.start}; re-encode the file as UTF-8.") from None


def _read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


# File suffix → reader (`module:function` for readers that live beside their format's code).
READERS = {
    ".csv": _read_csv,
    ".csv.gz": _read_csv,
    ".parquet": _read_parquet,
    ".ts": "data.ucr:read_ts",
    ".tsv": "data.pairs:read_pairs",
    ".txt": "data.pairs:read_pairs",  # the Tatoeba/ManyThings exports: <lang>.txt
}


def _reader(path: Path):
    for suffix, reader in READERS.items():
        if path.name.endswith(suffix):
            if isinstance(reader, str):
                module, _, function = reader.partition(":")
                reader = getattr(importlib.import_module(module), function)
            return reader
    raise SourceError(
        f"Unknown source {str(path)!r}: use sklearn:<name>, tfds:<name>, or a file ending in "
        f"{', '.join(READERS)}."
    )


def _tfds_name_and_split(spec: str) -> tuple[str, str]:
    """`name[/config][:version][/split]` → (builder name, split); in `glue/sst2`, `sst2` is a config."""
    import tensorflow_datasets as tfds

    parts = spec.split("/")
    if len(parts) == 1:
        return spec, ""
    if len(parts) == 2:
        try:
            configs = tfds.builder_cls(parts[0].split(":")[0]).builder_configs
        except tfds.core.registered.DatasetNotFoundError:
            configs = {}
        if parts[1].split(":")[0] in configs:
            return spec, ""
    return "/".join(parts[:-1]), parts[-1]


def _read_tfds(spec: str, data_dir: str | None) -> tuple[pd.DataFrame, str]:
    import tensorflow_datasets as tfds

    from data import tfds_builders  # noqa: F401  (registers the builders for shipped data)

    name, split = _tfds_name_and_split(spec)
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()
    if split and split not in builder.info.splits:
        raise SourceError(f"tfds:{name} has no split {split!r}; it has {', '.join(builder.info.splits)}.")
    dataset = builder.as_dataset(split=split or "+".join(builder.info.splits))
    frame = tfds.as_dataframe(dataset, builder.info)
    label = (builder.info.supervised_keys or (None, "label"))[1]
    columns = {}
    for name in frame.columns:
        values = frame[name]
        if values.map(np.ndim).max() == 1:  # a feature vector: one column per component
            matrix = np.stack(values.to_numpy())
            for i in range(matrix.shape[1]):
                columns[f"{name}_{i}"] = matrix[:, i]
        else:
            columns[name] = values.to_numpy()
    frame = pd.DataFrame(columns)
    feature = builder.info.features[label]
    if isinstance(feature, tfds.features.ClassLabel):
        frame[label] = [feature.int2str(int(i)) for i in frame[label]]
    return frame, label


def read_source(source: str, label: str | None = None, tfds_data_dir: str | None = None) -> RawData:
    """Reads `source` into a DataFrame with normalised column names and its label column."""
    kind, _, rest = source.partition(":")
    path = None
    if kind == "sklearn":
        frame, default_label = _read_sklearn(rest)
    elif kind == "tfds":
        frame, default_label = _read_tfds(rest, tfds_data_dir)
    else:
        path = Path(source)
        if not path.is_absolute():
            path = DATA_ROOT.parent / path
        if not path.is_file():
            raise SourceError(f"Data file {source} does not exist.")
        frame = _reader(path)(path)
        default_label = "label"
    frame, renamed = _normalise_columns(frame)
    label = column_name(label or default_label)
    if label not in frame.columns:
        raise SourceError(
            f"{source}: label column {label!r} not found; columns are: {', '.join(frame.columns)}."
        )
    if frame.empty:
        raise SourceError(f"{source}: no rows.")
    return RawData(frame=frame, label=label, origin=source, renamed=renamed, path=str(path) if path else None)
