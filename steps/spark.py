"""A Spark session for ``hpo`` and ``score`` (shared; imported only when ``spark_master`` is set).

``spark_session(master, app_name)`` starts (or returns) the session for ``master`` as Spark
takes it: ``local[N]``, ``spark://host:port``, ``yarn``, ``k8s://...``. Executors' Python:
``PYSPARK_PYTHON`` when the user set it (a shipped environment: see the README), else this
interpreter, which is right for ``local[N]`` and for a cluster on this machine.
"""

from __future__ import annotations

import logging
import os
import re
import sys

from steps.errors import UserError

log = logging.getLogger(__name__)


def is_local_master(master: str) -> bool:
    """``local``, ``local[4]``, ``local[*]``, ``local[2,3]``: everything runs in this process."""
    return master == "local" or master.startswith("local[")


# What Spark's --master takes: local, local[N], local[*], local[N,F], local[*,F]; a standalone
# master (spark://host:port, or several host:port for high availability); yarn; k8s://...;
# mesos://...
MASTER_FORMS = re.compile(
    r"local(\[([1-9]\d*|\*)(,[1-9]\d*)?\])?"
    r"|spark://[^/\s:,]+:\d+(,[^/\s:,]+:\d+)*"
    r"|yarn"
    r"|k8s://\S+"
    r"|mesos://\S+"
)


def validate_master(master: str) -> None:
    """The forms Spark accepts for ``--master``; anything else fails before Spark starts."""
    ports = re.findall(r":(\d+)(?=,|$)", master) if master.startswith("spark://") else []
    if not MASTER_FORMS.fullmatch(master) or not all(0 < int(p) < 65536 for p in ports):
        raise UserError(
            f"spark_master must be local[N], spark://host:port, yarn or k8s://..., got {master!r}"
        )


def spark_session(master: str, app_name: str):
    """The session for ``master``; its executors run ``PYSPARK_PYTHON`` or this interpreter."""
    validate_master(master)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.showConsoleProgress", "false")
    )
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # py4j/pyspark errors: no Java, no master at that address, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot start Spark on {master}: {first} (Java 17 on PATH or JAVA_HOME? a master "
            "listening there? see the README's 'Scale-out on Spark')"
        ) from None
    log.info("spark session %s on %s", session.sparkContext.applicationId, master)
    return session
