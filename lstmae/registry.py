"""Model registry: versioned models per group, with a *current* pointer.

Layout under the lake root::

    models/<group>/<version>/model.keras   Keras v3 file, loaded with safe_mode
    models/<group>/<version>/model.json    scaler, thresholds, features, config,
                                           data range, losses, validation stats,
                                           library versions, gate results
    models/<group>/current.json            {"version": ..., "history": [...]}

``model.json`` is written after ``model.keras``, so a version without
``model.json`` is incomplete and never listed or loaded. Thresholds live in the
same JSON as the rest of the version's metadata, so a reader can never pair a
model with another version's thresholds. ``current.json`` is replaced in one
write, so promotion and rollback are atomic.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone

from lstmae.scaler import Scaler
from lstmae.storage import Storage, escape_segment
from lstmae.thresholds import Thresholds

log = logging.getLogger(__name__)

MODELS = "models"


class RegistryError(LookupError):
    """Raised for an unknown group or version, or a registry in an unusable state."""


@dataclass
class ModelVersion:
    """A registered model version: the Keras model is loaded on demand."""

    group: str
    version: str
    metadata: dict

    @property
    def features(self) -> list[str]:
        return list(self.metadata["features"])

    @property
    def scaler(self) -> Scaler:
        return Scaler.from_dict(self.metadata["scaler"])

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds.from_dict(self.metadata["thresholds"])

    @property
    def timesteps(self) -> int:
        return int(self.metadata["timesteps"])


def _group_prefix(group: str) -> str:
    return f"{MODELS}/{escape_segment(group)}"


def new_version_id(now: datetime | None = None) -> str:
    """Return a sortable version id such as ``20261204T020000Z-3f2a9c``."""
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("lstmae", "tensorflow", "keras", "numpy", "pandas", "pyarrow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def register(storage: Storage, group: str, version: str, model, metadata: dict) -> ModelVersion:
    """Write the model file, then its metadata (the publication marker)."""
    prefix = f"{_group_prefix(group)}/{escape_segment(version)}"
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        with open(path, "rb") as stream:
            storage.write_bytes(f"{prefix}/model.keras", stream.read())
    metadata = dict(metadata, group=group, version=version)
    storage.write_bytes(f"{prefix}/model.json", json.dumps(metadata, indent=2, sort_keys=True).encode())
    log.info("Registered model %s/%s (status %s)", group, version, metadata.get("status"))
    return ModelVersion(group, version, metadata)


def update_metadata(storage: Storage, group: str, version: str, **changes) -> ModelVersion:
    entry = get_version(storage, group, version)
    entry.metadata.update(changes)
    key = f"{_group_prefix(group)}/{escape_segment(version)}/model.json"
    storage.write_bytes(key, json.dumps(entry.metadata, indent=2, sort_keys=True).encode())
    return entry


def list_versions(storage: Storage, group: str) -> list[ModelVersion]:
    """Return the complete versions of ``group``, oldest first."""
    prefix = _group_prefix(group) + "/"
    versions = []
    for key in storage.list(prefix):
        if key.endswith("/model.json"):
            versions.append(ModelVersion(group, key[len(prefix) :].split("/")[0], json.loads(storage.read_bytes(key))))
    for entry in versions:
        entry.version = entry.metadata.get("version", entry.version)
    return sorted(versions, key=lambda v: v.version)


def list_groups(storage: Storage) -> list[str]:
    groups = set()
    for key in storage.list(f"{MODELS}/"):
        parts = key.split("/")
        if len(parts) >= 3:
            groups.add(parts[1])
    return sorted(groups)


def get_version(storage: Storage, group: str, version: str) -> ModelVersion:
    key = f"{_group_prefix(group)}/{escape_segment(version)}/model.json"
    if not storage.exists(key):
        known = [v.version for v in list_versions(storage, group)]
        raise RegistryError(f"Model version {version!r} of group {group!r} not found. Known versions: {known or 'none'}.")
    return ModelVersion(group, version, json.loads(storage.read_bytes(key)))


def find_version(storage: Storage, version: str, group: str | None = None) -> ModelVersion:
    """Return ``version`` from ``group``, or from whichever group contains it when ``group`` is None.

    Raises:
        RegistryError: no group contains the version, or several do (pass ``group``).
    """
    if group is not None:
        return get_version(storage, group, version)
    matches = [g for g in list_groups(storage) if storage.exists(f"{_group_prefix(g)}/{escape_segment(version)}/model.json")]
    if not matches:
        raise RegistryError(f"Model version {version!r} not found in any group of {storage.uri_of(MODELS)}. "
                            "List the versions with 'lstmae models list'.")
    if len(matches) > 1:
        raise RegistryError(f"Model version {version!r} exists in several groups {matches}; name the group.")
    return get_version(storage, matches[0], version)


def summary(entry: ModelVersion, current: str | None = None) -> dict:
    """Return the fields of a version that a listing shows (small, JSON-serialisable)."""
    metadata = entry.metadata
    validation = metadata.get("validation") or {}
    history = metadata.get("history") or {}
    data_range = metadata.get("data_range") or {}
    return {
        "group": entry.group,
        "version": entry.version,
        "current": entry.version == current,
        "status": metadata.get("status"),
        "reason": metadata.get("reason"),
        "created_at": metadata.get("created_at"),
        "data_start": data_range.get("start"),
        "data_end": data_range.get("end"),
        "training_windows": metadata.get("training_windows"),
        "loss": (history.get("loss") or [None])[-1],
        "val_loss": (history.get("val_loss") or [None])[-1],
        "validation_mse": validation.get("mse"),
    }


def _read_pointer(storage: Storage, group: str) -> dict:
    key = f"{_group_prefix(group)}/current.json"
    if not storage.exists(key):
        return {"version": None, "history": []}
    return json.loads(storage.read_bytes(key))


def current_version(storage: Storage, group: str) -> str | None:
    return _read_pointer(storage, group)["version"]


def resolve(storage: Storage, group: str, version: str | None = None) -> ModelVersion:
    """Return the pinned ``version``, else the current one; fail clearly when there is none."""
    if version:
        return get_version(storage, group, version)
    current = current_version(storage, group)
    if current is None:
        raise RegistryError(
            f"Group {group!r} has no current model in {storage.uri_of(MODELS)}. "
            "Run training first (lstmae train, or the lstmae_train DAG), or promote a version."
        )
    return get_version(storage, group, current)


def promote(storage: Storage, group: str, version: str, reason: str = "manual") -> dict:
    """Make ``version`` current; the previous current version goes onto the history."""
    get_version(storage, group, version)
    pointer = _read_pointer(storage, group)
    if pointer["version"] == version:
        return pointer
    history = list(pointer["history"])
    if pointer["version"]:
        history.append(pointer["version"])
    new = {
        "version": version,
        "history": history[-50:],
        "promoted_at": datetime.now(timezone.utc).isoformat(),
        "reason": reason,
    }
    storage.write_bytes(f"{_group_prefix(group)}/current.json", json.dumps(new, indent=2).encode())
    log.info("Promoted model %s/%s (%s); previous: %s", group, version, reason, pointer["version"])
    return new


def rollback(storage: Storage, group: str) -> dict:
    """Make the previously current version current again."""
    pointer = _read_pointer(storage, group)
    if not pointer["history"]:
        raise RegistryError(f"Cannot roll back group {group!r}: no earlier current version (current: {pointer['version']}).")
    history = list(pointer["history"])
    previous = history.pop()
    new = {
        "version": previous,
        "history": history,
        "promoted_at": datetime.now(timezone.utc).isoformat(),
        "reason": f"rollback from {pointer['version']}",
    }
    storage.write_bytes(f"{_group_prefix(group)}/current.json", json.dumps(new, indent=2).encode())
    log.info("Rolled back model %s from %s to %s", group, pointer["version"], previous)
    return new


def load_keras_model(storage: Storage, entry: ModelVersion):
    """Download and load the version's Keras model (``safe_mode=True``)."""
    from lstmae.model import load_model

    data = storage.read_bytes(f"{_group_prefix(entry.group)}/{escape_segment(entry.version)}/model.keras")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        with open(path, "wb") as stream:
            stream.write(data)
        return load_model(path)


def artifact_key(group: str, version: str, name: str) -> str:
    return f"{_group_prefix(group)}/{escape_segment(version)}/{name}"
