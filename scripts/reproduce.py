"""Re-execute a recorded step run from its recorded source and compare the results.

    python scripts/reproduce.py RUN_ID [--env-manager uv|virtualenv|local]

Reads the run's tags (``mlflow.source.git.commit``, ``mlflow.source.name``,
``mlflow.source.git.repoURL``, ``mlflow.project.entryPoint``) and params, clones the repository
at that commit into a temporary folder, and reruns the same entry point with the same
parameters and inputs (upstream run IDs resolved as the original resolved them; raw files
from where the original read them, checked by sha256) through ``mlflow run`` in an
environment MLflow builds from that commit's ``python_env.yaml``. The rerun is logged to the
experiment ``<original experiment>-reproductions`` and tagged ``reproduces``.

Then it compares: every metric except wall-clock ones (``*_seconds``); for hpo every trial's
metrics and raw values; for train_best every candidate's metrics and its model payload (the
booster or estimator contents, the featurizer, the signature and the requirements; not the
``MLmodel`` IDs and times); for preprocess the input digests, the featurizer and the cleaned
splits. Prints a table (name, original, rerun, equal) and exits 1 on any difference, 2 when
the run cannot be reproduced at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pandas as pd
import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from steps.tracking import finished_children  # noqa: E402

SUPPORTED = ("preprocess", "hpo", "train_best")
UPSTREAM_TAG = {"hpo": "preprocess_run_id", "train_best": "hpo_run_id"}


class CannotReproduce(Exception):
    pass


@dataclass(frozen=True)
class Row:
    name: str
    original: object
    rerun: object

    @property
    def equal(self) -> bool:
        return self.original == self.rerun


# ---- what a run recorded -------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    commit: str
    entry_point: str
    locations: tuple[str, ...]  # where the repository may be cloned from, best first
    subdirectory: str


def _local_path(uri: str) -> str:
    return unquote(urlparse(uri).path) if uri.startswith("file:") else uri


def recorded_source(run: Run) -> Source:
    tags = run.data.tags
    commit = tags.get("mlflow.source.git.commit")
    entry_point = tags.get("mlflow.project.entryPoint")
    if not commit or not entry_point:
        raise CannotReproduce(
            f"run {run.info.run_id} was not made by `mlflow run` from a git checkout "
            "(no git commit or entry point recorded)"
        )
    name, _, subdirectory = tags.get("mlflow.source.name", "").partition("#")
    locations = [loc for loc in (tags.get("mlflow.source.git.repoURL"), name) if loc]
    if not locations:
        raise CannotReproduce(f"run {run.info.run_id} records no repository to clone")
    return Source(commit, entry_point, tuple(dict.fromkeys(locations)), subdirectory)


def clone_at(source: Source, dest: Path) -> Path:
    """Clone the recorded repository at the recorded commit; the project folder in it."""
    errors = []
    for location in source.locations:
        location = _local_path(location)
        target = dest / hashlib.sha1(location.encode()).hexdigest()[:8]
        cloned = subprocess.run(
            ["git", "clone", "--quiet", "--no-checkout", location, str(target)],
            capture_output=True,
            text=True,
        )
        if cloned.returncode != 0:
            errors.append(f"cannot clone {location}: {cloned.stderr.strip()}")
            continue
        # A subdirectory project's source name is the folder itself, not the repository root.
        top = subprocess.run(
            ["git", "-C", str(target), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        checkout = subprocess.run(
            ["git", "-C", str(target), "checkout", "--quiet", source.commit],
            capture_output=True,
            text=True,
        )
        if checkout.returncode != 0:
            errors.append(f"repository {location} no longer has commit {source.commit}")
            continue
        project = Path(top or target) / source.subdirectory
        if not (project / "MLproject").exists():
            errors.append(
                f"{location} at {source.commit[:12]} has no MLproject "
                f"in {source.subdirectory or 'its root'}"
            )
            continue
        return project
    raise CannotReproduce("; ".join(errors))


def _unquote(value: str) -> str:
    """`mlflow run` logs parameters shell-quoted ("" as "''")."""
    parts = shlex.split(value) if value else [""]
    return parts[0] if len(parts) == 1 else value


def rerun_parameters(run: Run, entry_point: str, client: MlflowClient) -> dict[str, str]:
    params = {k: _unquote(v) for k, v in run.data.params.items()}
    if entry_point in UPSTREAM_TAG:  # the upstream run the original actually used
        key = UPSTREAM_TAG[entry_point]
        params[key] = run.data.tags.get(key) or params.get(key, "")
    if entry_point == "hpo" and run.data.tags.get("resumed_from"):
        raise CannotReproduce("a resuming hpo run: reproduce the search it resumed instead")
    if entry_point == "preprocess":  # the folder the original read, wherever it ran
        sources = [json.loads(i.dataset.source).get("uri", "") for i in run.inputs.dataset_inputs]
        folders = {str(Path(_local_path(s)).parent) for s in sources if s}
        if len(folders) == 1:
            params["raw_data_path"] = folders.pop()
    return params


# ---- running -------------------------------------------------------------------------------


def rerun(
    project: Path, entry_point: str, params: dict[str, str], experiment_id: str, env_manager: str
) -> str:
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(project),
        "-e",
        entry_point,
        "--env-manager",
        env_manager,
        "--experiment-id",
        experiment_id,
    ]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sys.stderr.write(proc.stderr[-4000:])
    match = re.search(r"=== Run \(ID '([0-9a-f]+)'\) (succeeded|failed)", proc.stderr + proc.stdout)
    if proc.returncode != 0 or not match:
        raise CannotReproduce(f"the rerun of {entry_point} failed (exit {proc.returncode})")
    return match.group(1)


# ---- comparing -----------------------------------------------------------------------------


def metric_rows(prefix: str, original: dict, rerun: dict) -> list[Row]:
    names = sorted(n for n in set(original) | set(rerun) if not n.endswith("_seconds"))
    return [Row(f"{prefix}metric {n}", original.get(n), rerun.get(n)) for n in names]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """Content digest; for zip-based files (skops) the members' contents, not the zip
    bytes, which embed timestamps."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            members = sorted((i.filename, _digest(z.read(i))) for i in z.infolist())
        return _digest(json.dumps(members).encode())
    return _digest(path.read_bytes())


def model_rows(prefix: str, original_uri: str, rerun_uri: str, tmp: Path) -> list[Row]:
    a = Path(mlflow.artifacts.download_artifacts(original_uri, dst_path=str(tmp / "a")))
    b = Path(mlflow.artifacts.download_artifacts(rerun_uri, dst_path=str(tmp / "b")))
    rows = []
    payload = (
        sorted(p.relative_to(a) for p in (a / "artifacts").rglob("*") if p.is_file())
        if (a / "artifacts").exists()
        else []
    )
    for rel in payload + [Path("requirements.txt"), Path("python_env.yaml")]:
        fa, fb = a / rel, b / rel
        rows.append(
            Row(
                f"{prefix}{rel}",
                file_fingerprint(fa) if fa.exists() else None,
                file_fingerprint(fb) if fb.exists() else None,
            )
        )
    sig_a = yaml.safe_load((a / "MLmodel").read_text()).get("signature")
    sig_b = yaml.safe_load((b / "MLmodel").read_text()).get("signature")
    rows.append(
        Row(
            f"{prefix}signature",
            _digest(json.dumps(sig_a, sort_keys=True).encode()),
            _digest(json.dumps(sig_b, sort_keys=True).encode()),
        )
    )
    return rows


def flavor_rows(prefix: str, original_uri: str, rerun_uri: str, tmp: Path) -> list[Row]:
    """The booster as MLflow's xgboost flavor stored it."""
    a = Path(mlflow.artifacts.download_artifacts(original_uri, dst_path=str(tmp / "xa")))
    b = Path(mlflow.artifacts.download_artifacts(rerun_uri, dst_path=str(tmp / "xb")))
    files = sorted(p.relative_to(a) for p in a.glob("model.*") if p.is_file())
    return [
        Row(
            f"{prefix}xgboost flavor {rel}",
            file_fingerprint(a / rel),
            file_fingerprint(b / rel) if (b / rel).exists() else None,
        )
        for rel in files
    ]


def compare(client: MlflowClient, original: Run, again: Run, tmp: Path) -> list[Row]:
    entry_point = original.data.tags["mlflow.project.entryPoint"]
    rows = metric_rows("", original.data.metrics, again.data.metrics)
    if entry_point == "preprocess":
        for split in ("train", "val", "test"):
            key = f"data.{split}.sha256"
            rows.append(Row(f"input {key}", original.data.tags.get(key), again.data.tags.get(key)))
        for path in (
            "featurizer/featurizer.json",
            "data/train.parquet",
            "data/val.parquet",
            "data/test.parquet",
        ):
            fa = client.download_artifacts(original.info.run_id, path, str(tmp / "pa"))
            fb = client.download_artifacts(again.info.run_id, path, str(tmp / "pb"))
            if path.endswith(".parquet"):  # compare the data, not the writer's metadata
                rows.append(
                    Row(
                        path,
                        len(pd.read_parquet(fa)),
                        len(pd.read_parquet(fb))
                        if pd.read_parquet(fa).equals(pd.read_parquet(fb))
                        else "differs",
                    )
                )
            else:
                rows.append(Row(path, file_fingerprint(Path(fa)), file_fingerprint(Path(fb))))
    elif entry_point == "hpo":
        key = "trial_id"
        a = {r.data.tags[key]: r for r in finished_children(original)}
        b = {r.data.tags[key]: r for r in finished_children(again)}
        for tid in sorted(set(a) | set(b), key=int):
            ra, rb = a.get(tid), b.get(tid)
            rows += metric_rows(
                f"trial {tid} ", ra.data.metrics if ra else {}, rb.data.metrics if rb else {}
            )
            rows.append(
                Row(
                    f"trial {tid} vals",
                    ra and ra.data.tags.get("trial.vals"),
                    rb and rb.data.tags.get("trial.vals"),
                )
            )
    elif entry_point == "train_best":
        key = "candidate_rank"
        a = {r.data.tags[key]: r for r in finished_children(original)}
        b = {r.data.tags[key]: r for r in finished_children(again)}
        for rank in sorted(set(a) | set(b), key=int):
            ra, rb = a.get(rank), b.get(rank)
            prefix = f"candidate {rank} "
            rows += metric_rows(
                prefix, ra.data.metrics if ra else {}, rb.data.metrics if rb else {}
            )
            if ra and rb:
                rows += model_rows(
                    prefix, ra.data.tags["model_uri"], rb.data.tags["model_uri"], tmp / f"c{rank}"
                )
                if "xgboost_model_uri" in ra.data.tags:
                    rows += flavor_rows(
                        prefix,
                        ra.data.tags["xgboost_model_uri"],
                        rb.data.tags.get("xgboost_model_uri", ""),
                        tmp / f"c{rank}",
                    )
    return rows


def print_table(rows: list[Row]) -> None:
    def fmt(v):
        return repr(v) if isinstance(v, float) else str(v)

    widths = [
        max([len("name")] + [len(r.name) for r in rows]),
        max([len("original")] + [len(fmt(r.original)) for r in rows]),
        max([len("rerun")] + [len(fmt(r.rerun)) for r in rows]),
    ]
    print(f"{'name':<{widths[0]}}  {'original':<{widths[1]}}  {'rerun':<{widths[2]}}  equal")
    for r in rows:
        print(
            f"{r.name:<{widths[0]}}  {fmt(r.original):<{widths[1]}}  "
            f"{fmt(r.rerun):<{widths[2]}}  {r.equal}"
        )


def reproduce(run_id: str, env_manager: str) -> list[Row]:
    client = MlflowClient()
    try:
        original = client.get_run(run_id)
    except MlflowException:
        raise CannotReproduce(f"no run {run_id!r} in {mlflow.get_tracking_uri()}") from None
    source = recorded_source(original)
    if source.entry_point not in SUPPORTED:
        raise CannotReproduce(
            f"run {run_id} is a {source.entry_point} run; only {', '.join(SUPPORTED)} runs are "
            "reproduced (register changes the registry, main only chains the others)"
        )
    params = rerun_parameters(original, source.entry_point, client)
    experiment = client.get_experiment(original.info.experiment_id)
    name = f"{experiment.name}-reproductions"
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found else client.create_experiment(name)
    with tempfile.TemporaryDirectory() as tmp:
        project = clone_at(source, Path(tmp))
        print(
            f"reproducing {source.entry_point} run {run_id} from {source.locations[0]} at "
            f"{source.commit} ({env_manager} environment)",
            file=sys.stderr,
        )
        again_id = rerun(project, source.entry_point, params, experiment_id, env_manager)
        client.set_tag(again_id, "reproduces", run_id)
        return compare(client, original, client.get_run(again_id), Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--env-manager", default="uv", choices=["uv", "virtualenv", "local"])
    args = parser.parse_args(argv)
    try:
        rows = reproduce(args.run_id, args.env_manager)
    except CannotReproduce as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print_table(rows)
    different = [r.name for r in rows if not r.equal]
    if different:
        print(f"{len(different)} of {len(rows)} differ: {', '.join(different)}", file=sys.stderr)
        return 1
    print(f"all {len(rows)} equal", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
