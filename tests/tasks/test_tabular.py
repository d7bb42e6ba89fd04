"""What the tabular task does to a model before `fit`: the RBF network's k-means start, TabNet's pretraining."""

import numpy as np
import pytest

from tasks.tabular import TabularClassification
from tests.helpers import config_for


@pytest.fixture(scope="module")
def breast_cancer_transform():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = ((data.data - data.data.mean(0)) / data.data.std(0)).astype("float32")
    transform = {
        "numeric": {name: {"mean": 0.0, "variance": 1.0} for name in data.feature_names},
        "categorical": {},
        "label": {"name": "diagnosis", "classes": ["malignant", "benign"]},
    }
    return x, transform


def test_pretraining_trains_the_tabnet_encoder_and_logs_its_loss(breast_cancer_transform, local_mlflow):
    import mlflow

    x, transform = breast_cancer_transform
    config = config_for("breast_cancer_tabnet", **{"task.pretrain_epochs": 3, "train.learning_rate": 0.02})
    task = TabularClassification(config.task)
    assert task.pretrains(config)
    model = task.build_model("tabnet", transform, {"n_d": 8, "n_a": 8, "n_steps": 2}, 0.01)
    before = model.get_layer("tabnet_encoder").get_weights()
    with mlflow.start_run() as run:
        task.pretrain(model, x, transform, config)
    after = model.get_layer("tabnet_encoder").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(after, before))
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "pretrain_loss")
    assert [m.step for m in history] == [0, 1, 2] and history[2].value < history[0].value


def test_pretraining_needs_tabnet():
    config = config_for("breast_cancer_mlp", **{"task.pretrain_epochs": 5})
    with pytest.raises(ValueError, match=r"task.pretrain_epochs=5 pretrains TabNet's encoder; model 'mlp' has none"):
        TabularClassification(config.task).pretrain(None, np.zeros((2, 3), "float32"), {}, config)


def test_the_rbf_network_starts_from_k_means_centres_of_the_train_features(breast_cancer_transform):
    from sklearn.cluster import KMeans

    x, transform = breast_cancer_transform
    config = config_for("iris_rbf")
    task = TabularClassification(config.task)
    assert task.pretrains(config)
    model = task.build_model("rbf", transform, {"num_centres": 8}, 0.01)
    task.pretrain(model, x, transform, config)
    centres = model.get_layer("rbf").centres.numpy()
    expected = KMeans(n_clusters=8, n_init=10, random_state=config.seed).fit(x).cluster_centers_
    np.testing.assert_allclose(centres, expected, atol=1e-4)


def test_models_without_an_initializer_get_no_train_arrays():
    config = config_for("iris_mlp")
    assert not TabularClassification(config.task).pretrains(config)


def test_ignored_columns_are_no_features_and_the_served_model_does_not_ask_for_them(tmp_path):
    """An identifier (`task.ignore`, named as in the file or normalised) is read with the rows and nothing more."""
    from sklearn.datasets import load_iris

    from data.sources import read_source
    from pipeline.config import ConfigError
    from pipeline.preflight import check_inputs

    frame = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    frame.insert(0, "Order ID", [f"A-{i:04d}" for i in range(len(frame))])
    frame.to_csv(tmp_path / "orders.csv", index=False)
    config = config_for(**{"data.source": str(tmp_path / "orders.csv"), "data.label": "species",
                           "task.ignore": ["Order ID"]})
    check_inputs(config)
    task = TabularClassification(config.task)
    raw = read_source(config.data.source, "species")
    features = [f["name"] for f in task.feature_schema(raw.frame, raw.label)]
    assert "order_id" in raw.frame.columns and "order_id" not in features and len(features) == 4
    transform = {"label": {"name": "species"}}
    assert task.serving_example(raw.frame, transform).columns.tolist() == features

    typo = config_for(**{"data.source": str(tmp_path / "orders.csv"), "data.label": "species",
                         "task.ignore": ["order_di"]})
    with pytest.raises(ConfigError, match=r"task.ignore: .* has no column 'order_di' \(did you mean 'order_id'\?\)"):
        check_inputs(typo)
