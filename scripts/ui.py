"""Start the MLflow UI on the local SQLite store and print the link to the project's runs.

MLflow 3.17's UI opens an experiment in its GenAI mode (an empty "Traces" overview) unless the
link asks for the model-training view (``?workflowType=machine_learning``; the browser then
remembers the choice). This prints that link for the experiment ``nyc-taxi-duration`` (or
``$MLFLOW_EXPERIMENT_NAME``), then runs ``mlflow ui`` in the foreground.

    python scripts/ui.py [--store mlflow.db] [--port 5000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME", "nyc-taxi-duration")


def experiment_id(store: Path, name: str) -> str | None:
    """The experiment's ID in a SQLite tracking store, read without MLflow (no migrations)."""
    if not store.exists():
        return None
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
            row = conn.execute(
                "select experiment_id from experiments where name = ? and lifecycle_stage = ?",
                (name, "active"),
            ).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("mlflow.db"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    base = f"http://{args.host}:{args.port}"
    found = experiment_id(args.store.resolve(), EXPERIMENT)
    if found is None:
        print(f"No experiment {EXPERIMENT!r} in {args.store} yet; open {base}", flush=True)
    else:
        link = f"{base}/#/experiments/{found}?workflowType=machine_learning"
        print(f"Open {link}  (the training runs of {EXPERIMENT!r})", flush=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    os.execv(
        mlflow,
        [
            str(mlflow),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{args.store}",
            "--host",
            args.host,
            "--port",
            str(args.port),
        ],
    )


if __name__ == "__main__":
    main()
