"""Load the app's `localsettings.py` and validate the blob store settings in it.

The file is executed as Python, exactly as the app does, so what blobshift reads is what
the app reads. Every problem is a `SettingsError` naming the file and the key; secrets
are never part of a message or a `repr`.
"""

from __future__ import annotations

import difflib
import runpy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NEW_STORE = "S3_BLOB_DB_SETTINGS"
OLD_STORE = "OLD_S3_BLOB_DB_SETTINGS"
MIGRATING_FLAG = "BLOB_DB_MIGRATING_FROM_S3_TO_S3"

REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "url": str,
    "access_key": str,
    "secret_key": str,
    "s3_bucket": str,
}
OPTIONAL_KEYS: dict[str, type | tuple[type, ...]] = {
    "bulk_delete_chunksize": int,
    "config": dict,
    "list_version": int,
    "verify": (bool, str),
    "region": str,
    "dialect": str,
}
# Server behaviours a store may need the engine to follow (see README, "S3 implementations").
DIALECTS = ("riakcs",)
SIGNATURE_VERSIONS = ("s3", "s3v4")


class SettingsError(Exception):
    """A settings problem, already phrased for the operator (file, key, fix)."""


@dataclass(frozen=True)
class StoreSettings:
    """One S3 store. `secret_key` is excluded from `repr` so it cannot leak in a traceback."""

    name: str
    url: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str = ""
    bulk_delete_chunksize: int = 1000
    config: Mapping[str, Any] = field(default_factory=dict)
    list_version: int = 2
    verify: bool | str = True
    region: str = "us-east-1"
    dialect: str = ""

    @property
    def signature_version(self) -> str:
        return str(self.config.get("signature_version", "s3v4"))

    @property
    def max_pool_connections(self) -> int:
        return int(self.config.get("max_pool_connections", 10))

    @property
    def connect_timeout(self) -> float:
        return float(self.config.get("connect_timeout", 10))

    @property
    def read_timeout(self) -> float:
        return float(self.config.get("read_timeout", 60))

    def describe(self) -> str:
        """Safe one-line description for logs (no credentials)."""
        return f"{self.name} ({self.url}, bucket {self.bucket})"


@dataclass(frozen=True)
class BlobSettings:
    path: Path
    new: StoreSettings
    old: StoreSettings | None
    migrating: bool


def _store(path: Path, name: str, raw: object) -> StoreSettings:
    where = f"{path}: {name}"
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{where} must be a dict, got {type(raw).__name__}")
    known = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
    for key in sorted(set(raw) - known):
        # A misspelt key is the likely cause of a "missing" one: name it first.
        close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {sorted(known)}"
        raise SettingsError(f"{where} has unknown key {key!r}: {hint}")
    for key, typ in REQUIRED_KEYS.items():
        if key not in raw:
            raise SettingsError(f"{where}[{key!r}] is missing: add it to the settings file")
        if not isinstance(raw[key], typ) or not raw[key]:
            raise SettingsError(f"{where}[{key!r}] must be a non-empty string")
    for key, typ in OPTIONAL_KEYS.items():
        if key in raw and raw[key] is not None and not isinstance(raw[key], typ):
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise SettingsError(f"{where}[{key!r}] must be {names}, got {type(raw[key]).__name__}")
    url = raw["url"].rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"{where}['url'] must start with http:// or https://")
    config = dict(raw.get("config") or {})
    sig = config.get("signature_version", "s3v4")
    if sig not in SIGNATURE_VERSIONS:
        raise SettingsError(
            f"{where}['config']['signature_version'] is {sig!r}: use 's3' (SigV2) or 's3v4'"
        )
    list_version = raw.get("list_version") or 2
    if list_version not in (1, 2):
        raise SettingsError(f"{where}['list_version'] must be 1 or 2 (Riak CS needs 1)")
    chunk = raw.get("bulk_delete_chunksize") or 1000
    if chunk < 1:
        raise SettingsError(f"{where}['bulk_delete_chunksize'] must be at least 1")
    for key in ("max_pool_connections", "connect_timeout", "read_timeout"):
        if key in config and (not isinstance(config[key], int | float) or config[key] <= 0):
            raise SettingsError(f"{where}['config'][{key!r}] must be a positive number")
    dialect = raw.get("dialect") or ""
    if dialect and dialect not in DIALECTS:
        raise SettingsError(f"{where}['dialect'] is {dialect!r}: use one of {list(DIALECTS)}")
    verify = raw.get("verify", True)
    if isinstance(verify, str) and not Path(verify).is_file():
        raise SettingsError(f"{where}['verify'] names CA bundle {verify!r}, which is not a file")
    return StoreSettings(
        name=name,
        url=url,
        access_key=raw["access_key"],
        secret_key=raw["secret_key"],
        bucket=raw["s3_bucket"],
        bulk_delete_chunksize=chunk,
        config=config,
        list_version=list_version,
        verify=verify,
        region=raw.get("region") or "us-east-1",
        dialect=dialect,
    )


def load_settings(path: str | Path, *, require_old: bool = False) -> BlobSettings:
    """Execute `path` like the app does and return its validated blob store settings."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"{path}: settings file not found (pass --settings PATH)")
    try:
        namespace = runpy.run_path(str(path), run_name="localsettings")
    except SyntaxError as exc:
        raise SettingsError(f"{path}:{exc.lineno}: not valid Python: {exc.msg}") from None
    except Exception as exc:
        # The message of an arbitrary exception could quote a secret: give only its type.
        raise SettingsError(f"{path}: executing it failed with {type(exc).__name__}") from None
    if NEW_STORE not in namespace:
        raise SettingsError(f"{path}: {NEW_STORE} is missing: define the new store's settings")
    migrating = namespace.get(MIGRATING_FLAG, False)
    if not isinstance(migrating, bool):
        raise SettingsError(f"{path}: {MIGRATING_FLAG} must be True or False")
    new = _store(path, NEW_STORE, namespace[NEW_STORE])
    old = None
    if OLD_STORE in namespace and namespace[OLD_STORE] is not None:
        old = _store(path, OLD_STORE, namespace[OLD_STORE])
    if (require_old or migrating) and old is None:
        raise SettingsError(
            f"{path}: {OLD_STORE} is missing: the backfill needs the old store's settings"
        )
    if old is not None and old.url == new.url and old.bucket == new.bucket:
        raise SettingsError(
            f"{path}: {OLD_STORE} and {NEW_STORE} name the same bucket on the same endpoint"
        )
    return BlobSettings(path=path, new=new, old=old, migrating=migrating)
