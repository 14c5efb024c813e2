"""The environment files agree with each other (cheap checks of what CI builds)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys

import yaml

from tests.conftest import REPO


def test_makefile_venv_uses_python_env_build_dependencies():
    spec = yaml.safe_load((REPO / "python_env.yaml").read_text())
    assert spec["python"] == "3.11.7"  # exact: a bare 3.11 makes MLflow fetch the newest
    assert spec["dependencies"] == ["-r requirements.lock"]  # the runtime lock only
    makefile = (REPO / "Makefile").read_text()
    build_deps = re.search(r"^BUILD_DEPS := (.+)$", makefile, re.M).group(1).split()
    assert build_deps == spec["build_dependencies"]


def locked(path: str) -> dict[str, str]:
    """name -> version of a hash-checked lock; every package pinned exactly, with hashes."""
    text = (REPO / path).read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if block.startswith("#"):
            continue
        requirement = block.split(" \\")[0].split(";")[0].strip()
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=\s]+", requirement), (path, requirement)
        assert "--hash=sha256:" in block, f"{path}: {requirement} has no hash"
        name, version = requirement.split("==")
        pins[name.lower()] = version
    assert pins, path
    return pins


def test_locks_pin_every_package_exactly_with_hashes():
    runtime, dev = locked("requirements.lock"), locked("requirements-dev.lock")
    assert {"mlflow", "xgboost-cpu", "scikit-learn", "skops", "hyperopt", "pandas"} <= set(runtime)
    assert {"psycopg2-binary", "flask-wtf", "boto3", "moto", "pytest", "ruff", "uv"} <= set(dev)
    assert "xgboost" not in runtime  # the NCCL-free build only
    # the runtime is the dev environment's subset, at the same versions
    assert {k: dev.get(k) for k in runtime} == runtime
    assert not (REPO / "uv.lock").exists()  # it would make `--env-manager uv` ignore python_env


def test_runtime_lock_holds_no_development_tool():
    runtime = locked("requirements.lock")
    dev_only = {"pytest", "pluggy", "iniconfig", "ruff", "moto", "responses", "cfn-lint"}
    dev_only |= {"sympy", "boto3", "psycopg2-binary", "flask-wtf", "uv", "py-partiql-parser"}
    assert not dev_only & set(runtime)


def test_every_package_the_steps_import_is_declared():
    """A package a step imports must be a direct requirement, not a transitive accident."""
    declared = {
        line.split("#")[0].strip().lower()
        for line in (REPO / "requirements.in").read_text().splitlines()
        if line.split("#")[0].strip()
    }
    distributions = importlib.metadata.packages_distributions()
    imported = set()
    for path in (REPO / "steps").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported - sys.stdlib_module_names if m != "steps"}
    for module in sorted(third_party):
        names = {d.lower() for d in distributions.get(module, [])}
        assert names & declared, f"steps import {module} ({names}) but requirements.in lacks it"
