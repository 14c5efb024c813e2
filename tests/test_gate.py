"""The promotion gate's rules, fast: fair months (pure), ties to the ulp (pure), the champion
lock on a real SQLite registry, and registry errors that are not "not found" surfacing."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps.errors import UserError
from steps.register import TrainedOn, decide_champion, existing_version, unfair_comparison
from steps.registry import LOCK_SUFFIX, champion_lock, champion_version

CHALLENGER = TrainedOn("challenger version 3", "2023-01", "2023-02")


def test_fair_months_compare():
    champion = TrainedOn("champion version 2", "2022-01", "2022-02")
    assert unfair_comparison("2023-03", [CHALLENGER, champion]) is None
    assert unfair_comparison("2023-03", [CHALLENGER]) is None  # no champion yet


def test_test_month_in_the_champions_training_is_refused():
    champion = TrainedOn("champion version 2", "2023-03", "2023-04")
    assert unfair_comparison("2023-03", [CHALLENGER, champion]) == (
        "refused: comparing on test month 2023-03 is not fair: it is champion version 2's "
        "train month (train 2023-03, val 2023-04); @champion unchanged"
    )
    champion = TrainedOn("champion version 2", "2023-02", "2023-03")
    assert unfair_comparison("2023-03", [CHALLENGER, champion]) == (
        "refused: comparing on test month 2023-03 is not fair: it is champion version 2's "
        "val month (train 2023-02, val 2023-03); @champion unchanged"
    )


def test_test_month_in_the_challengers_own_months_is_refused_and_every_overlap_named():
    challenger = TrainedOn("challenger version 3", "2023-03", "2023-03")
    champion = TrainedOn("champion version 2", "2023-01", "2023-03")
    assert unfair_comparison("2023-03", [challenger, champion]) == (
        "refused: comparing on test month 2023-03 is not fair: it is challenger version 3's "
        "train and val month (train 2023-03, val 2023-03); it is champion version 2's val "
        "month (train 2023-01, val 2023-03); @champion unchanged"
    )
    # with no champion there is nothing to compare, but a leaky challenger is not promoted
    assert unfair_comparison("2023-03", [challenger]).startswith("refused: ")


def test_unknown_months_cannot_be_shown_fair():
    hand_made = TrainedOn("champion version 1", "unknown", "unknown")
    assert unfair_comparison("2023-03", [CHALLENGER, hand_made]) == (
        "refused: comparing on test month 2023-03 is not fair: champion version 1 has no "
        "data.train.month tag, so it may have seen it (tag the version with the months it saw); "
        "@champion unchanged"
    )
    assert unfair_comparison("unknown", [CHALLENGER]) == (
        "refused: comparing on test month unknown is not fair: this run's test month is "
        "unknown (no data.test.month tag); @champion unchanged"
    )


def test_an_exact_tie_keeps_the_champion():
    tie = decide_champion("3", 5.25, "2", 5.25)
    assert not tie.promote
    assert tie.reason == "not promoted: test_rmse 5.25 >= champion version 2's 5.25"


def test_a_near_tie_goes_by_one_ulp():
    champion_rmse = 5.413872913
    below = float(np.nextafter(champion_rmse, 0.0))
    above = float(np.nextafter(champion_rmse, np.inf))
    assert below < champion_rmse < above
    lower = decide_champion("3", below, "2", champion_rmse)
    assert lower.promote
    # the reason prints both numbers in full (repr), so the one-ulp difference shows
    assert lower.reason == f"promoted: test_rmse {below!r} < champion version 2's {champion_rmse!r}"
    assert repr(below) != repr(champion_rmse)
    assert not decide_champion("3", above, "2", champion_rmse).promote


def test_a_live_holder_is_waited_for(tracking):
    client, name = tracking.client, "waited"
    order = []
    inside = threading.Event()
    holder_run = client.create_run(tracking.experiment_id)  # RUNNING

    def holder():
        with champion_lock(client, name, holder_run.info.run_id):
            inside.set()
            time.sleep(1.5)
            order.append("a out")

    thread = threading.Thread(target=holder)
    thread.start()
    assert inside.wait(30)
    with champion_lock(client, name, "run-b"):
        order.append("b in")
    thread.join()
    assert order == ["a out", "b in"]
    assert client.search_registered_models(f"name = '{name}{LOCK_SUFFIX}'") == []


def test_a_dead_holder_is_broken_and_recorded(tracking):
    client, name = tracking.client, "dead"
    dead = client.create_run(tracking.experiment_id)
    client.set_terminated(dead.info.run_id, "KILLED")
    lock = f"{name}{LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={"owner_run_id": dead.info.run_id})
    with champion_lock(client, name, "run-b", wait_s=30):
        assert client.get_registered_model(lock).tags["owner_run_id"] == "run-b"
    assert client.get_registered_model(f"{lock}.broken-{dead.info.run_id}")
    assert client.search_registered_models(f"name = '{lock}'") == []


def test_a_holder_too_long_is_broken_and_a_waiter_gives_up(tracking):
    client, name = tracking.client, "stuck"
    live = client.create_run(tracking.experiment_id)  # RUNNING, but its process is gone
    lock = f"{name}{LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={"owner_run_id": live.info.run_id})
    waiting = champion_lock(client, name, "run-b", wait_s=1, stale_s=60)
    with pytest.raises(UserError, match=rf"waited 1 s for '{lock}', held by run "), waiting:
        pass
    with champion_lock(client, name, "run-b", wait_s=30, stale_s=1):
        assert client.get_registered_model(lock).tags["owner_run_id"] == "run-b"
    assert client.get_registered_model(f"{lock}.broken-{live.info.run_id}")


def test_not_found_is_none_but_real_errors_surface(tracking, monkeypatch):
    client = tracking.client
    candidate = SimpleNamespace(
        info=SimpleNamespace(run_id="r1"), data=SimpleNamespace(tags={"model_uri": "models:/m-1"})
    )
    assert champion_version(client, "no-such-model") is None
    client.create_registered_model("no-alias")
    assert champion_version(client, "no-alias") is None
    assert existing_version(client, "no-such-model", candidate) is None

    # a registry that cannot be reached is an error, not "no version" / "no champion"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    down = MlflowClient(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    with pytest.raises(MlflowException):
        existing_version(down, "m", candidate)
    with pytest.raises(MlflowException):
        champion_version(down, "m")
