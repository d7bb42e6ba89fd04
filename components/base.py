"""What every component declares: its inputs, its output and its parameters.

A component module holds a `SPEC` and a `run(inputs, output, config)`
that reads input artifact directories and writes its output directory. It
never imports another component; the runner wires them by their specs.

`run` returns the component's summary, kept in the manifest. Two of its
keys declare what a finished artifact must hold, and the artifact store
checks them before it publishes the build (`pipeline.artifacts.check_outputs`):
`output_rows` maps a directory of the artifact to the rows its Parquet files
must hold together (the upstream split's, less any rows the component set
aside), and `output_files` lists files that must exist.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ComponentSpec:
    """A component's contract, TFX style.

    Args:
        name: the component's name, also its artifact folder and MLflow run name.
        inputs: names of the upstream components whose artifacts it reads.
        optional_inputs: inputs it uses when the pipeline produced them.
        config_sections: the `PipelineConfig` sections (or `section.field`s) that are its parameters.
        code: project paths whose source is part of its cache key.
        resumable: keep a failed run's staging directory for the next attempt.
    """

    name: str
    inputs: tuple[str, ...] = ()
    optional_inputs: tuple[str, ...] = ()
    config_sections: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    resumable: bool = False
    description: str = ""


class NonFiniteLossError(FloatingPointError):
    """Training diverged: the loss became NaN or infinite.

    Defined here, apart from the callback that raises it, so that the CLI can
    name it among the errors it explains without importing Keras.
    """


class RunnerUnreachableError(ConnectionError):
    """A distributed runner's scheduler or job server does not answer at the configured address.

    Defined here, apart from the Beam code that raises it, so that the CLI
    can name it among the errors it explains without importing Beam.
    """
