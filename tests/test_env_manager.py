"""A fresh clone runs in an environment that MLflow builds from python_env.yaml and the lock
(no shared cache: MLFLOW_ENV_ROOT points at an empty folder), with uv and with virtualenv."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO, assert_ok, make_tracking, mlflow_run

pytestmark = pytest.mark.envmanager


def locked_version(package: str) -> str:
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.split("==")[1].split()[0]
    raise AssertionError(f"{package} not in requirements.lock")


@pytest.mark.parametrize("env_manager", ["uv", "virtualenv"])
def test_fresh_clone_builds_its_environment_and_runs(tmp_path, tlc_dir, env_manager):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    tracking = make_tracking(tmp_path / "tracking")
    env_root = tmp_path / "envs"
    extra_env = {"MLFLOW_ENV_ROOT": str(env_root)}

    pre = assert_ok(
        mlflow_run(
            tracking,
            "preprocess",
            {"raw_data_path": tlc_dir},
            project=clone,
            env_manager=env_manager,
            extra_env=extra_env,
        )
    )
    hpo = assert_ok(
        mlflow_run(
            tracking,
            "hpo",
            {"max_evals": 1, "num_boost_round": 5},
            project=clone,
            env_manager=env_manager,
            extra_env=extra_env,
        )
    )
    for run_id in (pre, hpo):
        tags = tracking.client.get_run(run_id).data.tags
        assert tags["mlflow.source.git.commit"] == commit
        assert tags["mlflow.project.env"] == env_manager

    (env_dir,) = [p for p in env_root.iterdir() if p.is_dir() and (p / "bin").exists()]
    version = subprocess.run(
        [
            env_dir / "bin" / "python",
            "-c",
            "import platform, importlib.metadata as m; "
            "print(platform.python_version(), m.version('xgboost-cpu'), m.version('mlflow'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert version == ["3.11.7", locked_version("xgboost-cpu"), locked_version("mlflow")]
