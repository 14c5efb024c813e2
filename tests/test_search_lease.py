"""One process at a time runs a search: ``claim_verdict`` (pure) and ``SearchLease`` on a real
SQLite store, with heartbeats and claims written as another process would write them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

from steps import hpo
from steps.errors import UserError
from steps.hpo import (
    CLAIM_TAG_PREFIX,
    HEARTBEAT_TAG,
    STALE_SECONDS_ENV,
    Claim,
    SearchLease,
    SearchTaken,
    claim_verdict,
    stale_seconds,
    this_process,
)
from tests.conftest import REPO

NOW = 1_000_000.0
ME = Claim("me", NOW, "h", 1)


def verdict(heartbeat=None, claims=(), dead=frozenset(), stale=90.0):
    return claim_verdict("S", ME, heartbeat, [ME, *claims], NOW, stale, frozenset(dead))


def test_alone_proceeds():
    assert verdict()[0] == "proceed"
    assert verdict(heartbeat=Claim("me", NOW - 1))[0] == "proceed"  # my own heartbeat


def test_live_heartbeat_refuses_with_who_and_how_long():
    kind, reason = verdict(heartbeat=Claim("orig", NOW - 12, "box", 77))
    assert kind == "refuse"
    assert reason.startswith("search S is being run by orig (host box, pid 77, heartbeat 12 s ago)")
    assert "90 s old" in reason


def test_stale_or_dead_heartbeat_is_ignored():
    assert verdict(heartbeat=Claim("orig", NOW - 90))[0] == "proceed"
    assert verdict(heartbeat=Claim("orig", NOW - 5), stale=5)[0] == "proceed"
    assert verdict(heartbeat=Claim("orig", NOW - 1), dead={"orig"})[0] == "proceed"


def test_earlier_claim_wins_later_waits():
    kind, reason = verdict(claims=[Claim("other", NOW - 2)])
    assert kind == "refuse" and "being resumed by other (claimed 2 s ago" in reason
    assert verdict(claims=[Claim("other", NOW + 1)])[0] == "wait"
    # equal times: the smaller run ID is earlier
    assert verdict(claims=[Claim("a-other", NOW)])[0] == "refuse"
    assert verdict(claims=[Claim("z-other", NOW)])[0] == "wait"


def test_stale_or_dead_claims_are_ignored():
    assert verdict(claims=[Claim("other", NOW - 100)])[0] == "proceed"
    assert verdict(claims=[Claim("other", NOW - 1)], dead={"other"})[0] == "proceed"


def test_of_two_claimants_at_most_one_proceeds():
    """Every interleaving of two write-then-read claimants: at most one proceeds; whoever waits
    sees the other proceed (its heartbeat) or withdraw."""
    a, b = Claim("a", NOW), Claim("b", NOW + 0.5)
    for a_sees_b, b_sees_a in [(True, True), (True, False), (False, True)]:
        va = claim_verdict("S", a, None, [a, b] if a_sees_b else [a], NOW + 1, 90)[0]
        vb = claim_verdict("S", b, None, [a, b] if b_sees_a else [b], NOW + 1, 90)[0]
        assert (va, vb).count("proceed") <= 1, (a_sees_b, b_sees_a)
        assert "refuse" in (va, vb) or "proceed" in (va, vb)


def test_stale_seconds_from_the_environment(monkeypatch):
    monkeypatch.delenv(STALE_SECONDS_ENV, raising=False)
    assert stale_seconds() == 90.0
    monkeypatch.setenv(STALE_SECONDS_ENV, "2.5")
    assert stale_seconds() == 2.5
    for bad in ("soon", "0"):
        monkeypatch.setenv(STALE_SECONDS_ENV, bad)
        with pytest.raises(UserError, match=STALE_SECONDS_ENV):
            stale_seconds()


@pytest.fixture
def parent(tracking) -> str:
    client = MlflowClient()
    run = client.create_run(tracking.experiment_id)
    return run.info.run_id


def set_heartbeat(parent, claim: Claim):
    MlflowClient().set_tag(parent, HEARTBEAT_TAG, claim.to_json())


def test_claim_refused_while_another_host_beats(parent):
    set_heartbeat(parent, Claim("orig", time.time() - 3, "elsewhere", 1))
    with pytest.raises(SearchTaken, match="being run by orig .host elsewhere"):
        SearchLease(parent, "resumer", 90).claim()
    assert not any(k.startswith(CLAIM_TAG_PREFIX) for k in MlflowClient().get_run(parent).data.tags)


def test_claim_after_staleness_then_release(parent):
    set_heartbeat(parent, Claim("orig", time.time() - 3, "elsewhere", 1))
    lease = SearchLease(parent, "resumer", 2)
    lease.claim()
    with lease:
        tags = MlflowClient().get_run(parent).data.tags
        assert Claim.from_json(tags[HEARTBEAT_TAG]).run_id == "resumer"
        assert CLAIM_TAG_PREFIX + "resumer" in tags
        with pytest.raises(SearchTaken, match="being run by resumer"):
            SearchLease(parent, "third", 2).claim()
    tags = MlflowClient().get_run(parent).data.tags
    assert HEARTBEAT_TAG not in tags and CLAIM_TAG_PREFIX + "resumer" not in tags
    SearchLease(parent, "third", 2).claim()  # released: free at once


def test_heartbeat_of_a_dead_local_process_is_dead_at_once(parent):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    set_heartbeat(parent, replace(this_process("orig"), pid=gone.pid))
    SearchLease(parent, "resumer", 90).claim()
    # a live local process (this one) is respected, and so is a pid of another namespace
    set_heartbeat(parent, this_process("orig"))
    with pytest.raises(SearchTaken, match="being run by orig"):
        SearchLease(parent, "other", 90).claim()
    set_heartbeat(parent, replace(this_process("orig"), pid=gone.pid, pid_ns="pid:[1]"))
    with pytest.raises(SearchTaken, match="being run by orig"):
        SearchLease(parent, "other", 90).claim()


def set_claim(parent, claim: Claim):
    MlflowClient().set_tag(parent, CLAIM_TAG_PREFIX + claim.run_id, claim.to_json())


def test_an_earlier_live_claim_wins(parent):
    set_claim(parent, replace(this_process("first"), time=time.time() - 1))
    with pytest.raises(SearchTaken, match="is being resumed by first .claimed 1 s ago"):
        SearchLease(parent, "second", 90).claim()
    tags = MlflowClient().get_run(parent).data.tags
    assert CLAIM_TAG_PREFIX + "second" not in tags  # withdrawn


def test_the_earliest_claimant_waits_for_later_ones_to_withdraw(parent, monkeypatch):
    later = replace(this_process("later"), time=time.time() + 1)
    set_claim(parent, later)
    withdraw = threading.Timer(
        1.5, lambda: MlflowClient().delete_tag(parent, CLAIM_TAG_PREFIX + "later")
    )
    withdraw.start()
    lease = SearchLease(parent, "first", 90)
    lease.claim()  # waited, then proceeded
    withdraw.join()
    assert Claim.from_json(MlflowClient().get_run(parent).data.tags[HEARTBEAT_TAG]).run_id == (
        "first"
    )
    for key in (HEARTBEAT_TAG, CLAIM_TAG_PREFIX + "first"):  # as if first had ended
        MlflowClient().delete_tag(parent, key)
    set_claim(parent, replace(later, time=time.time() + 1))  # one that never withdraws
    monkeypatch.setattr(hpo, "CLAIM_WAIT_SECONDS", 1.0)
    with pytest.raises(SearchTaken, match="claimed by other resumers at the same time"):
        SearchLease(parent, "another", 90).claim()
    assert CLAIM_TAG_PREFIX + "another" not in MlflowClient().get_run(parent).data.tags


def test_background_heartbeat_keeps_the_search_alive(parent):
    lease = SearchLease(parent, "owner", 2)  # beats every 0.5 s
    with lease:
        time.sleep(3)  # longer than the staleness: only the thread keeps it fresh
        tags = MlflowClient().get_run(parent).data.tags
        assert time.time() - Claim.from_json(tags[HEARTBEAT_TAG]).time < 2


CLAIMANT = """
import sys, time
from steps.hpo import SearchLease, SearchTaken
lease = SearchLease(sys.argv[1], sys.argv[2], 90)
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # start together
try:
    lease.claim()
except SearchTaken as exc:
    print("refused:", exc)
    sys.exit(3)
with lease:
    print("proceed")
    time.sleep(3)
"""


def test_of_three_claimants_at_once_exactly_one_proceeds(tracking, parent):
    """Three processes claim the same search at the same instant on one SQLite store."""
    start = time.time() + 6  # after the imports
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMANT, parent, f"claimant-{i}", str(start)],
            cwd=REPO,
            env=tracking.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3, 3], outputs
    refusals = [out for out, _ in outputs if out.startswith("refused:")]
    assert all(f"search {parent} is being r" in out for out in refusals), refusals
    tags = MlflowClient().get_run(parent).data.tags
    assert not [k for k in tags if k.startswith(("hpo.claim.", HEARTBEAT_TAG))]


def test_a_trial_number_already_started_by_another_process_stops_the_search(tracking, parent):
    """The second line: trial 3 already started (running, or finished) by another process."""
    client = MlflowClient()

    def trial_run(status):
        run = client.create_run(
            tracking.experiment_id,
            tags={"mlflow.parentRunId": parent, "trial_id": "3"},
        )
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    killed = trial_run("KILLED")  # a crashed process's trial 3 does not count
    logger = hpo.TrialLogger(parent, tracking.experiment_id, "lasso")
    mine = client.create_run(tracking.experiment_id, tags={"mlflow.parentRunId": parent})
    logger._check_no_rival(3, mine)
    assert client.get_run(mine.info.run_id).info.status == "RUNNING"

    other = trial_run("RUNNING")
    time.sleep(0.01)
    with pytest.raises(SearchTaken, match=f"trial 3 of search {parent} was already started by"):
        logger.run_trial(3, {}, {}, None, None, None)
    children = client.search_runs(
        [tracking.experiment_id], f"tags.mlflow.parentRunId = '{parent}' and tags.trial_id = '3'"
    )
    statuses = {r.info.run_id: r.info.status for r in children}
    assert statuses[killed] == "KILLED" and statuses[other] == "RUNNING"
    assert sorted(statuses.values()) == ["KILLED", "KILLED", "RUNNING"]  # ours stopped
