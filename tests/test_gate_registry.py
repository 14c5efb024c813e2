"""The promotion gate on a real registry: an exact tie keeps the champion, an unfair month is
refused, and two registers started at once end with the better model as champion, also when
they are forced to read the champion before either writes it (the interleaving that lost the
better model before the champion lock)."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest

from steps import register
from steps.artifacts import load_preprocessed
from steps.register import GATE_PAUSE_ENV, run_gate, version_tags
from steps.registry import CHAMPION, LOCK_SUFFIX
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _ambient_store(shared_tracking):
    """In-process loads (``models:/...``) read the same store as the `mlflow run`s."""
    mlflow.set_tracking_uri(shared_tracking.uri)
    yield
    mlflow.set_tracking_uri(None)


def best_candidate(tracking, train_run_id):
    (best,) = tracking.runs(
        f"tags.mlflow.parentRunId = '{train_run_id}' and tags.candidate_rank = '1'"
    )
    return best


@pytest.fixture(scope="module")
def same_model_twice(shared_tracking, train_run):
    """Versions 1 and 2 of ``tie`` hold one candidate's model, with its real tags; version 3
    too, but tagged as trained on the test month. Returns (name, versions, test frame)."""
    mlflow.set_tracking_uri(shared_tracking.uri)  # set up before the autouse fixture
    client, name = shared_tracking.client, "tie"
    candidate = best_candidate(shared_tracking, train_run)
    train = client.get_run(train_run)
    preprocess = client.get_run(train.data.tags["preprocess_run_id"])
    tags = version_tags(candidate, train, preprocess)
    client.create_registered_model(name)
    uri = candidate.data.tags["model_uri"]
    leaky = {**tags, "data.train.month": tags["data.test.month"]}
    versions = [
        client.create_model_version(
            name, uri, run_id=candidate.info.run_id, tags=t, model_id=uri.removeprefix("models:/")
        )
        for t in (tags, tags, leaky)
    ]
    _, frames = load_preprocessed(preprocess.info.run_id, ("test",))
    return name, versions, frames["test"]


def test_an_exact_tie_keeps_the_champion(shared_tracking, same_model_twice):
    client = shared_tracking.client
    name, (v1, v2, _), test = same_model_twice
    client.set_registered_model_alias(name, CHAMPION, "1")
    rmse = register.test_rmse_of(f"models:/{name}/2", test)
    outcome = run_gate(client, name, v2, rmse, test, "tie-run")
    assert outcome.champion_rmse == rmse  # the same model: the same number to the last bit
    assert not outcome.verdict.promote
    assert outcome.verdict.reason == (
        f"not promoted: test_rmse {rmse!r} >= champion version 1's {rmse!r}"
    )
    assert outcome.champion == "1"
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
    assert "promoted_at" not in client.get_model_version(name, "2").tags


def test_a_champion_trained_on_the_test_month_is_not_compared(shared_tracking, same_model_twice):
    client = shared_tracking.client
    name, (_, v2, v3), test = same_model_twice
    month = v2.tags["data.test.month"]
    client.set_registered_model_alias(name, CHAMPION, "3")
    outcome = run_gate(client, name, v2, 1.0, test, "refused-run")  # 1.0 would win
    assert not outcome.verdict.promote
    assert outcome.verdict.reason == (
        f"refused: comparing on test month {month} is not fair: it is champion version 3's "
        f"train month (train {month}, val {v3.tags['data.val.month']}); @champion unchanged"
    )
    assert outcome.champion_rmse is None and outcome.champion == "3"
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "3"


def start_register(tracking, train_run_id: str, name: str, pause: float) -> subprocess.Popen:
    env = tracking.env()
    if pause:
        env[GATE_PAUSE_ENV] = str(pause)
    cmd = [sys.executable, "-m", "steps.register", "--train-run-id", train_run_id]
    return subprocess.Popen(
        [*cmd, "--model-name", name],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    ("better_pause", "worse_pause"),
    [(4, 12), (0, 0)],
    ids=["forced-both-read-before-either-writes", "unforced"],
)
def test_concurrent_registers_end_with_the_better_champion(
    shared_tracking,
    train_run,
    worse_train_run,
    better_pause,
    worse_pause,
):
    """Both start at once into an empty model. Forced: each pauses between reading the
    champion (none) and writing it, the worse one longer, so without the lock both read "no
    champion" and the worse one writes last."""
    client, name = shared_tracking.client, f"concurrent-{better_pause}-{worse_pause}"
    better = start_register(shared_tracking, train_run, name, better_pause)
    worse = start_register(shared_tracking, worse_train_run, name, worse_pause)
    outputs = {}
    for label, proc in (("better", better), ("worse", worse)):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        outputs[label] = out.strip().splitlines()[-1]

    runs = {
        r.data.tags["candidate_run_id"]: r
        for r in shared_tracking.runs(f"tags.registered_model = '{name}'")
    }
    better_version = runs[best_candidate(shared_tracking, train_run).info.run_id]
    worse_version = runs[best_candidate(shared_tracking, worse_train_run).info.run_id]
    b = better_version.data.tags["registered_version"]
    w = worse_version.data.tags["registered_version"]
    assert (
        better_version.data.metrics["candidate_test_rmse"]
        < (worse_version.data.metrics["candidate_test_rmse"])
    )
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == b, outputs
    assert outputs["better"].endswith(f"@champion = version {b}") or (
        outputs["worse"].endswith(f"@champion = version {b}")
    ), outputs
    # exactly one of them saw the other: whoever held the lock second compared with the first
    second = [r for r in (better_version, worse_version) if "champion_test_rmse" in r.data.metrics]
    assert len(second) == 1, outputs
    assert {b, w} == {"1", "2"}
    assert client.search_registered_models(f"name = '{name}{LOCK_SUFFIX}'") == []
