"""Model Registry helpers: names, versions, aliases. Aliases and tags only (no stages).

``champion`` is the version serving code loads (``models:/<name>@champion``); ``challenger``
is the latest registered candidate. Every move of ``champion`` tags both versions: the new one
with when and why, the replaced one with when and by which version.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps.errors import UserError

DEFAULT_MODEL_NAME = "nyc-taxi-regressor"
CHAMPION = "champion"
CHALLENGER = "challenger"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


def check_model_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UserError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-', starting with "
            "a letter or digit (at most 255 characters)"
        )
    return name


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version behind ``@champion``, or None. (Note: stores return ``version`` as int or
    str depending on the backend; compare ``str(v.version)``.)"""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
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
