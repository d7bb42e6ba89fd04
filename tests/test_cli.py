import subprocess
import sys


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_components_recipes_models_and_parameters():
    result = _cli("--help")
    assert result.returncode == 0
    for word in ("ingest", "preprocess", "tune", "train", "evaluate", "iris_mlp", "mlp"):
        assert word in result.stdout
    component = _cli("train", "--help").stdout
    for option in ("--recipe", "--model", "--epochs", "--batch-size", "--learning-rate", "--tuner",
                   "--max-trials", "--seed", "--runner", "--output-dir", "--no-cache"):
        assert option in component


def test_bad_parameter_values_are_named():
    result = _cli("run", "--epochs", "ten")
    assert result.returncode == 2 and "--epochs: 'ten' is not a valid int" in result.stderr
    result = _cli("run", "--tuner", "grid")
    assert result.returncode == 2 and "tune.tuner: Input should be 'none', 'random'" in result.stderr


def test_exit_keeps_the_status_and_the_atexit_handlers_but_skips_the_final_collection():
    """What the CLI's processes do last: `atexit` handlers (MLflow's metric flush) still run, on frozen objects."""
    script = (
        "import atexit, gc, sys\n"
        "from pipeline.cli import exit_process\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, flush=True))\n"
        "exit_process(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and result.stdout.strip() == "frozen True"
