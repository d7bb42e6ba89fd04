import json
import subprocess
import sys

import pytest

from keras_models import index, registry
from pipeline.config import ConfigError, load_config


def test_index_matches_the_registry():
    written = json.loads(index.INDEX_PATH.read_text())
    live = json.loads(json.dumps(index.index_of(registry.list_models())))
    assert written == live, "keras_models/index.json is stale: run `python -m keras_models.registry`"


def test_recipe_checks_use_the_index():
    with pytest.raises(ConfigError, match="Did you mean 'tabnet'"):
        load_config("breast_cancer_tabnet", {"model": "tabnt"})
    with pytest.raises(ConfigError, match=r"n_steps=-1 is out of range for model 'tabnet'"):
        load_config("breast_cancer_tabnet", {"model.hparams.n_steps": -1})
    with pytest.raises(ConfigError, match="Unknown hyperparameter.*Valid: .*n_steps"):
        load_config("breast_cancer_tabnet", {"model.hparams.n_step": 3})
    with pytest.raises(ConfigError, match="has no forecasting head"):
        load_config("airline_lstm", {"model": "tabnet"})


def test_start_up_and_beam_side_task_modules_load_without_keras():
    """Starting the pipeline, checking a recipe and running the Beam transforms must not pay for importing Keras."""
    code = (
        "import sys\n"
        "import pipeline.cli, pipeline.runner, components.base, components.tuning_cluster, data.sources\n"
        "from pipeline.config import load_config\n"
        "from tasks import get_task\n"
        "import components.preprocess\n"
        "for recipe in ('iris_mlp', 'penguins_mlp', 'mnist_vit', 'airline_lstm', 'gunpoint_tcn',"
        " 'tatoeba_transformer'):\n"
        "    get_task(load_config(recipe).task)\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
