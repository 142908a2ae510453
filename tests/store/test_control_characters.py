"""Text from data reaches terminals, spreadsheets and pages as text: names with control
characters are refused where they enter (a plan, an ingest, an import) and shown as escapes
where an older store still holds them; CSV downloads never start a cell with a formula; the
Overview's notes render regimes as text."""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from store.db import connect
from store.ingest import IngestError, ingest_run_dir
from store.snapshot import SnapshotError, export_snapshot, export_snapshot_bytes, import_snapshot, open_snapshot_bytes
from tests.runner.helpers import REPO_ROOT, cli_env, plan_dict, run_cli, write_plan
from tests.store.conftest import rezip, unzip
from vocabulary import csv_safe, printable

REGIME = "CPU Intel(R) Xeon(R) Processor | 2 threads"  # protocol-1 runs only: the Overview's note names it
HOSTILE_NAMES = ["gpt2\x1b[2J\x1b[H", "a\x1b]8;;https://evil.example\x07link\x1b]8;;\x07", "x\x1b[8mhidden",
                 "abc\u202edcba", "cr\roverwrite", "nul\x00"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_plan_naming_a_model_with_a_control_character_is_refused_in_one_line(tmp_path, name):
    custom = plan_dict()["models"]["custom"][:1]
    custom[0]["name"] = name
    done = run_cli("plan", write_plan(tmp_path / "plan.toml", models={"custom": custom}))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds a control character" in lines[0], done.stderr
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f\u202e]", done.stdout + done.stderr)


def _with(files: dict[str, bytes], table: str, column: str, value: str) -> bytes:
    tbl = pq.read_table(io.BytesIO(files[f"{table}.parquet"]))
    index = tbl.schema.get_field_index(column)
    tbl = tbl.set_column(index, column, pc.binary_join_element_wise(tbl[column], value, ""))
    buf = io.BytesIO()
    pq.write_table(tbl, buf)
    return rezip({**files, f"{table}.parquet": buf.getvalue()})


# a raw control character in a JSON document is not JSON: refused as such, before the text check
@pytest.mark.parametrize("table, column, must", [("cells", "model_name", "text without control characters"),
                                                 ("runs", "regime", "text without control characters"),
                                                 ("cells", "backend_options", "a JSON object"),
                                                 ("runs", "plan_name", "text without control characters")])
@pytest.mark.parametrize("bad", ["\x1b[2J", "\u202e", "\x9b31m"])
def test_an_import_with_control_characters_in_text_is_refused(bundled_con, tmp_path, table, column, must, bad):
    files = unzip(export_snapshot_bytes(bundled_con, regimes=[REGIME]))
    data = _with(files, table, column, bad)
    with pytest.raises(SnapshotError, match=f"^{table}.{column}: row 0 .* must be {must}$"):
        open_snapshot_bytes(data)
    store = connect(tmp_path / "store.duckdb")
    with pytest.raises(SnapshotError):
        import_snapshot(store, data)
    assert store.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]


def test_an_error_message_keeps_its_line_breaks(bundled_con):
    files = unzip(export_snapshot_bytes(bundled_con, regimes=[REGIME]))
    tbl = pq.read_table(io.BytesIO(files["cells.parquet"]))
    tbl = tbl.set_column(tbl.schema.get_field_index("error"), "error",
                         pa.array(["Traceback:\n\tline 1\r\n"] * tbl.num_rows, pa.string()))
    buf = io.BytesIO()
    pq.write_table(tbl, buf)
    assert open_snapshot_bytes(rezip({**files, "cells.parquet": buf.getvalue()}))


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    from runner.executor import execute
    from runner.plan import parse_plan

    models = {"custom": plan_dict()["models"]["custom"][:1]}
    [run] = execute(parse_plan(plan_dict(backends=["hf-eager"], models=models, gen_lens=[2])),
                    tmp_path_factory.mktemp("runs"))
    return run


def test_an_ingest_with_a_control_character_in_the_regime_is_refused_and_stores_nothing(one_run, tmp_path):
    import shutil

    from runner.runfiles import RunDir

    copy = RunDir(tmp_path / one_run.run_id)
    shutil.copytree(one_run.path, copy.path)
    copy.write_meta(copy.read_meta() | {"regime": "H100\x1b]8;;https://evil.example\x07"})
    con = connect(tmp_path / "store.duckdb")
    with pytest.raises(IngestError, match="runs.regime: row 0 .* must be text without control characters") as info:
        ingest_run_dir(con, copy.path)
    assert "\n" not in str(info.value)
    assert con.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]


def test_analyze_shows_control_characters_of_an_older_store_as_escapes(bundled_con, tmp_path):
    """A store written before these checks may hold them: output shows them as escapes."""
    store = tmp_path / "old.duckdb"
    con = connect(store)
    import_snapshot(con, export_snapshot_bytes(bundled_con, regimes=[REGIME]))
    con.execute("UPDATE cells SET model_name = model_name || '\x1b[2J\x1b]8;;https://evil.example\x07'")
    con.execute("UPDATE runs SET regime = regime || '\x1b[8m'")
    con.close()
    done = run_cli("analyze", "--db", store, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\\x1b" in done.stdout


def test_printable_shows_every_control_character_as_its_escape():
    assert printable("a\x1b[2Jb\u202ec\x00d\re\nf\tg") == "a\\x1b[2Jb\\u202ec\\x00d\\re\nf\tg"


def test_csv_cells_never_start_a_formula():
    frame = pd.DataFrame({"model_name": ["=HYPERLINK(\"https://evil.example\",\"x\")", "+1", "-2", "@SUM(A1)",
                                         "\tx", "plain", None],
                          "delta": [-1.5, 2, 3, 4, 5, 6, 7]})
    text = csv_safe(frame).to_csv(index=False)
    cells = [row[0] for row in csv.reader(io.StringIO(text))][1:]
    assert all(not c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)
    assert cells[0] == "'=HYPERLINK(\"https://evil.example\",\"x\")" and cells[5] == "plain"
    assert [row[1] for row in csv.reader(io.StringIO(text))][1] == "-1.5"  # numbers stay numbers


def test_the_pages_csv_downloads_go_through_csv_safe():
    for page in ("app_pages/explore.py", "app_pages/inversions.py"):
        source = (REPO_ROOT / page).read_text()
        downloads = re.findall(r'download_button\("Download CSV", lambda: ([^,]+),', source)
        assert downloads and all(d.startswith("csv_safe(") for d in downloads), (page, downloads)


@pytest.fixture
def hostile_regime_snapshot(bundled_con, tmp_path) -> Path:
    files = unzip(export_snapshot_bytes(bundled_con, regimes=[REGIME]))
    data = _with(files, "runs", "regime", " ![x](https://evil.example/p.png) [link](https://evil.example)")
    manifest_fixed = unzip(data)
    import json

    manifest = json.loads(manifest_fixed["manifest.json"])
    manifest["regimes"] = sorted({r + " ![x](https://evil.example/p.png) [link](https://evil.example)"
                                  for r in manifest["regimes"]})
    manifest_fixed["manifest.json"] = json.dumps(manifest).encode()
    out = tmp_path / "hostile.zip"
    out.write_bytes(rezip(manifest_fixed))
    return out


def test_overview_notes_show_regimes_as_text(hostile_regime_snapshot, tmp_path, monkeypatch):
    for key, value in {"SHAPEBENCH_SNAPSHOT": str(hostile_regime_snapshot), "SHAPEBENCH_CACHE": str(tmp_path / "cache"),
                       "SHAPEBENCH_DB": str(tmp_path / "absent.duckdb"), "SHAPEBENCH_RUNS": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SHAPEBENCH_HOSTED", raising=False)
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    render = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render
    texts = [c.value for c in at.caption] + [m.value for m in at.markdown]
    assert any("left out of these tables" in t for t in texts), texts
    for text in texts:
        html = render(text)
        assert "<img" not in html and 'href="https://evil.example' not in html, text
