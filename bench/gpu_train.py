"""Training throughput of the model zoo on one GPU: the train component's data path, bare `fit`, PyTorch, MFU.

    KERAS_BACKEND=jax python -m bench.gpu_train                        # every image and sequence model
    KERAS_BACKEND=jax python -m bench.gpu_train --models resnet18 vit --steps 100
    KERAS_BACKEND=jax python -m bench.gpu_train --smoke                # tiny shapes, 2 steps: runs on a CPU

Each model trains on the JAX backend under `mixed_bfloat16`, built the way
the train component builds it (`task.build_model`: the registry model,
compiled with the task's loss, metrics and Adam), and is timed on the same
rows:

- **pipeline**: `fit` on `components.input_pipeline.ParquetBatches` over the
  transformed train split, with `shuffle=False`, as `components/train.py`
  streams it (`train.input: stream`), with the component's per-batch callback
  `StopOnNonFiniteLoss`. Its other callbacks (`EpochBackupAndRestore`,
  `EarlyStopping`, MLflow) and the validation pass act at epoch ends, outside
  the timed steps, and are left out.
- **streamed, no callback**: the same stream without `StopOnNonFiniteLoss`.
  That callback reads every step's loss; it is `async_safe`, so Keras reads
  it on a callback thread and keeps dispatching steps. This column checks
  that the read costs the training loop nothing.
- **bare**: `fit` on the split preloaded as arrays (`load_transformed`, the
  component's `train.input: memory` path) with no callback.
- **PyTorch** (ResNet-18 and ViT): `bench.torch_reference`, the same
  architecture in `torch.nn` under bf16 autocast, channels-last and
  `torch.compile`, fed from the same arrays; "torch not installed" where it is
  missing.

Data: the real preprocess artifacts need Beam, and the text task's tokeniser
TensorFlow, which a GPU host may lack, so the rows are synthetic, written in
the transformed layout the preprocess component writes (`transform.json`, and
Parquet shards of at most `ROW_GROUP_BYTES` with the task's output columns)
and read back by the component's own readers. Each shard holds a whole number
of batches, so every batch has the same shape (preprocess's row groups do not,
so a real split also streams a short batch at the end of each row group: one
more XLA compilation per distinct size, paid once per run). Image, series and seq2seq
models use their task classes (`tasks.image`, `tasks.series`,
`tasks.seq2seq`); `tasks.text` imports TensorFlow at module level, so token
classification uses `TokenClassification` below, its train-side methods
(`specs`, `arrays`) copied from `tasks.text.TextClassification`.

Timing: one epoch of `--warmup` + `--steps` + 1 batches. The warm-up steps
compile and are not timed. At the start of the first timed step and of the
step after the last, the clock waits on the fit loop's thread for the model
state the step before produced (`jax.block_until_ready`) and reads the host
time, so asynchronous dispatch cannot flatter the figures; between the two
marks Keras dispatches ahead of the device as it does without the clock.
"Keras / PyTorch" compares the bare column.

MFU (ViT, BERT, Transformer) counts model FLOPs: the matrix products only, 2
per multiply-add, times 3 for the forward and backward passes, with
attention's QKᵀ and AV counted in full: 6·(matmul weights)·tokens +
12·layers·tokens²·width per sample. Norms, softmax, activations and the
optimizer are not counted. XLA's HLO cost analysis of the lowered train step
(which counts every operation) is printed beside it as a check. The peak is
dense bf16 from the datasheet: 989 TFLOP/s for H100 SXM and H200, 756 for
H100 PCIe; `--peak-tflops` sets another. The pipeline column's throughput is
the one used.

On the GPU host (Python 3.12 with JAX CUDA, PyTorch, NumPy, pandas and
pyarrow; no TensorFlow and no network), carry Keras and the two dependencies
it lacks as wheels. Here, in the checkout:

    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \\
        keras==3.15.1 namex==0.1.0 optree==0.20.0

There, in a copy of the checkout with `.whl/`:

    pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    KERAS_BACKEND=jax python -m bench.gpu_train --json gpu_train.json

JAX is held to half the GPU's memory (`XLA_PYTHON_CLIENT_MEM_FRACTION`, unless
set) so that the PyTorch reference in the same process has room.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

LEARNING_RATE = 3e-4
SEED = 0
IMAGE_CLASSES = 10
SEQUENCE_CLASSES = 2
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0}


@dataclass(frozen=True)
class Shapes:
    """Input sizes every case is built for."""

    image: int = 32
    seq_len: int = 256
    pair_len: int = 128
    vocab: int = 20000


@dataclass(frozen=True)
class Case:
    """One benchmarked model: registry name, hyperparameters, data kind, batch size.

    `data` is `image`, `tokens` (token-id classification), `series` (real
    values, one channel) or `pairs` (seq2seq). `smoke` overrides the
    hyperparameters for `--smoke`; `torch` names the PyTorch twin; `flops`
    gives the analytic training FLOPs per sample.
    """

    label: str
    model: str
    data: str
    batch_size: int
    description: str
    hparams: dict[str, Any] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)
    torch: str | None = None
    flops: Callable[[dict[str, Any], Shapes], float] | None = None


def vit_flops(h: dict[str, Any], shapes: Shapes) -> float:
    """Training FLOPs per image of `vit`: patch embedding, blocks (projections, MLP, attention), head."""
    p, d, m, layers = h["patch_size"], h["hidden_dim"], h["mlp_dim"], h["num_layers"]
    patches = (shapes.image // p) ** 2
    t = patches + 1
    forward = 2 * patches * p * p * 3 * d + layers * (8 * t * d * d + 4 * t * d * m + 4 * t * t * d)
    return 3 * (forward + 2 * d * IMAGE_CLASSES)


def bert_flops(h: dict[str, Any], shapes: Shapes) -> float:
    """Training FLOPs per sequence of the `bert` classifier: blocks, tanh pooler, head."""
    t, d, f, layers = shapes.seq_len, h["d_model"], h["ff_dim"], h["num_layers"]
    forward = layers * (8 * t * d * d + 4 * t * d * f + 4 * t * t * d) + 2 * d * d + 2 * d * SEQUENCE_CLASSES
    return 3 * forward


def transformer_flops(h: dict[str, Any], shapes: Shapes) -> float:
    """Training FLOPs per pair of `transformer`: encoder, decoder (self and cross attention), tied output layer."""
    s = t = shapes.pair_len
    d, f, layers, v = h["d_model"], h["ff_dim"], h["num_layers"], shapes.vocab
    encoder = 8 * s * d * d + 4 * s * d * f + 4 * s * s * d
    decoder = 8 * t * d * d + 4 * t * t * d + 4 * t * d * d + 4 * s * d * d + 4 * t * s * d + 4 * t * d * f
    return 3 * (layers * (encoder + decoder) + 2 * t * d * v)


RECURRENT = {"units": 256, "embedding_dim": 128}
TINY_RECURRENT = {"units": 8, "embedding_dim": 8}
CASES = (
    Case("lenet", "lenet", "image", 512, "LeNet-5", smoke={}),
    Case("alexnet", "alexnet", "image", 512, "AlexNet, 3×3 stem",
         smoke={"width_multiplier": 0.125, "fc_units": 32}),
    Case("vgg16", "vgg", "image", 512, "VGG-16", {"depth": 16},
         smoke={"depth": 11, "width_multiplier": 0.125, "fc_units": 32}),
    Case("resnet18", "resnet", "image", 512, "ResNet-18, 3×3 stem", {"depth": 18},
         smoke={"depth": 18, "width_multiplier": 0.125}, torch="resnet18"),
    Case("inception", "inception", "image", 512, "GoogLeNet, 3×3 stem",
         smoke={"width_multiplier": 0.125, "local_response_norm": False}),
    Case("vit", "vit", "image", 256, "ViT-B/4 (768, 12 layers, 12 heads, MLP 3072)",
         {"patch_size": 4, "hidden_dim": 768, "num_layers": 12, "num_heads": 12, "mlp_dim": 3072},
         smoke={"patch_size": 4, "hidden_dim": 16, "num_layers": 2, "num_heads": 2, "mlp_dim": 32},
         torch="vit", flops=vit_flops),
    Case("cnn1d", "cnn1d", "tokens", 256, "FCN 128-256-128, embedding 128", {"embedding_dim": 128},
         smoke={"filters": 8, "embedding_dim": 8}),
    Case("tcn", "tcn", "series", 256, "TCN, 64 filters, 8 blocks", {"filters": 64, "num_blocks": 8},
         smoke={"filters": 8, "num_blocks": 2}),
    Case("rnn", "rnn", "tokens", 256, "SimpleRNN 256", RECURRENT, smoke=TINY_RECURRENT),
    Case("lstm", "lstm", "tokens", 256, "LSTM 256", RECURRENT, smoke=TINY_RECURRENT),
    Case("gru", "gru", "tokens", 256, "GRU 256", RECURRENT, smoke=TINY_RECURRENT),
    Case("sru", "sru", "series", 256, "SRU 256 × 2", {"units": 256, "num_layers": 2},
         smoke={"units": 8, "num_layers": 1}),
    Case("series_transformer", "series_transformer", "series", 256, "encoder 128 × 2, mean pooling",
         {"d_model": 128, "num_heads": 4, "ff_dim": 512, "num_layers": 2, "pooling": "mean"},
         smoke={"d_model": 8, "num_heads": 2, "ff_dim": 16, "num_layers": 1, "pooling": "mean"}),
    Case("seq2seq_bahdanau", "seq2seq_attention", "pairs", 128, "GRU 256, Bahdanau attention",
         {"attention": "bahdanau", "units": 256, "embed_dim": 128},
         smoke={"attention": "bahdanau", "units": 8, "embed_dim": 8}),
    Case("seq2seq_luong", "seq2seq_attention", "pairs", 128, "GRU 256, Luong general attention",
         {"attention": "luong_general", "units": 256, "embed_dim": 128},
         smoke={"attention": "luong_general", "units": 8, "embed_dim": 8}),
    Case("transformer", "transformer", "pairs", 128, "Transformer base (512, 6+6 layers, 8 heads, FF 2048)",
         {"d_model": 512, "num_heads": 8, "ff_dim": 2048, "num_layers": 6},
         smoke={"d_model": 16, "num_heads": 2, "ff_dim": 32, "num_layers": 1}, flops=transformer_flops),
    Case("bert", "bert", "tokens", 128, "BERT-base (768, 12 layers, 12 heads, FF 3072)",
         {"d_model": 768, "num_heads": 12, "ff_dim": 3072, "num_layers": 12},
         smoke={"d_model": 16, "num_heads": 2, "ff_dim": 32, "num_layers": 1}, flops=bert_flops),
    Case("fnet", "fnet", "tokens", 128, "FNet-base (768, 12 layers, FF 3072)",
         {"d_model": 768, "ff_dim": 3072, "num_layers": 12},
         smoke={"d_model": 16, "ff_dim": 32, "num_layers": 1}),
)
CASE_NAMES = tuple(case.label for case in CASES)


def token_task():
    """A stand-in for `tasks.text.TextClassification` at train time, without its TensorFlow import."""
    import numpy as np

    from keras_models.specs import InputSpec, OutputSpec
    from tasks.classification import ClassificationTask

    class TokenClassification(ClassificationTask):
        name = "text_classification"

        def specs(self, transform):
            spec = transform["text"]
            return (
                InputSpec((spec["max_length"],), dtype="int32", vocab_size=spec["vocab_size"]),
                OutputSpec("classification", len(transform["label"]["classes"])),
            )

        def arrays(self, columns, transform):
            x = np.asarray(columns[transform["text"]["name"]], "int32")
            return x, np.asarray(columns[transform["label"]["name"]], "int32")

    return TokenClassification(SimpleNamespace())


def _fixed_lists(values, pa):
    """`(rows, width)` → a fixed-size list column, as the transforms write token ids."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _token_ids(rng, rows: int, length: int, vocab: int, first_id: int):
    """Token ids in `[first_id, vocab)`, each row padded with 0 after a length drawn from [length/2, length]."""
    import numpy as np

    ids = rng.integers(first_id, vocab, size=(rows, length), dtype=np.int32)
    lengths = rng.integers(max(1, length // 2), length + 1, size=rows)
    ids[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


def synthetic_split(case: Case, shapes: Shapes, rows: int, rng):
    """The task, its `transform.json` and a synthetic transformed split, column for column as preprocess writes it."""
    import numpy as np
    import pyarrow as pa

    def labels(classes: int):
        return pa.array(rng.integers(0, classes, size=rows), pa.int64())

    def label_spec(classes: int):
        return {"name": "label", "classes": [f"class_{i}" for i in range(classes)]}

    if case.data == "image":
        from tasks.image import ImageClassification, binary_column

        task = ImageClassification(SimpleNamespace(image_size=None, random_rotation=0.0, random_zoom=0.0,
                                                   random_translation=0.0))
        shape = [shapes.image, shapes.image, 3]
        transform = {"image": {"name": "image", "shape": shape, "size": shape[:2], "dtype": "uint8",
                               "mean": [127.5] * 3, "variance": [74.0**2] * 3, "pixel_columns": None},
                     "label": label_spec(IMAGE_CLASSES)}
        images = rng.integers(0, 256, size=(rows, *shape), dtype=np.uint8)
        schema = task.output_schema(transform)
        return task, transform, pa.Table.from_arrays([binary_column(images), labels(IMAGE_CLASSES)], schema=schema)
    if case.data == "tokens":
        task = token_task()
        length = shapes.seq_len
        transform = {"text": {"name": "text", "vocab_size": shapes.vocab, "max_length": length},
                     "label": label_spec(SEQUENCE_CLASSES)}
        ids, _ = _token_ids(rng, rows, length, shapes.vocab, first_id=2)
        schema = pa.schema([pa.field("text", pa.list_(pa.int32(), length)), pa.field("label", pa.int64())])
        return task, transform, pa.Table.from_arrays([_fixed_lists(ids, pa), labels(SEQUENCE_CLASSES)], schema=schema)
    if case.data == "series":
        from tasks.series import SeriesClassification

        task = SeriesClassification(SimpleNamespace())
        length = shapes.seq_len
        transform = {"series": {"name": "series", "mask": "series_mask", "channels": 1, "length": length,
                                "train_max_length": length, "train_min_length": length, "znormalize": True,
                                "padding": "pre", "padding_value": 0.0, "mask_channel": False},
                     "label": label_spec(SEQUENCE_CLASSES)}
        offsets = pa.array(np.arange(0, (rows + 1) * length, length, dtype=np.int32))
        values = rng.standard_normal(rows * length, dtype=np.float32)
        columns = [pa.ListArray.from_arrays(offsets, pa.array(values)),
                   pa.ListArray.from_arrays(offsets, pa.array(np.ones(rows * length, np.int8))),
                   labels(SEQUENCE_CLASSES)]
        return task, transform, pa.Table.from_arrays(columns, schema=task.output_schema_for("series", "label"))
    if case.data == "pairs":
        from tasks.seq2seq import END_ID, FIRST_TOKEN_ID, START_ID, Seq2Seq

        task = Seq2Seq(SimpleNamespace(label_smoothing=0.1))
        length = shapes.pair_len
        words = [f"w{i}" for i in range(shapes.vocab - FIRST_TOKEN_ID)]
        transform = {"source": {"name": "source", "max_length": length, "vocabulary": words},
                     "target": {"name": "target", "max_length": length - 1, "vocabulary": words},
                     "label": {"name": "target"},
                     "special_ids": {"pad": 0, "start": START_ID, "end": END_ID, "oov": 3}}
        source, _ = _token_ids(rng, rows, length, shapes.vocab, FIRST_TOKEN_ID)
        target_out, lengths = _token_ids(rng, rows, length, shapes.vocab, FIRST_TOKEN_ID)
        target_out[np.arange(rows), lengths - 1] = END_ID
        target_in = np.concatenate([np.full((rows, 1), START_ID, np.int32), target_out[:, :-1]], axis=1)
        columns = [_fixed_lists(a, pa) for a in (source, target_in, target_out)]
        return task, transform, pa.Table.from_arrays(columns, schema=task._output_schema(length, length))
    raise ValueError(f"Unknown data kind {case.data!r}.")


def write_preprocess_artifact(directory: Path, transform: dict[str, Any], table, batch_size: int) -> Path:
    """`transform/transform.json` and `transformed/train/*.parquet` as preprocess lays them out; whole-batch shards.

    Uncompressed, as the preprocess component writes, one row group per shard.
    """
    import pyarrow.parquet as pq

    from components.artifact_io import ROW_GROUP_BYTES

    (directory / "transform").mkdir(parents=True)
    (directory / "transform" / "transform.json").write_text(json.dumps(transform))
    split = directory / "transformed" / "train"
    split.mkdir(parents=True)
    row_bytes = max(1, table.nbytes // table.num_rows)
    shard_rows = batch_size * max(1, ROW_GROUP_BYTES // (batch_size * row_bytes))
    for index, start in enumerate(range(0, table.num_rows, shard_rows)):
        pq.write_table(table.slice(start, shard_rows).combine_chunks(), split / f"part-{index:05d}.parquet",
                       row_group_size=shard_rows, compression="none")
    return split


def step_clock():
    """A callback that notes when the last warm-up step and the last timed step have finished on the device."""
    import jax
    import keras

    class StepClock(keras.callbacks.Callback):
        """Marks taken on the fit loop's thread, at the start of steps `warmup` and `warmup + steps`.

        Each waits for the model state the step before produced, so the
        window holds exactly the timed steps; one untimed step follows it.
        It defines no batch-end hook, so Keras keeps dispatching ahead of the
        device unless another callback stops it.
        """

        def __init__(self, warmup: int, steps: int):
            super().__init__()
            self.first, self.last, self.marks = warmup, warmup + steps, {}

        def on_train_batch_begin(self, batch, logs=None):
            if batch in (self.first, self.last):
                jax.block_until_ready(self.model._jax_state)
                self.marks[batch] = time.perf_counter()

        def samples_per_second(self, batch_size: int) -> float:
            if len(self.marks) != 2:
                raise RuntimeError(f"fit stopped before step {self.last + 1}.")
            return (self.last - self.first) * batch_size / (self.marks[self.last] - self.marks[self.first])

    return StepClock


def timed_fit(model, arguments: dict[str, Any], callbacks: list, batch_size: int, warmup: int, steps: int) -> float:
    clock = step_clock()(warmup, steps)
    model.fit(**arguments, epochs=1, verbose=0, callbacks=[*callbacks, clock])
    return clock.samples_per_second(batch_size)


def xla_flops_per_sample(model, x, y, batch_size: int) -> float | None:
    """FLOPs of one Keras train step by XLA's HLO cost analysis of the lowered (unoptimised) program.

    The step is lowered for the CPU: JAX's GPU plugin does not analyse a
    lowered program (only a compiled one, which would mean compiling again),
    and the operations counted do not depend on the platform.
    """
    import jax
    import keras

    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                 optimizer_variables=True, metrics_variables=True)
    batch = keras.tree.map_structure(lambda a: a[:batch_size], (x, y))
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (state, batch))
    with jax.default_device(jax.devices("cpu")[0]):
        analysis = jax.jit(model.train_step).lower(*shapes).cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return flops / batch_size if flops else None


def peak_flops(device_kind: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for name, tflops in PEAK_BF16_TFLOPS.items():
        if all(word in device_kind for word in name.split()):
            return tflops * 1e12
    return None


def torch_reference(case: Case, hparams: dict[str, Any], shapes: Shapes):
    """The PyTorch twin of `case`, or the reason there is none."""
    try:
        from bench import torch_reference as reference
    except ImportError as e:
        if (e.name or "").split(".")[0] != "torch":
            raise
        return None, "torch not installed"
    from keras_models.architectures.convolutional import SMALL_IMAGE_PIXELS, _scaled

    if case.torch == "resnet18":
        stem = hparams["stem"]
        if stem == "auto":
            stem = "small" if shapes.image < SMALL_IMAGE_PIXELS else "imagenet"
        width = _scaled(64, hparams["width_multiplier"])
        return reference.ResNet18(IMAGE_CLASSES, 3, width, stem), reference
    keys = ("patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_dim", "dropout")
    return reference.ViT((shapes.image, shapes.image), 3, IMAGE_CLASSES, **{k: hparams[k] for k in keys}), reference


def measure(case: Case, shapes: Shapes, warmup: int, steps: int, smoke: bool, peak: float | None,
            work: Path) -> dict[str, Any]:
    import keras
    import numpy as np

    import keras_models
    from components.artifact_io import load_transformed
    from components.callbacks import StopOnNonFiniteLoss
    from components.input_pipeline import ParquetBatches

    batch = case.batch_size
    batches = warmup + steps + 1
    rows = batch * batches
    hparams = case.smoke if smoke else case.hparams
    full_hparams = {**keras_models.get_entry(case.model).defaults, **hparams}
    task, transform, table = synthetic_split(case, shapes, rows, np.random.default_rng(SEED))
    directory = work / case.label
    split = write_preprocess_artifact(directory, transform, table, batch)
    del table

    model = task.build_model(case.model, transform, hparams, LEARNING_RATE)
    params = int(sum(math.prod(v.shape) for v in model.trainable_weights))
    stream = ParquetBatches(split, task, transform, batch, shuffle=True, seed=SEED)
    if len(stream) != batches:
        raise RuntimeError(f"{len(stream)} streamed batches, expected {batches}: a row group is ragged.")
    pipeline = timed_fit(model, {"x": stream, "shuffle": False}, [StopOnNonFiniteLoss()], batch, warmup, steps)
    streamed = timed_fit(model, {"x": stream, "shuffle": False}, [], batch, warmup, steps)
    x, y, _ = load_transformed(directory, "train", task)
    shutil.rmtree(directory)
    bare = timed_fit(model, {"x": x, "y": y, "batch_size": batch}, [], batch, warmup, steps)
    row = {"model": case.label, "description": describe(case, smoke), "input": input_label(case, shapes),
           "batch_size": batch, "params": params, "pipeline": pipeline, "streamed": streamed, "bare": bare}

    if case.flops is not None:
        row["flops_per_sample"] = case.flops(full_hparams, shapes)
        row["mfu"] = row["flops_per_sample"] * pipeline / peak if peak else None
        try:
            row["xla_flops_per_sample"] = xla_flops_per_sample(model, x, y, batch)
        except Exception as e:  # a cross-check only: say why it is missing and go on
            row["xla_flops_per_sample"] = None
            row["xla_error"] = f"{type(e).__name__}: {e}"[:200]
    del model
    keras.backend.clear_session()
    gc.collect()

    if case.torch:
        network, reference = torch_reference(case, full_hparams, shapes)
        if network is None:
            row["torch"] = reference
        else:
            row["torch_params"] = reference.parameter_count(network)
            row["torch"] = reference.train_throughput(network, x, y, batch, warmup, steps, LEARNING_RATE, SEED)
            del network
            _free_torch_memory()
    return row


def _free_torch_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe(case: Case, smoke: bool) -> str:
    return "tiny: " + ", ".join(f"{k} {v}" for k, v in case.smoke.items()) if smoke and case.smoke else case.description


def input_label(case: Case, shapes: Shapes) -> str:
    return {"image": f"{shapes.image}×{shapes.image}×3",
            "tokens": f"{shapes.seq_len} tokens",
            "series": f"{shapes.seq_len}×1 series",
            "pairs": f"{shapes.pair_len}→{shapes.pair_len} tokens"}[case.data]


def _rate(value) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else f"{value:,.0f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | configuration | input | batch | params | pipeline samples/s | streamed, no callback | "
             "bare samples/s | pipeline / bare | PyTorch samples/s | Keras / PyTorch | MFU |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['description']} | {r['input']} | {r['batch_size']} | "
                         f"{r['error']} | | | | | | | |")
            continue
        torch = r.get("torch")
        versus = f"{r['bare'] / torch:.2f}" if isinstance(torch, float) else ""
        mfu = "" if "flops_per_sample" not in r else ("n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%")
        lines.append(f"| {r['model']} | {r['description']} | {r['input']} | {r['batch_size']} | {r['params']:,} | "
                     f"{_rate(r['pipeline'])} | {_rate(r['streamed'])} | {_rate(r['bare'])} | "
                     f"{r['pipeline'] / r['bare']:.2f} | "
                     f"{_rate(torch)} | {versus} | {mfu} |")
    checks = [r for r in rows if "torch_params" in r or "flops_per_sample" in r]
    if checks:
        lines += ["", "| model | Keras params | PyTorch params | analytic GFLOPs / sample | XLA GFLOPs / sample |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for r in checks:
            analytic, xla = r.get("flops_per_sample"), r.get("xla_flops_per_sample")
            torch_params = f"{r['torch_params']:,}" if "torch_params" in r else r.get("torch", "")
            lines.append(f"| {r['model']} | {r['params']:,} | {torch_params} | "
                         f"{'' if analytic is None else f'{analytic / 1e9:.4g}'} | "
                         f"{'' if xla is None else f'{xla / 1e9:.4g}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=CASE_NAMES, default=list(CASE_NAMES), metavar="MODEL",
                        help=f"any of: {', '.join(CASE_NAMES)} (default: all)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per model and path")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation among them)")
    parser.add_argument("--batch-size", type=int, help="one batch size for every model (default: each model's own)")
    parser.add_argument("--image-size", type=int, default=Shapes.image, help="square images of 3 channels")
    parser.add_argument("--seq-len", type=int, default=Shapes.seq_len, help="token and series length")
    parser.add_argument("--pair-len", type=int, default=Shapes.pair_len, help="seq2seq source and target length")
    parser.add_argument("--vocab-size", type=int, default=Shapes.vocab, help="token ids, source and target")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak for MFU (default: from the device kind)")
    parser.add_argument("--json", type=Path, help="also write the rows here, after every model")
    parser.add_argument("--stop-after", type=float, metavar="SECONDS",
                        help="start no model after this long, so a time-boxed run still prints its table")
    parser.add_argument("--smoke", action="store_true", help="tiny models and shapes, 2 steps: runs on a CPU")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1 (the first step compiles).")
    shapes = Shapes(args.image_size, args.seq_len, args.pair_len, args.vocab_size)
    if args.smoke:
        shapes = Shapes(image=16, seq_len=16, pair_len=8, vocab=200)
        args.steps, args.warmup, args.batch_size = 2, 1, args.batch_size or 8

    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    if args.smoke and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # The smoke run checks that every path runs; on a CPU it is mostly compilation, which this shortens.
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    import jax
    import keras

    if keras.backend.backend() != "jax":
        sys.exit(f"Run with KERAS_BACKEND=jax (Keras is on {keras.backend.backend()!r}).")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    device_kind = jax.devices()[0].device_kind
    peak = peak_flops(device_kind, args.peak_tflops)
    print(f"{device_kind}; JAX {jax.__version__}, Keras {keras.__version__}, mixed_bfloat16; "
          f"{args.warmup} warm-up + {args.steps} timed steps; MFU peak "
          f"{'unknown' if peak is None else f'{peak / 1e12:.0f} TFLOP/s dense bf16'}", file=sys.stderr, flush=True)

    rows, began, cases = [], time.perf_counter(), {case.label: case for case in CASES}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-train-") as work:
        for label in dict.fromkeys(args.models):
            case = cases[label]
            if args.batch_size:
                case = replace(case, batch_size=args.batch_size)
            start = time.perf_counter()
            if args.stop_after is not None and start - began > args.stop_after:
                rows.append({"model": case.label, "description": describe(case, args.smoke),
                             "input": input_label(case, shapes), "batch_size": case.batch_size,
                             "error": f"skipped, past --stop-after {args.stop_after:g} s"})
                continue
            try:
                row = measure(case, shapes, args.warmup, args.steps, args.smoke, peak, Path(work))
            except Exception as e:  # one model failing (memory, say) must not lose the others' figures
                row = {"model": case.label, "description": describe(case, args.smoke),
                       "input": input_label(case, shapes), "batch_size": case.batch_size,
                       "error": f"failed: {type(e).__name__}: {str(e)[:300]}"}
                keras.backend.clear_session()
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps({"device": device_kind, "rows": rows}, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
