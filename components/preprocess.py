"""Preprocess: full-pass analyzers on the train split, applied to every split, on Apache Beam.

One pipeline, the same on every runner. The train split's row groups are
read where the runner places them and each is reduced to the task's partial
statistics; the partials merge into one accumulator, which is finished into
the transform spec and written to `transform/transform.json` by a DoFn, as
TensorFlow Transform's analyzers do. Every split's row groups are then joined
with that file by position, and each is transformed and written to its own
deterministic file `transformed/{split}/part-NNNNN-of-NNNNN.parquet` by a
DoFn: a retried task rewrites the same file, and the rows keep their order
when the parts are read by name. The driver reads back only what the
pipeline wrote; from it the trainer rebuilds the same preprocessing as Keras
layers inside the exported model.

Side inputs, sinks with temporary files and branches that end apart are
avoided on purpose: Beam's DaskRunner recomputes a side input's whole graph
in every task that reads it, finalises `WriteToParquet` with none of the
rows, and computes only the graph behind the pipeline's last transform.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from components.artifact_io import ROW_GROUP_BYTES, read_json
from data.splits import split_files
from components.base import ComponentSpec, RunnerUnreachableError

SPEC = ComponentSpec(
    name="preprocess",
    inputs=("ingest",),
    config_sections=("preprocess", "task"),
    code=("components/preprocess.py", "components/artifact_io.py", "data/splits.py", "components/base.py", "tasks"),
    description="Beam full-pass statistics on train (moments, vocabularies), applied to all splits.",
)
SPLITS = ("train", "eval", "test")
TRANSFORM_FILE = "transform/transform.json"


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


class MergePartials(beam.CombineFn):
    """Merges the task analyzer's per-row-group accumulators into one, and extracts its output.

    Each row group is reduced where it is read, so only accumulators travel:
    on runners without combiner lifting (the DaskRunner) a plain combiner
    would first gather every record batch of the train split in one task.
    """

    def __init__(self, analyzer):
        self.analyzer = analyzer

    def create_accumulator(self):
        return self.analyzer.create_accumulator()

    def add_input(self, accumulator, partial):
        return self.analyzer.merge(accumulator, partial)

    def merge_accumulators(self, accumulators):
        return self.analyzer.merge_accumulators(accumulators)

    def extract_output(self, accumulator):
        return self.analyzer.extract_output(accumulator)


def row_groups(split_dir: Path) -> list[tuple[str, int]]:
    """Every row group of a split's Parquet files, in file order, as (path, index)."""
    return [(str(path), index) for path in split_files(split_dir)
            for index in range(pq.ParquetFile(path).num_row_groups)]


def part_name(index: int, count: int) -> str:
    """The file of a split's `index`-th row group: names sort in row-group order."""
    width = max(5, len(str(count)))
    return f"part-{index:0{width}d}-of-{count:0{width}d}.parquet"


@beam.ptransform_fn
def Spread(pbegin, items: list):  # noqa: N802, a PTransform
    """`items` as `(position, [item])`, dealt to the runner's workers.

    Beam's Parquet read is one splittable DoFn behind a single impulse, and the
    FnApiRunner does not reshuffle its splits: one worker would read,
    transform and write a whole split however many there are. Keyed by
    position and grouped, the row groups are dealt to the workers in turn
    (with one worker, in order); on the DaskRunner each becomes its own task.
    """
    return (pbegin
            | "Create" >> beam.Create(list(enumerate(items)), reshuffle=False)
            | "Spread" >> beam.GroupByKey())


def partial_statistics(keyed, analyzer):
    """The analyzer's accumulator over each of the row groups in a group."""
    for path, index in keyed[1]:
        yield analyzer.add_input(analyzer.create_accumulator(), pq.ParquetFile(path).read_row_group(index))


class WriteJson(beam.DoFn):
    """Writes each element to `path` as JSON and passes the path on."""

    def __init__(self, path: str):
        self.path = path

    def process(self, value):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2)
        yield self.path


class TransformAndWrite(beam.DoFn):
    """Transforms each row group joined with the transform spec's file, and writes it to its part file.

    Yields `(split, file, rows)` for every file written.
    """

    def __init__(self, task, directory: str, schema: pa.Schema):
        self.task, self.directory, self.schema = task, directory, schema

    def setup(self):
        self.transforms: dict[str, dict[str, Any]] = {}

    def process(self, joined):
        _, inputs = joined
        for transform_path in inputs["transform"]:
            if transform_path not in self.transforms:
                self.transforms[transform_path] = read_json(Path(transform_path))
            transform = self.transforms[transform_path]
            for split, index, count, path, group in inputs["row_group"]:
                table = self.task.transform_batch(pq.ParquetFile(path).read_row_group(group), transform, split)
                yield split, self.write(table.cast(self.schema), split, index, count), table.num_rows

    def write(self, table: pa.Table, split: str, index: int, count: int) -> str:
        """The table in row groups of about `ROW_GROUP_BYTES`, uncompressed, as the readers expect."""
        target = os.path.join(self.directory, split, part_name(index, count))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        rows = max(1, ROW_GROUP_BYTES * table.num_rows // max(table.nbytes, 1))
        pq.write_table(table, target, row_group_size=rows, compression="none")
        return target


def pipeline_options(config) -> PipelineOptions:
    """The Beam options; on the DaskRunner each row group is its own Dask partition unless `beam_args` say otherwise."""
    args = list(config.beam_args)
    if config.runner == "DaskRunner" and not any(a.startswith(("--dask_npartitions", "--dask_partition_size"))
                                                 for a in args):
        args.append("--dask_partition_size=1")
    return PipelineOptions(
        args,
        runner=config.runner,
        direct_num_workers=config.direct_num_workers,
        direct_running_mode=config.direct_running_mode,
    )


def runner_address(options: PipelineOptions) -> tuple[str, str, str, int] | None:
    """`(option, address, host, port)` of the service the runner must reach first, or None."""
    name = options.view_as(StandardOptions).runner
    if name == "DaskRunner":
        from apache_beam.runners.dask.dask_runner import DaskOptions
        from distributed.comm import parse_address, parse_host_port

        address = options.view_as(DaskOptions).address
        if not address:
            return None  # Beam starts a LocalCluster in this process
        scheme, location = parse_address(address)
        if scheme not in ("tcp", "tls"):
            return None
        return ("--dask_client_address", address, *parse_host_port(location, 8786))
    endpoint = options.view_as(PortableOptions).job_endpoint
    if endpoint and endpoint != "embed":
        parsed = urllib.parse.urlsplit(f"//{endpoint}")
        if parsed.hostname and parsed.port:
            return "--job_endpoint", endpoint, parsed.hostname, parsed.port
    return None


def check_reachable(options: PipelineOptions, timeout: float = 5.0) -> None:
    """Fails at once, naming the address, when nobody listens where the runner would connect.

    Beam's own clients wait a minute or more on a refused connection before
    they fail, each with a long traceback.
    """
    target = runner_address(options)
    if target is None:
        return
    option, address, host, port = target
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        name = options.view_as(StandardOptions).runner
        raise RunnerUnreachableError(
            f"preprocess.runner {name}: nothing answers at {address} ({option} in preprocess.beam_args): "
            f"{e.strerror or e}. Start the {'Dask scheduler' if name == 'DaskRunner' else 'job server'} "
            "there, or fix the address."
        ) from None


def pipeline_runner(options: PipelineOptions):
    """The runner: the FnApiRunner for `DirectRunner`, Beam's DaskRunner for `DaskRunner`, else Beam's lookup.

    The DirectRunner first tries Prism, which it downloads from GitHub at
    run time: offline the fetch fails and it falls back, online the job runs
    on a different engine. Naming the FnApiRunner (what the DirectRunner
    falls back to, with the same `direct_num_workers` and
    `direct_running_mode`) makes both the same. Beam's lookup does not know
    the DaskRunner's short name.
    """
    name = options.view_as(StandardOptions).runner
    if name == "DaskRunner":
        from apache_beam.runners.dask.dask_runner import DaskRunner

        return DaskRunner()
    if name != "DirectRunner":
        return name
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(provision))


def build_pipeline(p: beam.Pipeline, task, schema: dict[str, Any], config, examples: Path, output: Path) -> None:
    """Analyze train, write the transform spec, then transform and write every split; see the module docstring."""
    settings = config.preprocess
    analyzer = task.analyzer(schema, settings)

    def finalize(accumulator):
        return {**task.finalize(accumulator, schema, settings), "task": config.task.model_dump(mode="json")}

    transform_file = (
        p
        | "TrainRowGroups" >> Spread(row_groups(examples / "train"))
        | "PartialStatistics" >> beam.FlatMap(partial_statistics, analyzer)
        | "Analyze" >> beam.CombineGlobally(MergePartials(analyzer)).without_defaults()
        | "Finalize" >> beam.Map(finalize)
        | "WriteTransform" >> beam.ParDo(WriteJson(str(output / TRANSFORM_FILE)))
    )
    positions = []
    for split in SPLITS:
        groups = row_groups(examples / split)
        positions += [(split, index, len(groups), path, group) for index, (path, group) in enumerate(groups)]
    row_group_inputs = p | "RowGroups" >> beam.Create(list(enumerate(positions)), reshuffle=False)
    transform_inputs = transform_file | "ToEveryRowGroup" >> beam.FlatMap(
        lambda path: ((position, path) for position in range(len(positions))))
    (
        {"row_group": row_group_inputs, "transform": transform_inputs}
        | "Join" >> beam.CoGroupByKey()
        | "TransformAndWrite" >> beam.ParDo(
            TransformAndWrite(task, str(output / "transformed"), task.output_schema(schema)))
    )


def run_beam(p: beam.Pipeline) -> None:
    """Runs the pipeline to its end; closes the Dask client the DaskRunner opened."""
    result = p.run()
    client = getattr(result, "client", None)
    try:
        if client is None:
            result.wait_until_finish()
        else:
            wait_for_dask(result.futures)
    finally:
        if client is not None:
            client.close()


def wait_for_dask(futures) -> None:
    """Waits for the DaskRunner's futures, then raises the first worker error.

    Not the runner's `wait_until_finish`: it gathers each result as its future
    completes, and a gather that fails inside distributed's event loop (seen
    under load, a Tornado stream assertion) leaves it waiting forever. The
    results are not needed: the outputs are the files the workers wrote.
    """
    from distributed import wait

    wait(futures)
    for future in futures:
        if future.status == "error":
            future.result()


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import mlflow

    from tasks import get_task

    task = get_task(config.task)
    examples = inputs["ingest"]
    schema = read_json(examples / "schema.json")
    settings = config.preprocess
    options = pipeline_options(settings)
    check_reachable(options)
    p = beam.Pipeline(runner=pipeline_runner(options), options=options)
    build_pipeline(p, task, schema, config, examples, output)
    run_beam(p)

    summary: dict[str, Any] = {
        "output_files": [TRANSFORM_FILE],
        "output_rows": {f"transformed/{split}": sum(pq.ParquetFile(f).metadata.num_rows
                                                    for f in split_files(examples / split))
                        for split in SPLITS},
    }
    mlflow.log_params({"runner": settings.runner, "direct_num_workers": settings.direct_num_workers})
    if (output / TRANSFORM_FILE).is_file():
        transform = read_json(output / TRANSFORM_FILE)
        mlflow.log_artifact(str(output / TRANSFORM_FILE))
        mlflow.log_metric("num_train_rows", transform["num_train_rows"])
        summary["num_train_rows"] = transform["num_train_rows"]
    return summary
