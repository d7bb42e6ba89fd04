"""Command line: `keras-pipeline run` for the whole pipeline, one component by name, or `init` for a recipe.

Every check that needs no training (the recipe, the model against the task,
the data file and the columns it names) runs before any MLflow run is
created, and a failure is one line, `error: ...`, with exit status 2.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any, Callable, Literal, NoReturn, get_args, get_origin

from components import console
from pipeline.config import PARAMETERS, ConfigError, PipelineConfig, list_recipes, load_config

COMPONENT_HELP = {
    "ingest": "read the source; write stratified splits, schema and statistics",
    "preprocess": "Beam full-pass statistics on train, applied to every split",
    "tune": "Keras Tuner search, each trial a nested MLflow run",
    "train": "fit the model and export it with its preprocessing",
    "evaluate": "test metrics, baseline, blessing, Model Registry alias",
}


def _optional(kind: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """Parses `kind`, treating '' as 'keep the recipe's value' (MLproject passes '' for unset).

    Choices are checked with the recipe, by the config, whose error names the field and lists them.
    """

    def parse(text: str):
        if text == "":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')}: {text!r} is not a valid {kind.__name__}") from None

    return parse


def _field(target: str):
    """The pydantic field behind a dotted config path such as `train.epochs`."""
    model: Any = PipelineConfig
    *sections, name = target.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
    return model.model_fields[name]


def _option_help(name: str, target: str) -> tuple[tuple, str]:
    """The choices of a config field and its help: what it sets, the choices, the default."""
    from keras_models import index

    field = _field(target)
    choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    text = f"sets {target}"
    if name == "model":
        text += f": one of {', '.join(e.name for e in index.list_models())}"
    elif name == "runner":
        text += ": a Beam runner (DirectRunner, DaskRunner, PortableRunner, FlinkRunner, SparkRunner, ...)"
    return choices, f"{text} (default: the recipe's; {field.default} where it has none)"


def _lists_epilog() -> str:
    """The recipes and models a pipeline command takes, wrapped to the terminal."""
    import shutil
    import textwrap

    from keras_models import index

    width = min(shutil.get_terminal_size().columns, 100) - 2
    models = ", ".join(e.name for e in index.list_models())
    wrap = lambda head, text: textwrap.fill(text, width, initial_indent=head, subsequent_indent=" " * len(head))  # noqa: E731
    return (
        f"{wrap('recipes: ', ', '.join(list_recipes()))}\n{wrap('models:  ', models)}\n\n"
        "Unset options keep the recipe's values; --set SECTION.KEY=VALUE sets any other field."
    )


def _models_epilog() -> str:
    components = "\n".join(f"  {name:<11} {text}" for name, text in COMPONENT_HELP.items())
    return f"components:\n  run         the whole pipeline\n{components}\n\n{_lists_epilog()}"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--recipe", default=None, type=_optional(str, "recipe"),
                        help=f"recipe name in pipeline/recipes/ or a YAML file anywhere (default: {DEFAULT_RECIPE})")
    common.add_argument("--data", default=None, metavar="FILE", type=_optional(str, "data"),
                        help="infer the recipe from this CSV or Parquet file, as `init` does, instead of --recipe")
    common.add_argument("--label", default=None, metavar="COLUMN", type=_optional(str, "label"),
                        help="with --data: the column to predict")
    common.add_argument("--time-column", default=None, metavar="COLUMN", type=_optional(str, "time_column"),
                        help="with --data: the timestamps of a series to forecast (found by itself when one column "
                             "holds one date per row)")
    types = {"epochs": int, "batch_size": int, "max_trials": int, "seed": int, "learning_rate": float}
    for name, target in PARAMETERS.items():
        choices, text = _option_help(name, target)
        metavar = "{" + ",".join(choices) + "}" if choices else ("NAME" if name == "model" else name.upper())
        common.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=metavar, default=None, help=text,
                            type=_optional(types.get(name, str), name))
    common.add_argument("--workers", type=_optional(int, "workers"), default=None,
                        help="sets tune.workers: worker processes of a distributed Keras Tuner search "
                             "(default: the recipe's; 0, the search in this process, where it has none)")
    common.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="set any config field, e.g. --set train.early_stopping_patience=5")
    common.add_argument("--no-cache", action="store_true", help="re-run components even when a finished artifact matches")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="show every library's log and start-up notices (default: this pipeline's progress "
                             "and real warnings only)")

    parser = argparse.ArgumentParser(
        prog="keras-pipeline",
        description="TFX-style Keras pipeline: ingest → preprocess (Beam) → tune → train → evaluate, tracked in MLflow.",
        epilog=_models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lists = _lists_epilog()
    sub.add_parser("run", parents=[common], help="run the whole pipeline", description="Runs ingest, preprocess, "
                   "tune (when the recipe has a tuner), train and evaluate, reusing finished artifacts.",
                   epilog=lists, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, text in COMPONENT_HELP.items():
        sub.add_parser(name, parents=[common], help=f"{text} (runs missing upstream components first)",
                       description=f"{name}: {text}. Runs the components it needs first, reusing finished ones.",
                       epilog=lists, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_parser("list", help="list components, recipes (task and model) and models (family and paper)")
    _add_predict_parser(sub)
    init = sub.add_parser("init", help="write a recipe for a CSV or Parquet file, inferred from its columns",
                          description="Reads DATA (CSV with sniffed options, or Parquet), infers the task, the "
                                      "categorical columns, a model and training settings, prints the columns, and "
                                      "writes a commented recipe to run with `keras-pipeline run --recipe`.")
    init.add_argument("data", metavar="DATA", help="a CSV (.csv, .tsv, .txt, gzipped too) or Parquet file, or sklearn:<name>")
    init.add_argument("--label", required=True, metavar="COLUMN", help="the column to predict")
    init.add_argument("--time-column", default=None, metavar="COLUMN",
                      help="the timestamps of a series to forecast (found by itself when one column holds one "
                           "date per row)")
    init.add_argument("--name", default=None, help="recipe name: the MLflow experiment and the registered model "
                                                    "(default: the data file's name)")
    init.add_argument("-o", "--output", default=None, metavar="FILE", help="the recipe to write (default: NAME.yaml "
                                                                            "in the current directory)")
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    init.add_argument("-v", "--verbose", action="store_true", help="show every library's log and start-up notices")
    return parser


DEFAULT_RECIPE = "iris_mlp"
# What each MLproject entry point passes on (`mlflow run -P NAME=VALUE`); `tools/mlproject.py` writes MLproject from it.
MLPROJECT_OPTIONS = ("recipe", "data", "label", "time_column", *PARAMETERS, "workers")


def _init(args: argparse.Namespace) -> int:
    """`keras-pipeline init`: infers a recipe from the data file and writes it as commented YAML."""
    from pathlib import Path

    from pipeline.recipe_from_data import column_table, infer_recipe, recipe_yaml, source_for

    inferred = infer_recipe(args.data, args.label, args.time_column, args.name)
    output = Path(args.output or f"{inferred.name}.yaml")
    if not output.name.endswith((".yaml", ".yml")):
        raise ConfigError(f"-o {output}: a recipe file ends in .yaml; name it, e.g., -o {output.stem}.yaml.")
    if output.exists() and not args.force:
        raise ConfigError(f"{output} exists; pass --force to overwrite it, or -o another file.")
    _, allow = source_for(inferred, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(recipe_yaml(inferred, output), encoding="utf-8")
    print(column_table(inferred))
    for note in inferred.notes:
        print(f"note: {note}")
    print(f"\nwrote {output}: {inferred.task_type} of {inferred.recipe['data']['label']!r} with "
          f"{inferred.recipe['model']['name']}")
    prefix = f"PIPELINE_DATA_ROOTS={allow} " if allow else ""
    if allow:
        print(f"the recipe reads {inferred.source}, outside the checkout and the recipe's directory: list "
              f"{allow} in $PIPELINE_DATA_ROOTS, or write the recipe beside the data (-o {allow / output.name})")
    print(f"run it:  {prefix}keras-pipeline run --recipe {output}")
    return 0


def _config(args: argparse.Namespace) -> PipelineConfig:
    """The recipe named by --recipe, or inferred from --data, with the command line's overrides."""
    overrides = {name: getattr(args, name) for name in PARAMETERS} | {"tune.workers": args.workers}
    overrides |= _assignments(args.assignments)
    if args.data is None:
        if args.label is not None or args.time_column is not None:
            option = "--label" if args.label is not None else "--time-column"
            raise ConfigError(f"{option} goes with --data FILE; to change a recipe's columns, use "
                              "--set data.label=COLUMN or --set task.time_column=COLUMN.")
        return load_config(args.recipe or DEFAULT_RECIPE, overrides)
    if args.recipe is not None:
        raise ConfigError("--data infers a recipe from the file; drop --recipe, or drop --data and set "
                          "data.source in the recipe.")
    if args.label is None:
        raise ConfigError("--data needs --label COLUMN, the column to predict.")
    from pipeline.recipe_from_data import column_table, infer_recipe

    inferred = infer_recipe(args.data, args.label, args.time_column)
    print(column_table(inferred))
    for note in inferred.notes:
        print(f"note: {note}")
    return load_config(inferred.recipe, overrides, trusted=[inferred.source])


def _add_predict_parser(sub) -> None:
    """`keras-pipeline predict MODEL_URI INPUT [-o OUTPUT]`: batch predictions (`pipeline/predict.py`)."""
    from pipeline.predict import BAD_ROWS_POLICIES, DEFAULT_CHUNK_ROWS

    predict = sub.add_parser(
        "predict", help="write a CSV or Parquet file's rows with a logged model's predictions",
        description="Reads INPUT (CSV or Parquet, anywhere) a chunk at a time, CSV in the format of the model's "
                    "training file unless the options below say otherwise, and writes its rows plus `prediction` "
                    "(and `probability_<class>`) to OUTPUT, default <input stem>.predictions.csv (.parquet for "
                    "Parquet input) beside INPUT. Columns may carry the training file's names or normalised ones.")
    predict.add_argument("model_uri", metavar="MODEL_URI",
                         help="models:/<name>@<alias>, models:/<name>/<version> or runs:/<run id>/model")
    predict.add_argument("input", metavar="INPUT", help="a CSV (.csv, .csv.gz, .tsv, .txt) or Parquet file")
    predict.add_argument("-o", "--output", default=None, help="a .csv or .parquet file, written when all rows are")
    predict.add_argument("--bad-rows", choices=BAD_ROWS_POLICIES, default="fail",
                         help="rows with a number that does not parse, an infinite value or the wrong width: "
                              "fail naming them (default), or skip and report them")
    predict.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, metavar="N",
                         help=f"rows read, predicted and written at a time (default {DEFAULT_CHUNK_ROWS})")
    predict.add_argument("--delimiter", default=None, help="CSV field separator (one character, or tab)")
    predict.add_argument("--encoding", default=None, help="CSV encoding, a Python codec name such as cp1252")
    predict.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                         help="whether the CSV's first line names the columns")
    predict.add_argument("--csv", dest="csv_options", action="append", default=[], metavar="KEY=VALUE",
                         help="any data.csv option, e.g. --csv 'column_names=[a, b]' --csv 'na_values=[\"?\"]'")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.add_argument("-v", "--verbose", action="store_true", help="show every library's log and start-up notices")


def _predict(args) -> int:
    import yaml
    from mlflow.exceptions import MlflowException

    from data.sources import bad_rows_summary
    from pipeline.predict import PredictError, predict_file

    options = {"delimiter": args.delimiter, "encoding": args.encoding, "header": args.header}
    for item in args.csv_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: --csv {item!r}: expected KEY=VALUE, e.g. --csv delimiter=';'", file=sys.stderr)
            return 2
        options[key] = yaml.safe_load(value)
    try:
        summary = predict_file(args.model_uri, args.input, args.output, csv_options=options, bad_rows=args.bad_rows,
                               chunk_rows=args.chunk_rows, progress=not args.no_progress)
    except (PredictError, MlflowException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {summary.rows_written} row(s) with predictions to {summary.output_path}")
    if summary.rows_skipped:
        print(f"skipped {summary.rows_skipped} bad row(s):\n{bad_rows_summary(summary.rejected)}")
    return 0


def _list() -> int:
    """`keras-pipeline list`: the components, each recipe's task and model, each model's family and paper."""
    import yaml

    from keras_models import index
    from pipeline.config import RECIPES_DIR

    print("components:")
    print(f"  {'run':<20} the whole pipeline")
    for name, text in COMPONENT_HELP.items():
        print(f"  {name:<20} {text}")
    print("\nrecipes (pipeline/recipes/):")
    for name in list_recipes():
        recipe = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text()) or {}
        task = (recipe.get("task") or {}).get("type", "tabular_classification")
        model = (recipe.get("model") or {}).get("name", "mlp")
        print(f"  {name:<32} {task:<24} {model}")
    print("\nmodels:")
    for entry in index.list_models():
        print(f"  {entry.name:<20} {entry.family:<18} {entry.paper}")
    return 0


def _assignments(items: list[str]) -> dict[str, Any]:
    import yaml

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
        parsed[key] = yaml.safe_load(value)
    return parsed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console.configure(getattr(args, "verbose", False))
    if args.command == "predict":
        return _predict(args)
    if args.command == "list":
        return _list()
    from data.sources import SourceError
    from pipeline.preflight import check_inputs
    from tasks.base import TensorFlowRequiredError

    try:
        if args.command == "init":
            return _init(args)
        config = _config(args)
        check_inputs(config)
    except (ConfigError, SourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TensorFlowRequiredError as e:  # the recipe's task type imports TensorFlow, which is missing
        print(f"error: {e}", file=sys.stderr)
        return 1

    from mlflow.exceptions import MlflowException

    from components.base import NonFiniteLossError, RunnerUnreachableError
    from components.tuning_cluster import TuningClusterError
    from data.sources import SourceError
    from pipeline.artifacts import ArtifactError
    from pipeline.runner import run_pipeline
    from pipeline.tracking import ui_command

    # Errors that explain themselves (the file, row, column or parameter at fault; a failed tune process's
    # log; what needs TensorFlow; MLflow's own): no traceback.
    explained = (SourceError, ArtifactError, NonFiniteLossError, TuningClusterError, MlflowException,
                 TensorFlowRequiredError, RunnerUnreachableError)

    try:
        result = run_pipeline(config, None if args.command == "run" else [args.command], no_cache=args.no_cache)
    except explained as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\nMLflow run: {result.run_id}  ({result.tracking_uri})")
    for name, component in result.components.items():
        state = "cached" if component.cache_hit else "ran"
        print(f"  {name:<11} {state:<7} {component.seconds:6.1f}s  {component.artifact.path}")
    if result.test_metrics:
        print("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in result.test_metrics.items()))
        evaluate = result.components["evaluate"].artifact.manifest["summary"]
        if evaluate.get("registration"):
            r = evaluate["registration"]
            print(f"registered: models:/{r['name']}@{r['alias']} (version {r['version']})")
        else:
            print("not blessed: see blessing.json in the evaluate artifact")
    print(f"open the MLflow UI: {ui_command(result.tracking_uri)}")
    return 0


def exit_process(status: int) -> NoReturn:
    """Exits with `status`, sparing the interpreter's shutdown its garbage collection.

    At exit CPython collects reference cycles among every object still alive:
    with TensorFlow, Keras, MLflow and Beam loaded that walk is slow
    (docs/benchmarks.md), and frees memory the process is about to give back. Frozen objects are skipped;
    `atexit` handlers (MLflow's flush of queued metrics, removing temporary
    directories) run as before.
    """
    gc.freeze()
    sys.exit(status)


def entry_point() -> NoReturn:
    """`keras-pipeline`: `main`, in a process that ends with it."""
    exit_process(main())


if __name__ == "__main__":
    entry_point()
