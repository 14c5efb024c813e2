"""Moves of ``@champion`` say what happened: the register decision and its printed line, and
rollback (older: rolled back; newer: moved forward; same: kept). Pure decisions, then the
rollback command in process on a real SQLite registry."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from steps import rollback
from steps.register import RegisterResult, decide_champion, outcome_line
from steps.rollback import decide_move


def test_register_decisions():
    first = decide_champion("1", 5.5, None, None)
    assert first.promote and first.reason == "promoted: there was no champion (test_rmse 5.5)"
    same = decide_champion("2", 5.25, "2", None)
    assert not same.promote
    assert same.reason == (
        "kept: version 2 is already the champion (test_rmse 5.25; nothing to compare it with)"
    )
    better = decide_champion("3", 5.0, "2", 5.25)
    assert better.promote and better.reason == "promoted: test_rmse 5.0 < champion version 2's 5.25"
    worse = decide_champion("3", 5.25, "2", 5.25)  # a tie keeps the champion
    assert not worse.promote
    assert worse.reason == "not promoted: test_rmse 5.25 >= champion version 2's 5.25"


def test_register_line_when_the_version_is_already_champion():
    verdict = decide_champion("2", 5.25, "2", None)
    result = RegisterResult("r", "m", "2", verdict.reason, 5.25, None, "2")
    line = outcome_line(result)
    assert line == (
        "m version 2 (@challenger): kept: version 2 is already the champion (test_rmse 5.25; "
        "nothing to compare it with); @champion = version 2"
    )
    assert "none" not in line


@pytest.mark.parametrize(
    ("current", "target", "moves", "decision", "promotion_reason"),
    [
        ("3", "1", True, "rolled back: champion 3 -> 1 (drift)", "rollback: drift"),
        (
            "1",
            "3",
            True,
            "moved forward: champion 1 -> 3, a newer version (drift)",
            "move forward: drift",
        ),
        ("2", "2", False, "kept: version 2 is already the champion", None),
        ("9", "10", True, "moved forward: champion 9 -> 10, a newer version (drift)", None),
        (None, "2", True, "set: there was no champion; champion -> 2 (drift)", "set: drift"),
    ],
)
def test_rollback_decision(current, target, moves, decision, promotion_reason):
    move = decide_move(current, target, "drift")
    assert (move.moves, move.decision) == (moves, decision)
    if promotion_reason:
        assert move.promotion_reason == promotion_reason


def test_rollback_command_says_what_happened(tracking, tmp_path):
    client, name = tracking.client, "moves"
    client.create_registered_model(name)
    for i in range(3):
        client.create_model_version(name, source=str(tmp_path / f"model-{i}"))
    client.set_registered_model_alias(name, "champion", "2")
    runner = CliRunner()

    def move(version, reason="why"):
        args = ["--model-name", name, "--version", version, "--reason", reason]
        result = runner.invoke(rollback.main, args)
        assert result.exit_code == 0, result.output
        return result.output.strip().splitlines()[-1]

    assert move("1", "v2 drifts") == f"{name}: rolled back: champion 2 -> 1 (v2 drifts)"
    assert client.get_model_version(name, "1").tags["promotion_reason"] == "rollback: v2 drifts"
    assert client.get_model_version(name, "2").tags["replaced_by_version"] == "1"
    assert move("3", "v3 fixed") == (
        f"{name}: moved forward: champion 1 -> 3, a newer version (v3 fixed)"
    )
    assert client.get_model_version(name, "3").tags["promotion_reason"] == "move forward: v3 fixed"
    assert move("3") == f"{name}: kept: version 3 is already the champion"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"

    runs = tracking.runs("tags.step = 'rollback'")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.info.run_name for r in runs} == {f"rollback {name} to {v}" for v in "133"}
    assert {r.data.tags["decision"].split(":")[0] for r in runs} == {
        "rolled back",
        "moved forward",
        "kept",
    }


def test_rollback_bad_input_is_one_line_and_starts_no_run(tracking):
    runner = CliRunner()
    result = runner.invoke(rollback.main, ["--version", "1", "--reason", "x"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: model 'nyc-taxi-regressor' has no version '1'"
    result = runner.invoke(
        rollback.main, ["--model-name", "bad/name", "--version", "1", "--reason", "x"]
    )
    assert result.exit_code == 2
    assert result.output.startswith("Error: Invalid value for '--model-name': invalid model name")
    assert tracking.runs() == []
