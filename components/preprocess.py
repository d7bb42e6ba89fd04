"""Preprocess: full-pass analyzers on the train split, applied to every split, on Apache Beam.

The Beam pipeline reads Parquet as Arrow record batches, combines the task's
per-batch partial statistics into one accumulator, and transforms each
batch with the finished statistics as a side input, as TensorFlow
Transform's analyzers do. Outputs `transformed/{split}/*.parquet` and
`transform/transform.json`, from which the trainer rebuilds the same
preprocessing as Keras layers inside the exported model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.parquetio import ReadFromParquetBatched, WriteToParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions

from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="preprocess",
    inputs=("ingest",),
    config_sections=("preprocess", "task"),
    code=("components/preprocess.py", "components/base.py", "tasks"),
    description="Beam full-pass statistics on train (moments, vocabularies), applied to all splits.",
)
SPLITS = ("train", "eval", "test")


class Analyze(beam.CombineFn):
    """Runs a task's analyzer (an object with the `CombineFn` methods) as a Beam combiner."""

    def __init__(self, analyzer):
        self.analyzer = analyzer

    def create_accumulator(self):
        return self.analyzer.create_accumulator()

    def add_input(self, accumulator, batch):
        return self.analyzer.add_input(accumulator, batch)

    def merge_accumulators(self, accumulators):
        return self.analyzer.merge_accumulators(accumulators)

    def extract_output(self, accumulator):
        return self.analyzer.extract_output(accumulator)


def pipeline_options(config) -> PipelineOptions:
    return PipelineOptions(
        list(config.beam_args),
        runner=config.runner,
        direct_num_workers=config.direct_num_workers,
        direct_running_mode=config.direct_running_mode,
    )


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import mlflow

    from tasks import get_task

    task = get_task(config.task)
    examples = inputs["ingest"]
    schema = json.loads((examples / "schema.json").read_text())
    (output / "transform").mkdir()
    transform_path = output / "transform" / "transform.json"
    settings = config.preprocess

    def write_transform(accumulator):
        transform = task.finalize(accumulator, schema, settings)
        transform["task"] = config.task.model_dump(mode="json")
        transform_path.write_text(json.dumps(transform, indent=2))
        return transform

    with beam.Pipeline(options=pipeline_options(settings)) as p:
        transform = (
            p
            | "ReadTrainForAnalysis" >> ReadFromParquetBatched(str(examples / "train" / "*.parquet"))
            | "Analyze" >> beam.CombineGlobally(Analyze(task.analyzer(schema, settings)))
            | "Finalize" >> beam.Map(write_transform)
        )
        for split in SPLITS:
            (
                p
                | f"Read[{split}]" >> ReadFromParquetBatched(str(examples / split / "*.parquet"))
                | f"Transform[{split}]" >> beam.Map(
                    task.transform_batch, transform=beam.pvalue.AsSingleton(transform), split=split
                )
                | f"Write[{split}]" >> WriteToParquetBatched(
                    str(output / "transformed" / split / "part"),
                    schema=task.output_schema(schema),
                    file_name_suffix=".parquet",
                )
            )
    transform = json.loads(transform_path.read_text())
    mlflow.log_params({"runner": settings.runner, "direct_num_workers": settings.direct_num_workers})
    mlflow.log_artifact(str(transform_path))
    mlflow.log_metric("num_train_rows", transform["num_train_rows"])
    return {"num_train_rows": transform["num_train_rows"]}
