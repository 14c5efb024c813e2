"""The environment files agree with each other (cheap checks of what CI builds)."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO


def test_makefile_venv_uses_python_env_build_dependencies():
    spec = yaml.safe_load((REPO / "python_env.yaml").read_text())
    assert spec["python"] == "3.11.7"  # exact: a bare 3.11 makes MLflow fetch the newest
    assert spec["dependencies"] == ["-r requirements.lock"]
    makefile = (REPO / "Makefile").read_text()
    build_deps = re.search(r"^BUILD_DEPS := (.+)$", makefile, re.M).group(1).split()
    assert build_deps == spec["build_dependencies"]


def test_lock_pins_every_package_exactly():
    lines = [
        line.split(";")[0].strip()
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=\s]+", line) for line in lines)
    names = {line.split("==")[0].lower() for line in lines}
    assert {
        "mlflow",
        "xgboost-cpu",
        "scikit-learn",
        "hyperopt",
        "pandas",
        "pyarrow",
        "click",
        "psycopg2-binary",
        "flask-wtf",
        "boto3",
    } <= names
    assert "xgboost" not in names  # the NCCL-free build only
    assert not (REPO / "uv.lock").exists()  # it would make `--env-manager uv` ignore python_env
