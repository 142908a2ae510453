"""The snapshot manifest: what a snapshot claims to hold, checked before anything is read.

Kept apart from the reading and merging code so that the format (its keys, its version)
is in one short file that both sides agree on. The checks are a pydantic model, one type
and at most one validator per field; a refusal is one line that names the field (`RULES`).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator
from typing_extensions import TypedDict

from store.kept import KEPT_FILE
from store.schema import SCHEMA_VERSION, TABLES
from vocabulary import tool_version  # noqa: F401 - the manifest records it; store.snapshot imports it from here

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


class FileEntry(TypedDict):
    """A file's checksum and size, as the manifest lists it."""

    sha256: StrictStr
    bytes: StrictInt


ShortText = Annotated[StrictStr, Field(max_length=MAX_FIELD_CHARS)]
Count = Annotated[StrictInt, Field(ge=0)]
EXPECTED_FILES = sorted(table_file(t) for t in TABLES)
# What each field must be, as the one line a refusal shows ({value}: what the manifest holds).
RULES = {
    "format": "not a shapebench snapshot (format {value!r:.80})",
    "format_version": "invalid snapshot format_version {value!r:.80}",
    "schema_version": f"snapshot schema version {{value!r:.80}} is not one this shapebench reads (up to {SCHEMA_VERSION})",
    "files": f"{MANIFEST_NAME} must list exactly the files {EXPECTED_FILES}, each with sha256 and bytes",
    "row_counts": f"{MANIFEST_NAME} row_counts must give a count for {list(TABLES)}",
    "regimes": f"{MANIFEST_NAME} regimes must be a list of strings",
    "created_at": f"{MANIFEST_NAME} created_at must be a string of at most {MAX_FIELD_CHARS} characters",
    "tool_version": f"{MANIFEST_NAME} tool_version must be a string of at most {MAX_FIELD_CHARS} characters",
    "filters": f"{MANIFEST_NAME} filters must be an object of lists of strings (or null)",
    "derived": f"{MANIFEST_NAME} derived must be null or give {KEPT_FILE}'s sha256 (a string) and bytes (an integer)",
}


class Manifest(BaseModel):
    """What a snapshot holds; `files` maps each file name to its sha256 and size in bytes.

    Fields are checked in the order a reader needs them: what the file is, which version,
    then what it lists. Keys this version does not know are ignored.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: Literal[SNAPSHOT_FORMAT] = SNAPSHOT_FORMAT
    format_version: StrictInt = Field(default=SNAPSHOT_FORMAT_VERSION, ge=1)
    schema_version: StrictInt
    files: dict[str, FileEntry]
    row_counts: dict[str, Count]
    regimes: list[StrictStr]
    created_at: ShortText
    tool_version: ShortText
    filters: dict[str, list[StrictStr] | None] = Field(default_factory=dict)
    # derived.parquet (store.kept): results computed at export, checked like the tables. Its
    # own key, not an entry of `files`: a reader that predates it ignores the key and the file.
    derived: FileEntry | None = None

    @field_validator("format_version")
    @classmethod
    def _readable_format(cls, version: int) -> int:
        if version > SNAPSHOT_FORMAT_VERSION:
            raise ValueError(f"snapshot format version {version} is newer than this shapebench reads "
                             f"({SNAPSHOT_FORMAT_VERSION}); upgrade shapebench")
        return version

    @field_validator("schema_version")
    @classmethod
    def _readable_schema(cls, version: int) -> int:
        if not 1 <= version <= SCHEMA_VERSION:
            raise ValueError(RULES["schema_version"].format(value=version))
        return version

    @field_validator("files")
    @classmethod
    def _exactly_the_table_files(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if sorted(files) != EXPECTED_FILES:
            raise ValueError(RULES["files"])
        return files

    @field_validator("row_counts")
    @classmethod
    def _a_count_per_table(cls, counts: dict[str, int]) -> dict[str, int]:
        if set(counts) != set(TABLES):
            raise ValueError(RULES["row_counts"])
        return counts

    @field_validator("created_at")
    @classmethod
    def _plausible_time(cls, text: str) -> str:
        try:
            created = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{MANIFEST_NAME} created_at is not an ISO 8601 time") from None
        if not 2000 <= created.year <= datetime.now(timezone.utc).year + 1:
            raise ValueError(f"{MANIFEST_NAME} created_at {text!r} is not a plausible time")
        return text

    @field_validator("filters", mode="before")
    @classmethod
    def _no_filters(cls, filters: Any) -> Any:
        return {} if filters is None else filters  # an export without filters may write null

    @staticmethod
    def now() -> str:
        return datetime.now(timezone.utc).isoformat(timespec="seconds")

    def to_json(self) -> bytes:
        # no "derived": null: a snapshot without derived results reads as before they existed
        return json.dumps(self.model_dump(exclude={"derived"} if self.derived is None else None),
                          indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        """Parse and check a manifest; refuse what this version does not understand, in one line."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise SnapshotError(f"{MANIFEST_NAME} is {len(data)} bytes, not a shapebench manifest")
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise SnapshotError(f"{MANIFEST_NAME} is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise SnapshotError(f"{MANIFEST_NAME} is not a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:  # every absent key at once: defaults serve writers, not readers
            raise SnapshotError(f"{MANIFEST_NAME} lacks required keys: {', '.join(missing)}")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise SnapshotError(_refusal(e.errors()[0])) from None


def _refusal(error: dict[str, Any]) -> str:
    """The one line for pydantic's first error: a validator's own sentence, else the field's rule."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    field, *inner = error["loc"]
    if field == "files" and inner:
        return f"{MANIFEST_NAME} entry for {str(inner[0])[:80]} needs sha256 (a string) and bytes (an integer)"
    return RULES[str(field)].format(value=error["input"])
