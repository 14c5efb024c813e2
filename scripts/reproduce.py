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
metrics and raw values; for train_best every candidate's metrics, its predictions on the
preprocess run's val and test splits (through the saved pyfunc, bit for bit) and its model
payload: XGBoost's booster UBJ bytes; a scikit-learn estimator by content (class, parameters,
every fitted attribute and array, a forest's trees node by node), not by the skops file, whose
member names embed Python object IDs; the featurizer, the signature and the requirements (not
the ``MLmodel`` IDs and times); for preprocess the input digests, the featurizer and the
cleaned splits. Prints a table (name, original, rerun, equal) and exits 1 on any difference (a
rerun that fails is one: its last lines are printed), 2 when the run cannot be reproduced at
all (unknown run, no recorded commit or source, commit gone, unsupported entry point).
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
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from steps.predictor import INPUT_COLUMNS, SKOPS_TRUSTED  # noqa: E402
from steps.tracking import finished_children  # noqa: E402

SUPPORTED = ("preprocess", "hpo", "train_best")
UPSTREAM_TAG = {"hpo": "preprocess_run_id", "train_best": "hpo_run_id"}
PREDICTED_SPLITS = ("val", "test")  # the preprocess splits a train_best run's models predict


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


RUN_ID_MARK = "=== Run (ID '"
TAIL_LINES = 30


@dataclass(frozen=True)
class Rerun:
    returncode: int
    run_id: str | None  # None when `mlflow run` reported no run (it failed before one existed)
    output: str


def reported_run_id(output: str) -> str | None:
    """The run ID `mlflow run` reports last, as the tests read it (tests/conftest.py)."""
    for line in reversed(output.splitlines()):
        if RUN_ID_MARK in line:
            return line.split(RUN_ID_MARK)[1].split("'")[0]
    return None


def rerun(
    project: Path, entry_point: str, params: dict[str, str], experiment_id: str, env_manager: str
) -> Rerun:
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
    output = proc.stdout + proc.stderr
    return Rerun(proc.returncode, reported_run_id(output), output)


def failed_rerun_rows(again: Rerun) -> list[Row]:
    """A rerun that did not finish is a difference: the original finished."""
    rows = [Row("rerun exit code", 0, again.returncode)]
    if again.returncode == 0:  # finished, yet reported no run to compare
        rows.append(Row("rerun run ID", "reported", None))
    return rows


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


# A scikit-learn tree's arrays and sizes: its pickled state packs the nodes in a structured
# array whose padding bytes are not part of the model, so compare field by field.
TREE_FIELDS = (
    "node_count",
    "max_depth",
    "n_features",
    "n_outputs",
    "n_classes",
    "children_left",
    "children_right",
    "feature",
    "threshold",
    "missing_go_to_left",
    "impurity",
    "n_node_samples",
    "weighted_n_node_samples",
    "value",
)


def _array_state(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return f"{a.dtype.str}{list(a.shape)} sha256:{_digest(a.tobytes())}"


def estimator_state(obj: object, name: str = "") -> dict[str, str]:
    """A fitted scikit-learn estimator as {attribute path: exact value}: its class, its
    parameters (``params.<name>``, from ``get_params``) and every other attribute (the fitted
    ones), recursively into nested estimators and trees. Arrays are digests of their bytes,
    floats their hex form: equal states mean equal bits. Nothing in it depends on the process
    (no object IDs, no file layout)."""
    if obj is None or isinstance(obj, bool | int | str):
        return {name: f"{type(obj).__name__}:{obj!r}"}
    if isinstance(obj, float):
        return {name: f"float:{obj.hex()}"}
    if isinstance(obj, np.generic):
        return {name: f"{obj.dtype.str}:{obj.tobytes().hex()}"}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:  # bytes of an object array are pointers: compare elements
            state = {name: f"object{list(obj.shape)}"}
            for i, item in enumerate(obj.ravel().tolist()):
                state |= estimator_state(item, f"{name}[{i}]")
            return state
        return {name: _array_state(obj)}
    if isinstance(obj, list | tuple):
        state = {name: f"{type(obj).__name__}[{len(obj)}]"}
        for i, item in enumerate(obj):
            state |= estimator_state(item, f"{name}[{i}]")
        return state
    if isinstance(obj, dict):
        state = {name: f"dict{sorted(map(str, obj))}"}
        for key in sorted(obj, key=str):
            state |= estimator_state(obj[key], f"{name}[{key!r}]")
        return state
    if isinstance(obj, np.random.RandomState):
        return estimator_state(obj.get_state(legacy=False), f"{name}.state")
    if sp.issparse(obj):
        m = obj.tocsr()
        state = {name: f"{type(obj).__name__}{list(m.shape)}"}
        for part in ("data", "indices", "indptr"):
            state[f"{name}.{part}"] = _array_state(getattr(m, part))
        return state
    cls = type(obj)
    state = {f"{name}.class" if name else "class": f"{cls.__module__}.{cls.__qualname__}"}
    prefix = f"{name}." if name else ""
    if cls.__module__ == "sklearn.tree._tree" and cls.__name__ == "Tree":
        for field in TREE_FIELDS:
            state |= estimator_state(getattr(obj, field), prefix + field)
        return state
    if not hasattr(obj, "__dict__"):
        raise TypeError(f"cannot compare {name or 'the estimator'}: a {cls.__qualname__}")
    params = obj.get_params(deep=False) if hasattr(obj, "get_params") else {}
    for key in sorted(params):
        state |= estimator_state(params[key], f"{prefix}params.{key}")
    for key in sorted(set(vars(obj)) - set(params)):
        state |= estimator_state(vars(obj)[key], prefix + key)
    return state


def estimator_differences(a: object, b: object) -> list[str]:
    """The attribute paths where two estimators differ (empty when bit for bit equal)."""
    sa, sb = estimator_state(a), estimator_state(b)
    return sorted(n for n in set(sa) | set(sb) if sa.get(n) != sb.get(n))


def _group(state: dict[str, str]) -> dict[str, str]:
    """One entry per top-level attribute: short values as they are, others as a digest."""
    parts: dict[str, list[tuple[str, str]]] = {}
    for path, value in state.items():
        top = re.split(r"[.\[]", path, maxsplit=1)[0]
        parts.setdefault(top, []).append((path, value))
    grouped = {}
    for top, items in parts.items():
        if len(items) == 1 and len(items[0][1]) <= 60:
            grouped[top] = items[0][1]
        else:
            grouped[top] = "sha256:" + _digest(json.dumps(sorted(items)).encode())
    return grouped


def estimator_rows(prefix: str, original: object, rerun: object) -> list[Row]:
    """One row per top-level attribute of the two estimators (class first)."""
    a, b = _group(estimator_state(original)), _group(estimator_state(rerun))
    names = sorted(set(a) | set(b), key=lambda n: (n != "class", n))
    rows = [Row(f"{prefix}estimator {n}", a.get(n), b.get(n)) for n in names]
    if any(not r.equal for r in rows):
        differing = estimator_differences(original, rerun)
        shown = ", ".join(differing[:10]) + (" ..." if len(differing) > 10 else "")
        print(f"{prefix}estimator: {len(differing)} attributes differ: {shown}", file=sys.stderr)
    return rows


def load_estimator(path: Path):
    """A skops file, with the project's trusted types: nothing is unpickled."""
    import skops.io

    return skops.io.load(path, trusted=SKOPS_TRUSTED)


def payload_rows(prefix: str, rel: Path, a: Path, b: Path) -> list[Row]:
    fa, fb = a / rel, b / rel
    if fa.suffix == ".skops" and fa.exists() and fb.exists():
        return estimator_rows(prefix, load_estimator(fa), load_estimator(fb))
    return [
        Row(
            f"{prefix}{rel}",
            file_fingerprint(fa) if fa.exists() else None,
            file_fingerprint(fb) if fb.exists() else None,
        )
    ]


def prediction_digest(predictions) -> str:
    return _array_state(np.asarray(predictions, dtype=np.float64))


def prediction_rows(
    prefix: str, original_uri: str, rerun_uri: str, frames: dict[str, pd.DataFrame]
) -> list[Row]:
    """The two saved pyfuncs' predictions on the recorded splits, bit for bit."""
    a = mlflow.pyfunc.load_model(original_uri)
    b = mlflow.pyfunc.load_model(rerun_uri)
    rows = []
    for split, frame in frames.items():
        inputs = frame[list(INPUT_COLUMNS)]
        rows.append(
            Row(
                f"{prefix}predictions {split}",
                prediction_digest(a.predict(inputs)),
                prediction_digest(b.predict(inputs)),
            )
        )
    return rows


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
        rows += payload_rows(prefix, rel, a, b)
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


def recorded_splits(client: MlflowClient, original: Run, tmp: Path) -> dict[str, pd.DataFrame]:
    """The val and test splits of the preprocess run the original train_best run read."""
    preprocess_run_id = original.data.tags["preprocess_run_id"]
    return {
        split: pd.read_parquet(
            client.download_artifacts(preprocess_run_id, f"data/{split}.parquet", str(tmp / "d"))
        )
        for split in PREDICTED_SPLITS
    }


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
        frames = recorded_splits(client, original, tmp)
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
                uri_a, uri_b = ra.data.tags["model_uri"], rb.data.tags["model_uri"]
                rows += prediction_rows(prefix, uri_a, uri_b, frames)
                rows += model_rows(prefix, uri_a, uri_b, tmp / f"c{rank}")
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
        again = rerun(project, source.entry_point, params, experiment_id, env_manager)
        if again.run_id:
            client.set_tag(again.run_id, "reproduces", run_id)
        if again.returncode != 0 or not again.run_id:
            tail = again.output.splitlines()[-TAIL_LINES:]
            print(
                f"the rerun of {source.entry_point} failed (exit {again.returncode}); "
                f"its last lines:\n" + "\n".join(tail),
                file=sys.stderr,
            )
            return failed_rerun_rows(again)
        print("\n".join(again.output.splitlines()[-5:]), file=sys.stderr)
        return compare(client, original, client.get_run(again.run_id), Path(tmp))


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
