import os
from pathlib import Path

import pytest

from pipeline.config import ConfigError, list_recipes, load_config


def test_default_recipe_loads_with_typed_overrides():
    config = load_config("iris_mlp", {"epochs": 7, "learning_rate": 0.5, "tuner": "bayesian", "train.batch_size": 4})
    assert config.train.epochs == 7 and config.train.learning_rate == 0.5
    assert config.tune.tuner == "bayesian" and config.train.batch_size == 4
    assert config.data.source == "sklearn:iris"
    assert "iris_mlp" in list_recipes()


def test_task_overrides_on_a_recipe_without_a_task_section_keep_the_default_task():
    config = load_config("iris_mlp", {"task.pretrain_epochs": 3, "task.mask_rate": 0.25})
    assert config.task.type == "tabular_classification"
    assert config.task.pretrain_epochs == 3 and config.task.mask_rate == 0.25
    with pytest.raises(ConfigError, match=r"mask_rate: Input should be less than 1 \(got 1.5\)"):
        load_config("iris_mlp", {"task.mask_rate": 1.5})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.epochz": 3}, r"train.epochz: unknown key \(did you mean 'epochs'\?\); valid keys: batch_size"),
        ({"epochs": 0}, r"train.epochs: Input should be greater than or equal to 1"),
        ({"tuner": "grid"}, r"tune.tuner: Input should be 'none', 'random', 'bayesian' or 'hyperband'"),
        ({"train.strategy": "horovod"}, r"train.strategy: Input should be 'auto', 'default', 'mirrored', "
                                        r"'multi_worker' or 'data_parallel'"),
        ({"model": "mpl"}, r"Unknown model 'mpl'. Did you mean 'mlp'"),
        ({"model.hparams": {"width": 3}}, r"Unknown hyperparameter\(s\) \['width'\] for model 'mlp'"),
        ({"data.split": {"train": 0.9, "eval": 0.2, "test": 0.1}}, r"split fractions must sum to 1"),
    ],
)
def test_bad_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("iris_mlp", overrides)


def test_unknown_recipe_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"Unknown recipe 'iris_mpl'. Did you mean 'iris_mlp'\? Available: .*iris_mlp"):
        load_config("iris_mpl")


def test_switching_model_drops_the_recipes_hparams():
    config = load_config("iris_mlp", {"model": "mlp"})
    assert config.model.hparams["units"] == 32


def test_unknown_task_option_lists_that_task_type_options(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {source: sklearn:iris}\ntask: {type: forecasting, time_column: month, windw: 3}\n")
    with pytest.raises(ConfigError, match=r"task.forecasting.windw: unknown key \(did you mean 'window'\?\); "
                                          r"valid keys: backtest_origins, combine, eval_periods, history, horizon"):
        load_config(str(recipe))


def test_model_without_a_head_for_the_task_names_models_that_have_one():
    with pytest.raises(ConfigError, match=r"'transformer' has no classification head .* models that do: .*mlp"):
        load_config("iris_mlp", {"model": "transformer"})


def test_data_paths_cannot_leave_the_allowed_roots(tmp_path, monkeypatch):
    """A recipe named on the command line loads from anywhere; the data paths written in it stay confined."""
    outside = tmp_path / "outside"
    (outside / "recipes").mkdir(parents=True)
    (outside / "secret.csv").write_text("a,label\n1,x\n")
    (outside / "r.yaml").write_text(f"data: {{source: {outside / 'secret.csv'}}}\n")
    (outside / "recipes" / "up.yaml").write_text("data: {source: ../secret.csv}\n")
    (outside / "beside.yaml").write_text("data: {source: secret.csv}\n")
    link = Path(__file__).resolve().parents[1] / "data" / "link-to-outside.csv"
    monkeypatch.setenv("PIPELINE_DATA_ROOTS", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match=r"data.source '.*outside/secret.csv' resolves to .*outside the allowed "
                                          r"roots .*recipes\); add its directory to \$PIPELINE_DATA_ROOTS"):
        load_config(str(outside / "recipes" / "up.yaml"))
    assert load_config(str(outside / "beside.yaml")).data.source == str(outside / "secret.csv")
    assert load_config(str(outside / "r.yaml")).data.source == str(outside / "secret.csv")
    escaping = os.path.relpath(outside / "secret.csv", link.parents[1])  # ../../…/secret.csv
    with pytest.raises(ConfigError, match=r"data.source '\.\./.*secret.csv' resolves to .*outside the allowed"):
        load_config("iris_mlp", {"data.source": escaping})
    with pytest.raises(ConfigError, match=r"Unknown recipe '\.\./\.\./etc/passwd'"):
        load_config("../../etc/passwd")
    try:
        link.symlink_to(outside / "secret.csv")
        with pytest.raises(ConfigError, match=r"data.test_source 'data/link-to-outside.csv' resolves to .*secret.csv"):
            load_config("iris_mlp", {"data.test_source": "data/link-to-outside.csv"})
    finally:
        link.unlink()
    monkeypatch.setenv("PIPELINE_DATA_ROOTS", str(outside))
    assert load_config(str(outside / "recipes" / "up.yaml")).data.source == str(outside / "secret.csv")


@pytest.mark.parametrize("hparams, message", [
    ({"dropout": 1.5}, r"dropout=1.5 is out of range for model 'mlp': expected a fraction in \[0, 1\)"),
    ({"units": -8}, r"units=-8 is out of range for model 'mlp': expected 0 or more"),
    ({"units": "wide"}, r"units='wide' is out of range for model 'mlp': expected a whole number"),
    ({"l2": -1e-4}, r"l2=-0.0001 is out of range for model 'mlp': expected 0 or more"),
])
def test_hyperparameters_out_of_range_are_named_at_load_time(hparams, message):
    with pytest.raises(ConfigError, match=message):
        load_config("iris_mlp", {"model.hparams": hparams})
