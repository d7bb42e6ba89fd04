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
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.parquetio import WriteToParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from components.artifact_io import split_files
from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="preprocess",
    inputs=("ingest",),
    config_sections=("preprocess", "task"),
    code=("components/preprocess.py", "components/artifact_io.py", "components/base.py", "tasks"),
    description="Beam full-pass statistics on train (moments, vocabularies), applied to all splits.",
)
SPLITS = ("train", "eval", "test")


class ArrowTableCoder(beam.coders.Coder):
    """Arrow tables as Arrow IPC streams, with their size estimated from `nbytes`.

    Beam samples the size of elements on every edge of a pipeline by
    encoding them; with the default pickle coder that is a copy of each
    record batch per edge, which cost more than the transform itself.
    """

    def encode(self, table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> pa.Table:
        return pa.ipc.open_stream(encoded).read_all()

    def estimate_size(self, table: pa.Table) -> int:
        return table.nbytes

    def to_type_hint(self):
        return pa.Table


beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)


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


def row_groups(split_dir: Path) -> list[tuple[str, int]]:
    """Every row group of a split's Parquet files, in file order, as (path, index)."""
    return [(str(path), index) for path in split_files(split_dir)
            for index in range(pq.ParquetFile(path).num_row_groups)]


@beam.ptransform_fn
def ReadRowGroups(pbegin, split_dir: Path):  # noqa: N802, a PTransform
    """A split's row groups as Arrow tables, one element each, spread over the runner's workers.

    Beam's Parquet read is one splittable DoFn behind a single impulse, and the
    FnApiRunner does not reshuffle its splits: one worker would read,
    transform and write a whole split however many there are. Here each row
    group is keyed by its position and grouped, and the runner deals the
    groups to its workers in turn; with one worker the rows keep their order.
    """
    return (
        pbegin
        | "RowGroups" >> beam.Create(list(enumerate(row_groups(split_dir))), reshuffle=False)
        | "Spread" >> beam.GroupByKey()
        | "Read" >> beam.FlatMap(lambda keyed: (pq.ParquetFile(path).read_row_group(index) for path, index in keyed[1]))
        .with_output_types(pa.Table)
    )


def pipeline_options(config) -> PipelineOptions:
    return PipelineOptions(
        list(config.beam_args),
        runner=config.runner,
        direct_num_workers=config.direct_num_workers,
        direct_running_mode=config.direct_running_mode,
    )


def pipeline_runner(options: PipelineOptions):
    """The runner: for `DirectRunner`, the FnApiRunner that runs its batch pipelines.

    The DirectRunner first tries Prism, which it downloads from GitHub at
    run time: offline the fetch fails and it falls back, online the job runs
    on a different engine. Naming the FnApiRunner (what the DirectRunner
    falls back to, with the same `direct_num_workers` and
    `direct_running_mode`) makes both the same. Other runners go by name.
    """
    name = options.view_as(StandardOptions).runner
    if name != "DirectRunner":
        return name
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(provision))


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

    options = pipeline_options(settings)
    with beam.Pipeline(runner=pipeline_runner(options), options=options) as p:
        transform = (
            p
            | "ReadTrainForAnalysis" >> ReadRowGroups(examples / "train")
            | "Analyze" >> beam.CombineGlobally(Analyze(task.analyzer(schema, settings)))
            | "Finalize" >> beam.Map(write_transform)
        )
        for split in SPLITS:
            (
                p
                | f"Read[{split}]" >> ReadRowGroups(examples / split)
                | f"Transform[{split}]" >> beam.Map(
                    task.transform_batch, transform=beam.pvalue.AsSingleton(transform), split=split
                ).with_output_types(pa.Table)
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
