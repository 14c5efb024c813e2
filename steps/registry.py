"""Model Registry helpers: names, versions, aliases. Aliases and tags only (no stages).

``champion`` is the version serving code loads (``models:/<name>@champion``); ``challenger``
is the latest registered candidate. Every move of ``champion`` tags both versions: the new one
with when and why, the replaced one with when and by which version.

``champion_lock`` serialises the moves of ``champion``: MLflow has no transaction or
compare-and-set on aliases, so ``register`` and ``rollback`` read the champion, decide and
write it while holding the lock (why this is enough: ``steps/register.py``). The lock is a
registered model ``<name>.champion-lock``: creating a registered model is atomic in every
MLflow store (a unique name), so only one process creates it; it is deleted on release, and
exists only while a move is being decided (seconds). A holder that died holding it (killed, say)
leaves it behind: a waiter breaks it once its run is no longer RUNNING, or once the same holder
has held it for ``LOCK_STALE_S`` seconds, by renaming it to ``<name>.champion-lock.broken-<run
id>`` (kept as the record; renaming fails if that name exists, so two waiters breaking the same
stale lock cannot both take the lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "nyc-taxi-regressor"
CHAMPION = "champion"
CHALLENGER = "challenger"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
LOCK_SUFFIX = ".champion-lock"
LOCK_OWNER_TAG = "owner_run_id"
LOCK_STALE_S = 600.0  # a champion move takes seconds; a holder this old is taken as dead
LOCK_WAIT_S = 900.0
LOCK_POLL_S = 0.25


def check_model_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UserError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-', starting with "
            "a letter or digit (at most 255 characters)"
        )
    return name


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def is_not_found(exc: MlflowException) -> bool:
    """Whether ``exc`` says a registered model, version or alias does not exist (an unknown
    alias is INVALID_PARAMETER_VALUE "... alias ... not found"); any other error is real."""
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version behind ``@champion``, or None when the model or the alias does not exist;
    other errors (a store that cannot be reached) raise. (Stores return ``version`` as int or
    str depending on the backend; compare ``str(v.version)``.)"""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        raise UserError(f"model {name!r} has no version {version!r}") from None


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None


def promote(client: MlflowClient, name: str, version: str, reason: str) -> Promotion:
    """Point ``champion`` at ``version``; tag it and the version it replaces."""
    previous = champion_version(client, name)
    when = now_iso()
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promoted_at", when)
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    if previous is not None and str(previous.version) != str(version):
        client.set_model_version_tag(name, str(previous.version), "replaced_at", when)
        client.set_model_version_tag(
            name, str(previous.version), "replaced_by_version", str(version)
        )
    return Promotion(str(version), None if previous is None else str(previous.version))


def describe_model_uri(client: MlflowClient, model_uri: str) -> tuple[str, str]:
    """(registered name, version) behind a ``models:/name@alias`` or ``models:/name/N`` URI;
    ("", "") for a URI that names no registered version (``runs:/``, ``models:/m-...``)."""
    if m := _ALIAS_URI.match(model_uri):
        try:
            v = client.get_model_version_by_alias(m["name"], m["alias"])
        except MlflowException:
            raise UserError(f"model {m['name']!r} has no alias {m['alias']!r}") from None
        return v.name, str(v.version)
    if m := _VERSION_URI.match(model_uri):
        return m["name"], str(get_version(client, m["name"], m["version"]).version)
    return "", ""


def _lock_holder(client: MlflowClient, lock: str) -> str | None:
    """The run ID holding ``lock``; None when nobody holds it (released meanwhile)."""
    try:
        return client.get_registered_model(lock).tags.get(LOCK_OWNER_TAG, "")
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise


def _run_is_running(client: MlflowClient, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.status == "RUNNING"
    except MlflowException as exc:
        if is_not_found(exc):
            return False
        raise


def _break_lock(client: MlflowClient, lock: str, holder: str, why: str) -> None:
    try:
        client.rename_registered_model(lock, f"{lock}.broken-{holder or 'unknown'}")
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            return  # another waiter broke it first (the lock may already be someone else's)
        raise
    log.warning("broke %s held by run %s: %s", lock, holder, why)


@contextlib.contextmanager
def champion_lock(
    client: MlflowClient,
    name: str,
    owner_run_id: str,
    *,
    wait_s: float = LOCK_WAIT_S,
    stale_s: float = LOCK_STALE_S,
) -> Iterator[None]:
    """Hold the lock on moves of ``name``'s champion for the ``with`` block (see the module
    docstring); waits for another holder, breaks a dead one, fails after ``wait_s``."""
    lock = f"{name}{LOCK_SUFFIX}"
    started = time.monotonic()
    seen: tuple[str, float] | None = None  # (holder, since when this process sees it)
    while True:
        try:
            client.create_registered_model(
                lock,
                tags={LOCK_OWNER_TAG: owner_run_id, "acquired_at": now_iso()},
                description=f"held while run {owner_run_id} moves @{CHAMPION} of {name}",
            )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        holder = _lock_holder(client, lock)
        if holder is None:
            continue
        now = time.monotonic()
        if seen is None or seen[0] != holder:
            seen = (holder, now)
        if not holder or not _run_is_running(client, holder):
            _break_lock(client, lock, holder, "its run is not running")
        elif now - seen[1] > stale_s:
            _break_lock(client, lock, holder, f"held for over {stale_s:.0f} s")
        elif now - started > wait_s:
            raise UserError(
                f"waited {wait_s:.0f} s for {lock!r}, held by run {holder} (another register "
                f"or rollback of {name}); try again, or delete that registered model if no "
                "such process is running"
            )
        else:
            time.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        if _lock_holder(client, lock) == owner_run_id:  # not if it was broken as stale
            client.delete_registered_model(lock)
