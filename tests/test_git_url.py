"""`mlflow run <git URL> -v <commit> -e <step>` against a real git server on loopback
(`git daemon` serving bare clones), with the project at the root and in a subdirectory."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import REPO, assert_ok, free_port, git, mlflow_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def git_server(tmp_path_factory):
    """Bare repositories under a folder, served over git:// on 127.0.0.1."""
    base = tmp_path_factory.mktemp("git-served")
    commit = git("rev-parse", "HEAD", cwd=REPO)
    git("clone", "--quiet", "--bare", str(REPO), str(base / "nyc-taxi-duration.git"))

    # the same project one level down, in a repository of its own
    work = tmp_path_factory.mktemp("monorepo")
    git("init", "--quiet", "-b", "main", str(work))
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "--prefix=project/", "HEAD"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    git("add", "-A", cwd=work)
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "--quiet",
        "-m",
        "project in a subdirectory",
        cwd=work,
    )
    sub_commit = git("rev-parse", "HEAD", cwd=work)
    git("clone", "--quiet", "--bare", str(work), str(base / "monorepo.git"))

    port = free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"git://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while (
        subprocess.run(
            ["git", "ls-remote", f"{url}/nyc-taxi-duration.git"], capture_output=True
        ).returncode
        != 0
    ):
        assert daemon.poll() is None and time.monotonic() < deadline, "git daemon did not start"
        time.sleep(0.2)
    yield {"url": url, "commit": commit, "sub_commit": sub_commit}
    daemon.terminate()
    daemon.wait(timeout=10)


def run_from_url(tracking, uri, commit, tlc_dir):
    cmd_params = {"raw_data_path": tlc_dir}
    completed = mlflow_run(
        tracking,
        "preprocess",
        cmd_params,
        project=f"{uri}",
        extra_env={"GIT_TERMINAL_PROMPT": "0"},
        version=commit,
    )
    return tracking.client.get_run(assert_ok(completed))


def test_run_from_git_url_at_a_commit(tracking, git_server, tlc_dir):
    uri = f"{git_server['url']}/nyc-taxi-duration.git"
    run = run_from_url(tracking, uri, git_server["commit"], tlc_dir)
    tags = run.data.tags
    assert tags["mlflow.source.name"] == uri
    assert tags["mlflow.source.git.repoURL"] == uri
    assert tags["mlflow.source.git.commit"] == git_server["commit"]
    assert run.data.metrics["rows_kept_train"] == 65946


def test_run_from_git_url_subdirectory(tracking, git_server, tlc_dir):
    uri = f"{git_server['url']}/monorepo.git#project"
    run = run_from_url(tracking, uri, git_server["sub_commit"], tlc_dir)
    tags = run.data.tags
    assert tags["mlflow.source.name"] == uri
    assert tags["mlflow.source.git.commit"] == git_server["sub_commit"]
    assert tags["mlflow.source.git.repoURL"] == f"{git_server['url']}/monorepo.git"
