"""Hosted read-only mode: the switch, and a connection that cannot reach outside itself."""
from __future__ import annotations

import io
import zipfile

import duckdb
import pandas as pd
import pytest

from store.db import connect_memory
from store.hosted import hosted_mode_enabled, lock_down, open_hosted, open_upload
from store.snapshot import SnapshotError, export_snapshot, export_snapshot_bytes


@pytest.mark.parametrize("environ, secrets, expected", [
    ({}, None, False),
    ({"SHAPEBENCH_HOSTED": "1"}, None, True),
    ({"SHAPEBENCH_HOSTED": "true"}, None, True),
    ({"SHAPEBENCH_HOSTED": "0"}, None, False),
    ({"SHAPEBENCH_HOSTED": ""}, {"SHAPEBENCH_HOSTED": True}, True),
    ({}, {"shapebench": {"hosted": "yes"}}, True),
    ({}, {"shapebench": {"hosted": False}}, False),
    ({}, {"other": 1}, False),
])
def test_hosted_mode_is_switched_on_by_env_or_secret(environ, secrets, expected):
    assert hosted_mode_enabled(environ, secrets) is expected


def test_secrets_that_raise_count_as_unset():
    class NoSecretsFile(dict):
        def get(self, *a):
            raise FileNotFoundError("no secrets.toml")
    assert hosted_mode_enabled({}, NoSecretsFile(x=1)) is False


@pytest.fixture
def hosted(store, tmp_path):
    export_snapshot(store, tmp_path / "snap.zip")
    return open_hosted(tmp_path / "snap.zip")


def test_hosted_connection_serves_the_snapshot(hosted, store, dump_store):
    assert dump_store(hosted) == dump_store(store)
    assert hosted.execute("SELECT count(*) FROM samples WHERE phase = 'decode'").fetchall()[0][0] == 36


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('http://example.com/snapshot.parquet')",
    "SELECT * FROM read_csv('https://example.com/data.csv')",
    "COPY runs TO '/tmp/shapebench-leak.csv'",
    "ATTACH '/tmp/shapebench-other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
])
def test_hosted_connection_cannot_reach_files_network_or_extensions(hosted, query):
    with pytest.raises(duckdb.PermissionException):
        hosted.execute(query)


@pytest.mark.parametrize("statement", [
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET GLOBAL enable_external_access = true",
    "PRAGMA enable_external_access = true",
    "SET lock_configuration = false",
    "SET allowed_directories = ['/']",
    "SET temp_directory = '/tmp'",
    "SET memory_limit = '100GB'",
])
def test_hosted_configuration_cannot_be_unlocked(hosted, statement):
    with pytest.raises(duckdb.Error, match="locked|disabled"):
        hosted.execute(statement)
    assert hosted.execute("SELECT current_setting('enable_external_access')").fetchall() == [(False,)]


def test_a_cursor_of_the_hosted_connection_is_locked_too(hosted):
    with pytest.raises(duckdb.Error, match="locked"):
        hosted.cursor().execute("SET enable_external_access = true")


def test_hosted_sql_cannot_see_the_servers_python_objects(hosted):
    server_secret = pd.DataFrame({"token": ["s3cr3t"]})  # noqa: F841 (looked up by name)
    with pytest.raises(duckdb.CatalogException):
        hosted.execute("SELECT * FROM server_secret")


def test_locking_one_snapshot_leaves_other_connections_alone(hosted):
    other = connect_memory()
    assert other.execute("SELECT current_setting('enable_external_access')").fetchall() == [(True,)]


def test_lock_down_refuses_a_malformed_memory_limit():
    with pytest.raises(ValueError, match="memory_limit"):
        lock_down(connect_memory(), memory_limit="1GB'; SET enable_external_access=true; --")


def test_lock_down_applies_a_memory_limit():
    con = lock_down(connect_memory(), memory_limit="256MiB")
    assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0].startswith("256")


def test_an_upload_opens_in_a_locked_in_memory_session(store, dump_store, tmp_path):
    con = open_upload(export_snapshot_bytes(store))
    assert dump_store(con) == dump_store(store)
    with pytest.raises(duckdb.PermissionException):
        con.execute("SELECT * FROM read_csv('/etc/passwd')")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("upload, match", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not a readable zip"),
    (b"name,value\na,1\n", "not a readable zip"),
    (b"", "not a readable zip"),
])
def test_an_arbitrary_file_upload_is_refused(upload, match):
    with pytest.raises(SnapshotError, match=match):
        open_upload(upload)


def test_an_unrelated_zip_upload_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("report.docx", b"hello")
    with pytest.raises(SnapshotError, match="not a shapebench snapshot"):
        open_upload(buf.getvalue())


def test_an_upload_over_the_size_limit_is_refused(store):
    data = export_snapshot_bytes(store)
    with pytest.raises(SnapshotError, match="over the limit"):
        open_upload(data, max_bytes=len(data) - 1)


def test_an_upload_that_is_a_zip_bomb_is_refused(store, forge):
    files = forge.unzip(export_snapshot_bytes(store))
    files["samples.parquet"] = b"\0" * (16 << 20)  # 16 MiB of zeros deflates ~1000x
    with pytest.raises(SnapshotError, match="decompression bomb"):
        open_upload(forge.rezip(files, fix_manifest=False))
