"""Bad step parameters, in process: each step's command and ``main`` reject them with the same
one-line message, before any run starts (``main`` before its first step)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from steps import hpo, options, preprocess, register, train_best
from steps import main as pipeline
from tests.conftest import ambient, make_tracking

STEP_COMMANDS = {
    "preprocess": preprocess.main,
    "hpo": hpo.main,
    "train_best": train_best.main,
    "register": register.main,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One throw-away store for the module: nothing here may write to it."""
    tracking = make_tracking(tmp_path_factory.mktemp("options"))
    with pytest.MonkeyPatch.context() as mp:
        yield from ambient(tracking, mp)
    assert tracking.runs() == []


@pytest.mark.parametrize(
    ("step", "args", "message"),
    [
        (
            "preprocess",
            ["--train-month", "2023-13"],
            "Error: Invalid value for '--train-month': month must be YYYY-MM (for example "
            "2023-01), got '2023-13'",
        ),
        ("preprocess", ["--test-month", "March"], "Error: Invalid value for '--test-month'"),
        (
            "preprocess",
            ["--val-month", "2023-01"],
            "Error: train, val and test months must be distinct, got train=2023-01, "
            "val=2023-01, test=2023-03",
        ),
        ("preprocess", ["--color", "blue"], "'blue' is not one of 'green', 'yellow'"),
        ("hpo", ["--model", "catboost"], "'catboost' is not one of 'xgboost'"),
        (
            "hpo",
            ["--max-evals", "0"],
            "Error: Invalid value for '--max-evals': 0 is not in the range x>=1.",
        ),
        ("hpo", ["--max-evals", "5.0"], "'5.0' is not a valid integer"),
        ("hpo", ["--seed", "abc"], "'abc' is not a valid integer"),
        ("hpo", ["--num-boost-round", "0"], "0 is not in the range x>=1"),
        ("hpo", ["--early-stopping-rounds", "-1"], "-1 is not in the range x>=0"),
        (
            "train_best",
            ["--top-n", "0"],
            "Error: Invalid value for '--top-n': 0 is not in the range x>=1.",
        ),
        (
            "train_best",
            ["--autolog", "maybe"],
            "Error: Invalid value for '--autolog': 'maybe' is not a valid boolean.",
        ),
        (
            "register",
            ["--select-by", "oops"],
            "Error: Invalid value for '--select-by': 'oops' is not one of 'val_rmse', 'test_rmse'.",
        ),
        (
            "register",
            ["--model-name", "bad/name"],
            "Error: Invalid value for '--model-name': invalid model name 'bad/name'",
        ),
    ],
)
def test_main_rejects_a_bad_step_parameter_as_the_step_does(store, step, args, message):
    runner = CliRunner()
    by_step = runner.invoke(STEP_COMMANDS[step], args)
    by_main = runner.invoke(pipeline.main, args)
    assert by_step.exit_code != 0
    lines = by_step.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], by_step.output
    assert (by_main.exit_code, by_main.output) == (by_step.exit_code, by_step.output)
    assert store.runs() == []  # neither started a run


def test_main_has_every_pipeline_option_of_each_step():
    main_options = {p.name: p for p in pipeline.main.params}
    for step, command in STEP_COMMANDS.items():
        for option in options.STEP_OPTIONS[step]():
            step_option = next(p for p in command.params if p.name == option.name)
            assert main_options[option.name].to_info_dict() == step_option.to_info_dict()


def test_parsed_values_go_back_to_the_strings_mlflow_stores():
    ctx = pipeline.main.make_context("main", ["--raw-data-path", "/data/tlc/", "--top-n", "3"])
    params = options.step_params(ctx.params)
    assert params["preprocess"] == {
        "raw_data_path": "/data/tlc",
        "color": "green",
        "train_month": "2023-01",
        "val_month": "2023-02",
        "test_month": "2023-03",
    }
    assert params["hpo"] == {
        "model": "xgboost",
        "max_evals": "50",
        "seed": "42",
        "num_boost_round": "1000",
        "early_stopping_rounds": "50",
        "prune": "true",
        "spark_master": "",
        "parallelism": "",
    }
    assert params["train_best"] == {"top_n": "3", "autolog": "false"}
    assert params["register"] == {"model_name": "nyc-taxi-regressor", "select_by": "val_rmse"}
