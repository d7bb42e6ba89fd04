"""Preprocess: full-pass analyzers on the train split, applied to every split, on Apache Beam.

The Beam pipeline reads Parquet as Arrow record batches, combines per-batch
partial statistics (count/mean/M2 for numeric features, value counts for
categorical ones and the label) into one accumulator, and transforms each
batch with those statistics as a side input, as TensorFlow Transform's
analyzers do. Outputs `transformed/{split}/*.parquet` and
`transform/transform.json`, from which the trainer rebuilds the same
preprocessing as Keras layers inside the exported model.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.parquetio import ReadFromParquetBatched, WriteToParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions

from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="preprocess",
    inputs=("ingest",),
    config_sections=("preprocess",),
    code=("components/preprocess.py", "components/base.py"),
    description="Beam full-pass statistics on train (mean/variance, vocabularies), applied to all splits.",
)
SPLITS = ("train", "eval", "test")


class AnalyzeFn(beam.CombineFn):
    """Merges per-batch statistics; numeric moments use Chan et al.'s parallel update."""

    def __init__(self, numeric: list[str], categorical: list[str], label: str):
        self.numeric, self.categorical, self.label = numeric, categorical, label

    def create_accumulator(self):
        n = len(self.numeric)
        return {
            "count": np.zeros(n), "mean": np.zeros(n), "m2": np.zeros(n),
            "counts": {name: Counter() for name in [*self.categorical, self.label]},
        }

    def add_input(self, acc, batch: pa.Table):
        if self.numeric:
            values = np.column_stack(
                [batch.column(name).to_numpy(zero_copy_only=False).astype("float64") for name in self.numeric]
            )
            valid = ~np.isnan(values)
            count = valid.sum(0)
            safe = np.where(valid, values, 0.0)
            mean = np.divide(safe.sum(0), count, out=np.zeros(len(self.numeric)), where=count > 0)
            m2 = (np.where(valid, values - mean, 0.0) ** 2).sum(0)
            acc = self._merge_moments(acc, count, mean, m2)
        for name in acc["counts"]:
            counts = pc.value_counts(batch.column(name).drop_null())
            acc["counts"][name].update(
                dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
            )
        return acc

    @staticmethod
    def _merge_moments(acc, count, mean, m2):
        total = acc["count"] + count
        delta = mean - acc["mean"]
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(total > 0, count / np.maximum(total, 1), 0.0)
        acc["mean"] = acc["mean"] + delta * weight
        acc["m2"] = acc["m2"] + m2 + delta**2 * acc["count"] * weight
        acc["count"] = total
        return acc

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            merged = self._merge_moments(merged, acc["count"], acc["mean"], acc["m2"])
            for name, counts in acc["counts"].items():
                merged["counts"][name].update(counts)
        return merged

    def extract_output(self, acc):
        return acc


def _vocabulary(counts: Counter, max_size: int | None, min_frequency: int) -> list[str]:
    """Most frequent first, ties broken by value, as TFT's `vocabulary` orders them."""
    ranked = sorted((v for v in counts.items() if v[1] >= min_frequency), key=lambda kv: (-kv[1], kv[0]))
    return [value for value, _ in ranked[:max_size]]


def finalize_statistics(acc, schema: dict[str, Any], config) -> dict[str, Any]:
    """The transform spec: what Beam computed, in the form the Keras layers take."""
    numeric = [f["name"] for f in schema["features"] if f["kind"] == "numeric"]
    categorical = [f["name"] for f in schema["features"] if f["kind"] == "categorical"]
    label = schema["label"]["name"]
    if numeric and acc["count"].min() == 0:
        empty = [n for n, c in zip(numeric, acc["count"]) if c == 0]
        raise ValueError(f"Numeric feature(s) {empty} have no values in the train split.")
    variance = np.divide(acc["m2"], acc["count"], out=np.zeros_like(acc["m2"]), where=acc["count"] > 0)
    return {
        "numeric": {
            name: {"mean": float(m), "variance": float(v)}
            for name, m, v in zip(numeric, acc["mean"], variance)
        },
        "categorical": {
            name: {"vocabulary": _vocabulary(acc["counts"][name], config.vocabulary_max_size,
                                             config.vocabulary_min_frequency)}
            for name in categorical
        },
        "label": {"name": label, "classes": sorted(acc["counts"][label])},
        "num_train_rows": int(sum(acc["counts"][label].values())),
    }


def output_schema(spec_numeric: list[str], spec_categorical: list[str], label: str) -> pa.Schema:
    return pa.schema(
        [pa.field(n, pa.float32()) for n in spec_numeric]
        + [pa.field(n, pa.int64()) for n in spec_categorical]
        + [pa.field(label, pa.int64())]
    )


def transform_batch(batch: pa.Table, transform: dict[str, Any], split: str) -> pa.Table:
    """z-scores numeric features (missing → mean), indexes categoricals (0 = out of vocabulary)."""
    columns = []
    for name, stats in transform["numeric"].items():
        values = batch.column(name).to_numpy(zero_copy_only=False).astype("float32")
        scale = np.sqrt(stats["variance"]) or 1.0
        columns.append(np.nan_to_num((values - stats["mean"]) / scale, nan=0.0).astype("float32"))
    for name, stats in transform["categorical"].items():
        index = pc.index_in(batch.column(name), value_set=pa.array(stats["vocabulary"], pa.string()))
        columns.append(pc.fill_null(pc.add(index, 1), 0).cast(pa.int64()))
    label = transform["label"]
    index = pc.index_in(batch.column(label["name"]), value_set=pa.array(label["classes"], pa.string()))
    if index.null_count:
        unseen = sorted(set(pc.filter(batch.column(label["name"]), pc.is_null(index)).to_pylist()))
        raise ValueError(
            f"Split {split!r} has label value(s) {unseen} never seen in the train split "
            f"(known classes: {label['classes']})."
        )
    columns.append(index.cast(pa.int64()))
    names = [*transform["numeric"], *transform["categorical"], label["name"]]
    return pa.Table.from_arrays(columns, names=names)


def pipeline_options(config) -> PipelineOptions:
    flags = list(config.beam_args)
    return PipelineOptions(
        flags,
        runner=config.runner,
        direct_num_workers=config.direct_num_workers,
        direct_running_mode=config.direct_running_mode,
    )


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import mlflow

    examples = inputs["ingest"]
    schema = json.loads((examples / "schema.json").read_text())
    numeric = [f["name"] for f in schema["features"] if f["kind"] == "numeric"]
    categorical = [f["name"] for f in schema["features"] if f["kind"] == "categorical"]
    label = schema["label"]["name"]
    (output / "transform").mkdir()
    transform_path = output / "transform" / "transform.json"
    out_schema = output_schema(numeric, categorical, label)
    settings = config.preprocess

    def write_transform(acc):
        transform = finalize_statistics(acc, schema, settings)
        transform_path.write_text(json.dumps(transform, indent=2))
        return transform

    with beam.Pipeline(options=pipeline_options(settings)) as p:
        statistics = (
            p
            | "ReadTrainForAnalysis" >> ReadFromParquetBatched(str(examples / "train" / "*.parquet"))
            | "Analyze" >> beam.CombineGlobally(AnalyzeFn(numeric, categorical, label))
            | "Finalize" >> beam.Map(write_transform)
        )
        for split in SPLITS:
            (
                p
                | f"Read[{split}]" >> ReadFromParquetBatched(str(examples / split / "*.parquet"))
                | f"Transform[{split}]" >> beam.Map(
                    transform_batch, transform=beam.pvalue.AsSingleton(statistics), split=split
                )
                | f"Write[{split}]" >> WriteToParquetBatched(
                    str(output / "transformed" / split / "part"),
                    schema=out_schema,
                    file_name_suffix=".parquet",
                )
            )
    transform = json.loads(transform_path.read_text())
    mlflow.log_params({"runner": settings.runner, "direct_num_workers": settings.direct_num_workers})
    mlflow.log_artifact(str(transform_path))
    mlflow.log_metric("num_train_rows", transform["num_train_rows"])
    return {"num_train_rows": transform["num_train_rows"]}
