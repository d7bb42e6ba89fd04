"""Writes the model catalogue (docs/models.md) from the registry.

    python -m keras_models.catalogue > docs/models.md

Parameters are counted at each model's default hyperparameters on the input
it was designed for (the `reference` it is registered with, else its family's
representative task), so the table tracks the code.
"""

from __future__ import annotations

import keras_tuner

from keras_models import InputSpec, OutputSpec, list_models
from keras_models.registry import ModelEntry, count_parameters

# A representative task per family, for models registered without a reference input.
EXAMPLE_SPECS: dict[str, tuple[str, InputSpec, OutputSpec]] = {
    "dense": ("Iris, 4 features → 3 classes", InputSpec((4,)), OutputSpec("classification", 3)),
    "tabular": ("breast cancer, 30 features → 2 classes", InputSpec((30,)), OutputSpec("classification", 2)),
    "convolutional": ("ImageNet 224×224×3 → 1,000 classes", InputSpec((224, 224, 3)), OutputSpec("classification", 1000)),
    "attention_vision": ("ImageNet 224×224×3 → 1,000 classes", InputSpec((224, 224, 3)), OutputSpec("classification", 1000)),
    "sequence": ("24 steps × 1 channel → 12-step forecast", InputSpec((24, 1)), OutputSpec("forecasting", 12)),
    "seq2seq": ("20 source tokens, vocabularies of 2,000", InputSpec((20,), "int32", 2000),
                OutputSpec("seq2seq", vocab_size=2000)),
    "text": ("64 tokens, vocabulary 20,000 → 2 classes", InputSpec((64,), "int32", 20000), OutputSpec("classification", 2)),
}


def _space(entry: ModelEntry) -> str:
    hp = keras_tuner.HyperParameters()
    entry.search_space(hp)
    parts = []
    for p in hp.space:
        config = p.get_config()
        if "values" in config:
            parts.append(f"{p.name} ∈ {{{', '.join(map(str, config['values']))}}}")
        elif "min_value" not in config:  # Boolean or Fixed
            parts.append(f"{p.name} = {config.get('value', '{True, False}')}")
        else:
            scale = " (log)" if config.get("sampling") == "log" else ""
            parts.append(f"{p.name} ∈ [{config['min_value']:g}, {config['max_value']:g}]{scale}")
    return "; ".join(parts)


def _params(entry: ModelEntry) -> tuple[str, str]:
    if entry.reference is not None:
        reference = entry.reference
        description, input_spec, output_spec = reference.description, reference.input_spec, reference.output_spec
    else:
        description, input_spec, output_spec = EXAMPLE_SPECS.get(entry.family, EXAMPLE_SPECS["dense"])
    if output_spec.head not in entry.tasks:
        output_spec = OutputSpec(entry.tasks[0], output_spec.units, output_spec.vocab_size or input_spec.vocab_size)
    return f"{count_parameters(entry.name, input_spec, output_spec):,}", description


def render() -> str:
    lines = [
        "# Model catalogue",
        "",
        "Generated from the registry by `make docs` (`python -m keras_models.catalogue`).",
        "Build any of them with `keras_models.build_model(name, input_spec, output_spec, **hparams)`;",
        "the search space is what `tune` explores.",
        "",
        "| model | family | tasks | paper | parameters (default config) | on | search space |",
        "| --- | --- | --- | --- | ---: | --- | --- |",
    ]
    for entry in list_models():
        params, description = _params(entry)
        lines.append(
            f"| `{entry.name}` | {entry.family} | {', '.join(entry.tasks)} | {entry.paper} | {params} "
            f"| {description} | {_space(entry)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
