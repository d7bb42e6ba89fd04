"""The blessing rule: thresholds, and beating the strongest of the task's blessing baselines."""

import doctest
from types import SimpleNamespace

import pytest

import components.evaluate
from components.evaluate import bless, blessing_outcome
from tasks.forecasting import Forecasting
from tasks.regression import TabularRegression
from tasks.seq2seq import Seq2Seq

SETTINGS = SimpleNamespace(thresholds={}, must_beat_baseline=True)


def _task(primary, errors=(), baselines=("baseline",), baseline_name="majority class"):
    return SimpleNamespace(primary_metric=primary, error_metrics=frozenset(errors), baseline_name=baseline_name,
                           blessing_baselines=baselines)


def test_the_strongest_score_decides_when_higher_is_better():
    task = _task("chrf", baselines=("baseline", "retrieval"), baseline_name="most frequent target")
    references = {"retrieval": {"chrf": 21.57, "bleu": 24.5}, "other": {"chrf": 40.0}}
    lost = bless({"chrf": 15.97}, {"chrf": 1.83}, task, SETTINGS, references)
    check = lost["checks"][0]
    assert not lost["blessed"] and not check["passed"]
    assert check["check"] == "chrf > retrieval chrf" and check["outcome"] == "chrf 15.97 <= retrieval 21.57"
    assert check["baseline"] == "retrieval" and check["margin"] == pytest.approx(-5.60)
    assert check["baselines"] == {"most frequent target": 1.83, "retrieval": 21.57}
    assert lost["checks"][1]["informational"] and lost["checks"][1]["reference"] == 40.0  # not a blessing baseline
    assert blessing_outcome(lost["checks"]) == "chrf 15.97 <= retrieval 21.57"

    won = bless({"chrf": 25.0}, {"chrf": 1.83}, task, SETTINGS, references)
    assert won["blessed"] and won["checks"][0]["margin"] == pytest.approx(3.43)
    assert blessing_outcome(won["checks"]) == "chrf 25 > retrieval 21.57, by 3.43"
    assert not bless({"chrf": 21.57}, {"chrf": 1.83}, task, SETTINGS, references)["blessed"]  # a tie is no win


def test_the_strongest_error_decides_when_lower_is_better():
    task = _task("mase", errors=("mase",), baselines=("baseline", "naive", "drift"), baseline_name="seasonal naive")
    references = {"naive": {"mase": 1.4}, "drift": {"mase": 0.95}, "auto_ets": {"mase": 0.8}}
    lost = bless({"mase": 1.0}, {"mase": 1.2}, task, SETTINGS, references)
    assert not lost["blessed"]  # beats seasonal naive, not drift
    assert lost["checks"][0]["outcome"] == "mase 1 >= drift 0.95" and lost["checks"][0]["margin"] == pytest.approx(-0.05)
    won = bless({"mase": 0.9}, {"mase": 1.2}, task, SETTINGS, references)
    assert won["blessed"] and won["checks"][0]["baseline"] == "drift"
    assert won["checks"][0]["margin"] == pytest.approx(0.05)
    informational = [c for c in won["checks"] if c.get("informational")]
    assert [c["check"] for c in informational] == ["mase <= auto_ets mase"]  # AutoETS informs, does not block
    assert not informational[0]["passed"] and informational[0]["gap"] == pytest.approx(0.1)

    only_baseline = bless({"mase": 0.9}, {"mase": 0.7}, task, SETTINGS, {})
    assert not only_baseline["blessed"] and only_baseline["checks"][0]["baseline"] == "seasonal naive"


def test_thresholds_and_the_baseline_both_gate_and_each_failure_is_named():
    task = _task("accuracy", errors=("log_loss",))
    settings = SimpleNamespace(thresholds={"accuracy": 0.95, "log_loss": 0.2}, must_beat_baseline=True)
    result = bless({"accuracy": 0.9, "log_loss": 0.1}, {"accuracy": 0.34}, task, settings)
    assert not result["blessed"] and [c["passed"] for c in result["checks"]] == [False, True, True]
    assert blessing_outcome(result["checks"]) == "accuracy >= 0.95 failed (value 0.9)"
    unasked = SimpleNamespace(thresholds={}, must_beat_baseline=False)
    assert bless({"accuracy": 0.1}, {"accuracy": 0.34}, task, unasked) == {"blessed": True, "checks": []}


def test_each_task_declares_its_blessing_baselines():
    assert Seq2Seq.blessing_baselines == ("baseline", "retrieval")
    assert Forecasting.blessing_baselines == ("baseline", "naive", "drift")  # AutoETS, AutoTheta: references
    assert TabularRegression.blessing_baselines == ("baseline",)  # ridge: a reference


def test_docstring_examples_run():
    assert doctest.testmod(components.evaluate).failed == 0


def test_the_version_description_and_the_parent_run_note_name_the_strongest_baseline():
    from components.evaluate import version_description
    from pipeline.runner import pipeline_note

    task = _task("chrf", baselines=("baseline", "retrieval"), baseline_name="most frequent target")
    headline, baseline, references = {"chrf": 25.0}, {"chrf": 1.83}, {"retrieval": {"chrf": 21.57}}
    blessing = bless(headline, baseline, task, SETTINGS, references)
    config = SimpleNamespace(name="tatoeba", model=SimpleNamespace(name="transformer"),
                             task=SimpleNamespace(type="seq2seq"), data=SimpleNamespace(source="kor.txt"))
    evaluation = SimpleNamespace(headline=headline, baseline=baseline, references=references)
    description = version_description(config, evaluation, blessing, "f" * 64)
    assert ("- passed: `chrf 25 > retrieval 21.57, by 3.43` (the strongest of the baselines most frequent "
            "target 1.83, retrieval 21.57)") in description

    summary = {"test_metrics": headline, "baseline_metrics": baseline, "reference_metrics": references,
               "registration": None, "blessing": "chrf 15.97 <= retrieval 21.57"}
    evaluate = SimpleNamespace(artifact=SimpleNamespace(manifest={"summary": summary}), cache_hit=False,
                               run_id="0" * 32, seconds=1.0)
    result = SimpleNamespace(components={"evaluate": evaluate}, run_id="1" * 32)
    note = pipeline_note(config, result, "1")
    assert "Not blessed (chrf 15.97 <= retrieval 21.57): see `blessing.json` on the evaluate run." in note
