"""The manifest model: the bundled manifest reads and writes back byte for byte, and every
refusal is one line that names what is wrong."""
from __future__ import annotations

import json

import pytest

from store.dataset import BUNDLED_SNAPSHOT
from store.snapshot_manifest import MANIFEST_NAME, Manifest, SnapshotError

BUNDLED = (BUNDLED_SNAPSHOT / MANIFEST_NAME).read_bytes()
GOOD = json.loads(BUNDLED)


def test_the_bundled_manifest_reads_and_writes_back_unchanged():
    manifest = Manifest.from_json(BUNDLED)
    assert manifest.to_json() == BUNDLED.rstrip(b"\n")
    assert Manifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize(("change", "names"), [
    ({"format_version": "1"}, "format_version"),
    ({"format_version": 0}, "format_version"),
    ({"schema_version": 1.5}, "schema version"),
    ({"files": {**GOOD["files"], "runs.parquet": {"sha256": 1, "bytes": 2}}}, "entry for runs.parquet"),
    ({"files": []}, "must list exactly the files"),
    ({"row_counts": {**GOOD["row_counts"], "runs": -1}}, "row_counts"),
    ({"regimes": [1]}, "regimes"),
    ({"filters": {"regimes": [1]}}, "filters"),
    ({"created_at": "2026-13-40"}, "created_at"),
])
def test_a_refusal_is_one_line_naming_the_field(change, names):
    with pytest.raises(SnapshotError) as refused:
        Manifest.from_json(json.dumps(GOOD | change).encode())
    message = str(refused.value)
    assert names in message and "\n" not in message and len(message) < 200, message


def test_an_export_without_filters_reads_as_no_filters():
    assert Manifest.from_json(json.dumps(GOOD | {"filters": None}).encode()).filters == {}
