"""The step cache's decision (``reuse_verdict``, a pure function) and what every step run
records for it (``source.clean``, ``env.digest``), checked on real throw-away git checkouts."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from steps.main import CacheKey, cache_commit, cache_key, reuse_verdict
from steps.tracking import (
    CLEAN,
    DIRTY,
    ENV_DIGEST_TAG,
    SOURCE_CLEAN_TAG,
    UNKNOWN,
    env_digest,
    env_files,
    source_differs,
    source_state,
    step_run,
)
from tests.conftest import REPO

COMMIT = "a" * 40
ENV = "e" * 64
KEY = CacheKey(
    step="hpo",
    params={"preprocess_run_id": "p1", "seed": "42"},
    commit=COMMIT,
    env_digest=ENV,
    inputs={},
)
TAGS = {
    "mlflow.project.entryPoint": "hpo",
    "mlflow.source.git.commit": COMMIT,
    SOURCE_CLEAN_TAG: CLEAN,
    ENV_DIGEST_TAG: ENV,
}
PARAMS = {"preprocess_run_id": "p1", "seed": "42", "other": "x"}


def test_a_clean_matching_run_is_reused():
    verdict = reuse_verdict(KEY, "FINISHED", PARAMS, TAGS)
    assert verdict.reusable, verdict.reason


@pytest.mark.parametrize(
    ("clean", "reason"),
    [
        (DIRTY, "uncommitted changes"),
        (UNKNOWN, "could not tell"),
        (None, "does not record source.clean"),
        ("yes", "source.clean is 'yes'"),
    ],
)
def test_a_run_not_made_from_a_clean_tree_is_never_reused(clean, reason):
    tags = {k: v for k, v in TAGS.items() if k != SOURCE_CLEAN_TAG}
    if clean is not None:
        tags[SOURCE_CLEAN_TAG] = clean
    verdict = reuse_verdict(KEY, "FINISHED", PARAMS, tags)
    assert not verdict.reusable
    assert reason in verdict.reason


def test_another_environment_definition_is_not_reused():
    verdict = reuse_verdict(KEY, "FINISHED", PARAMS, {**TAGS, ENV_DIGEST_TAG: "f" * 64})
    assert (verdict.reusable, verdict.reason) == (
        False,
        "it was made with another environment definition",
    )
    missing = {k: v for k, v in TAGS.items() if k != ENV_DIGEST_TAG}
    assert not reuse_verdict(KEY, "FINISHED", PARAMS, missing).reusable


def test_an_unknown_environment_now_matches_nothing():
    key = replace(KEY, env_digest=UNKNOWN)
    verdict = reuse_verdict(key, "FINISHED", PARAMS, {**TAGS, ENV_DIGEST_TAG: UNKNOWN})
    assert not verdict.reusable
    assert "cannot be read" in verdict.reason


@pytest.mark.parametrize(
    ("status", "params", "tags", "reason"),
    [
        ("FAILED", PARAMS, TAGS, "FAILED, not FINISHED"),
        ("FINISHED", PARAMS, {**TAGS, "mlflow.project.entryPoint": "train_best"}, "entry point"),
        ("FINISHED", PARAMS, {**TAGS, "mlflow.source.git.commit": "b" * 40}, "another commit"),
        ("FINISHED", {**PARAMS, "seed": "7"}, TAGS, "parameter seed is '7', not '42'"),
        ("FINISHED", {"seed": "42"}, TAGS, "parameter preprocess_run_id is None"),
    ],
)
def test_what_matched_before_still_must_match(status, params, tags, reason):
    verdict = reuse_verdict(KEY, status, params, tags)
    assert not verdict.reusable
    assert reason in verdict.reason


def test_preprocess_matches_its_inputs_and_needs_them_known():
    key = replace(KEY, step="preprocess", params={}, inputs={"data.train.sha256": "d1"})
    tags = {**TAGS, "mlflow.project.entryPoint": "preprocess"}
    assert reuse_verdict(key, "FINISHED", {}, {**tags, "data.train.sha256": "d1"}).reusable
    other = reuse_verdict(key, "FINISHED", {}, {**tags, "data.train.sha256": "d2"})
    assert (other.reusable, other.reason) == (False, "its input data.train.sha256 differs")
    unknown = reuse_verdict(replace(key, inputs=None), "FINISHED", {}, tags)
    assert not unknown.reusable
    assert "raw file is missing" in unknown.reason


def test_register_is_never_reused():
    key = replace(KEY, step="register")
    tags = {**TAGS, "mlflow.project.entryPoint": "register"}
    verdict = reuse_verdict(key, "FINISHED", PARAMS, tags)
    assert not verdict.reusable
    assert "reads and changes the registry" in verdict.reason


def test_cache_key_stores_params_as_mlflow_does(tmp_path):
    key = cache_key("hpo", {"preprocess_run_id": "p1", "resume_run_id": ""}, COMMIT, ENV)
    assert key.params == {"preprocess_run_id": "p1", "resume_run_id": "''"}
    assert key.inputs == {}
    missing = {"raw_data_path": str(tmp_path), "color": "green"}
    months = {f"{s}_month": "2023-01" for s in ("train", "val", "test")}
    assert cache_key("preprocess", missing | months, COMMIT, ENV).inputs is None


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A committed project with this repository's environment definition."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("python_env.yaml", "requirements.lock", "requirements-dev.lock", "README.md"):
        shutil.copy(REPO / name, project / name)
    git(project, "init", "--quiet")
    git(project, "add", ".")
    git(project, "commit", "--quiet", "-m", "init")
    return project


def test_source_state_tracks_edits_to_tracked_files_only(checkout):
    assert source_state(checkout).clean == CLEAN
    assert cache_commit(checkout)[0] == git(checkout, "rev-parse", "HEAD")
    (checkout / "notes.txt").write_text("untracked: not code that ran from HEAD\n")
    assert source_state(checkout).clean == CLEAN
    readme = checkout / "README.md"
    readme.write_text(readme.read_text() + "\nlocal edit\n")
    state = source_state(checkout)
    assert (state.clean, state.changed) == (DIRTY, ("README.md",))
    commit, why = cache_commit(checkout)
    assert commit is None
    assert "uncommitted changes (README.md)" in why
    git(checkout, "checkout", "README.md")
    assert source_state(checkout).clean == CLEAN


def test_source_state_is_unknown_outside_a_checkout_or_without_git(tmp_path, checkout, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    state = source_state(plain)
    assert state.clean == UNKNOWN
    assert "not a git checkout" in state.reason
    assert cache_commit(plain)[0] is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    state = source_state(checkout)
    assert state.clean == UNKNOWN
    assert "git could not be run" in state.reason


def test_env_digest_covers_python_env_and_the_runtime_lock_only(checkout):
    files = env_files(checkout)
    assert [f.name for f in files] == ["python_env.yaml", "requirements.lock"]
    before = env_digest(checkout)
    assert len(before) == 64
    assert before == env_digest(REPO)  # the same files, elsewhere

    dev_lock = checkout / "requirements-dev.lock"
    dev_lock.write_text(dev_lock.read_text() + "# a test tool changed\n")
    assert env_digest(checkout) == before  # mlflow run never builds the dev lock

    definition = checkout / "python_env.yaml"
    definition.write_text(definition.read_text() + "# a comment\n")
    assert env_digest(checkout) not in (before, UNKNOWN)
    git(checkout, "checkout", "python_env.yaml")
    lock = checkout / "requirements.lock"
    lock.write_text(lock.read_text().replace("==", "===", 1))
    assert env_digest(checkout) not in (before, UNKNOWN)
    lock.unlink()
    assert env_digest(checkout) == UNKNOWN
    (checkout / "python_env.yaml").unlink()
    assert env_digest(checkout) == UNKNOWN


def test_every_step_run_records_its_source_and_environment(tracking):
    with step_run("preprocess") as run:
        pass
    tags = tracking.client.get_run(run.info.run_id).data.tags
    assert tags[SOURCE_CLEAN_TAG] == source_state(REPO).clean
    assert tags[ENV_DIGEST_TAG] == env_digest(REPO)


def test_source_differs_names_what_changed():
    clean = {"mlflow.source.git.commit": "a" * 40, "source.clean": "true", "env.digest": "e1"}
    assert source_differs(dict(clean), clean) is None
    edited = {**clean, "source.clean": "false"}
    assert "source.clean 'true' -> 'false'" in source_differs(edited, clean)
    other = {**clean, "mlflow.source.git.commit": "b" * 40, "env.digest": "e2"}
    why = source_differs(other, clean)
    assert "mlflow.source.git.commit" in why and "env.digest 'e1' -> 'e2'" in why
