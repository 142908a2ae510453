"""The snapshot manifest: what a snapshot claims to hold, checked before anything is read.

Kept apart from the reading and merging code so that the format (its keys, its version)
is in one short file that both sides agree on.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from store.schema import SCHEMA_VERSION, TABLES

SNAPSHOT_FORMAT = "shapebench-snapshot"
# Bump when a reader of the previous version would misread a snapshot (new layout or keys).
SNAPSHOT_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# A manifest is a few hundred bytes; anything far larger is not ours.
MAX_MANIFEST_BYTES = 1 << 20
# created_at and tool_version are a timestamp and a version string: short.
MAX_FIELD_CHARS = 64
REQUIRED_KEYS = ("format", "format_version", "created_at", "tool_version", "schema_version",
                 "regimes", "row_counts", "files")


class SnapshotError(ValueError):
    """A snapshot was refused; the message is one line, fit for a CLI or a page to show."""


def table_file(table: str) -> str:
    """The only file name a table may have: names never come from the snapshot itself."""
    return f"{table}.parquet"


def tool_version() -> str:
    """The installed shapebench version, or 'unknown' when running from a bare checkout."""
    try:
        return metadata.version("shapebench")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Manifest:
    """What a snapshot holds; `files` maps each file name to its sha256 and size in bytes."""

    created_at: str
    tool_version: str
    schema_version: int
    regimes: list[str]
    row_counts: dict[str, int]
    files: dict[str, dict[str, int | str]]
    filters: dict[str, list[str] | None] = field(default_factory=dict)
    format: str = SNAPSHOT_FORMAT
    format_version: int = SNAPSHOT_FORMAT_VERSION

    @staticmethod
    def now() -> str:
        return datetime.now(timezone.utc).isoformat(timespec="seconds")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        """Parse and check a manifest; refuse what this version does not understand."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise SnapshotError(f"{MANIFEST_NAME} is {len(data)} bytes, not a shapebench manifest")
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise SnapshotError(f"{MANIFEST_NAME} is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise SnapshotError(f"{MANIFEST_NAME} is not a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise SnapshotError(f"{MANIFEST_NAME} lacks required keys: {', '.join(missing)}")
        if raw["format"] != SNAPSHOT_FORMAT:
            raise SnapshotError(f"not a shapebench snapshot (format {raw['format']!r})")
        version = raw["format_version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise SnapshotError(f"invalid snapshot format_version {version!r}")
        if version > SNAPSHOT_FORMAT_VERSION:
            raise SnapshotError(
                f"snapshot format version {version} is newer than this shapebench reads "
                f"({SNAPSHOT_FORMAT_VERSION}); upgrade shapebench"
            )
        schema_version = raw["schema_version"]
        if (not isinstance(schema_version, int) or isinstance(schema_version, bool)
                or not 1 <= schema_version <= SCHEMA_VERSION):
            raise SnapshotError(
                f"snapshot schema version {schema_version!r} is not one this shapebench "
                f"reads (up to {SCHEMA_VERSION})"
            )
        expected_files = {table_file(t) for t in TABLES}
        files, counts = raw["files"], raw["row_counts"]
        if not isinstance(files, dict) or set(files) != expected_files:
            raise SnapshotError(
                f"{MANIFEST_NAME} must list exactly the files {sorted(expected_files)}"
            )
        for name, entry in files.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                    and isinstance(entry.get("bytes"), int)):
                raise SnapshotError(f"{MANIFEST_NAME} entry for {name} needs sha256 and bytes")
        if not isinstance(counts, dict) or set(counts) != set(TABLES) or not all(
            isinstance(n, int) and n >= 0 for n in counts.values()
        ):
            raise SnapshotError(f"{MANIFEST_NAME} row_counts must give a count for {list(TABLES)}")
        regimes = raw["regimes"]
        if not isinstance(regimes, list) or not all(isinstance(r, str) for r in regimes):
            raise SnapshotError(f"{MANIFEST_NAME} regimes must be a list of strings")
        for key in ("created_at", "tool_version"):
            if not isinstance(raw[key], str) or len(raw[key]) > MAX_FIELD_CHARS:
                raise SnapshotError(f"{MANIFEST_NAME} {key} must be a string of at most {MAX_FIELD_CHARS} characters")
        try:
            created = datetime.fromisoformat(raw["created_at"])
        except ValueError:
            raise SnapshotError(f"{MANIFEST_NAME} created_at is not an ISO 8601 time") from None
        if not 2000 <= created.year <= datetime.now(timezone.utc).year + 1:
            raise SnapshotError(f"{MANIFEST_NAME} created_at {raw['created_at']!r} is not a plausible time")
        for name, count in counts.items():
            if isinstance(count, bool):
                raise SnapshotError(f"{MANIFEST_NAME} row_counts must give a count for {list(TABLES)}")
        filters = raw.get("filters") or {}
        if not isinstance(filters, dict):
            raise SnapshotError(f"{MANIFEST_NAME} filters must be an object")
        return cls(
            created_at=str(raw["created_at"]), tool_version=str(raw["tool_version"]),
            schema_version=schema_version, regimes=regimes, row_counts=counts, files=files,
            filters=filters, format=raw["format"], format_version=version,
        )
