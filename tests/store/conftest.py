"""Fixtures for store tests: a small, realistic store built row by row in memory, and
helpers to take a snapshot apart and put it back together (to forge bad ones)."""
from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.db import connect_memory
from store.schema import TABLES

H100 = "NVIDIA H100 80GB HBM3 x1 | driver 580.65 | CUDA 13.0"
EPYC = "AMD EPYC 9654 96-Core Processor x16 threads"
# name -> (n_layer, n_embd, n_head, params), from the reference family in DESIGN.md
MODELS = {
    "tiny-gpt2": (2, 2, 2, 102_000),
    "gpt2-5m": (12, 80, 2, 5_040_000),
    "gpt2-25m": (3, 384, 2, 25_000_000),
    "gpt2-45m": (6, 512, 8, 45_200_000),
}
T0 = datetime(2026, 11, 20, 9, 30)


def insert(con, table: str, rows: list[dict]) -> None:
    """Insert dict rows by column name; columns left out are NULL."""
    con.register("_rows", pa.Table.from_pylist(rows))
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
    con.unregister("_rows")


class StoreBuilder:
    """Adds runs, cells and their raw samples with the values a real run would store."""

    def __init__(self, con):
        self.con = con
        self.rng = random.Random(0)

    def run(self, run_id: str, *, regime: str = H100, status: str = "finished", n_cells: int = 2) -> str:
        cuda = regime == H100
        insert(self.con, "runs", [{
            "run_id": run_id, "series_id": "series-" + run_id[:6],
            "started_at": T0, "finished_at": T0 + timedelta(minutes=12) if status != "running" else None,
            "status": status, "plan_name": "depth-vs-width",
            "plan": json.dumps({"models": list(MODELS), "backends": ["hf-eager", "hf-sdpa"]}),
            "environment": json.dumps({"torch": "2.13.0", "transformers": "5.19.0",
                                       "host": "bench-01", "device": regime.split(" | ")[0]}),
            "regime": regime, "device_kind": "cuda" if cuda else "cpu",
            "tool_version": "0.1.0", "git_revision": "f551424", "shuffle_seed": 1234,
            "n_cells_planned": n_cells,
        }])
        return run_id

    def cell(self, run_id: str, model: str = "gpt2-5m", backend: str = "hf-sdpa", *,
             dtype: str = "bfloat16", device: str = "cuda", batch_size: int = 1,
             prompt_len: int = 128, gen_len: int = 4, reps: int = 3) -> str:
        n_layer, n_embd, n_head, params = MODELS[model]
        key = hashlib.sha1(f"{model}|{backend}|{device}|{dtype}|{batch_size}|{prompt_len}|{gen_len}"
                           .encode()).hexdigest()[:12]
        cell_id = f"{run_id}/{key}"
        order = self.con.execute("SELECT count(*) FROM cells WHERE run_id = ?", [run_id]).fetchall()[0][0]
        base = 0.02 * n_layer + n_embd / 2000  # ms; deeper models are slower
        insert(self.con, "cells", [{
            "cell_id": cell_id, "run_id": run_id, "cell_key": key, "order_index": order,
            "model_name": model, "model_source": "registry", "n_layer": n_layer, "n_embd": n_embd,
            "n_head": n_head, "n_inner": 4 * n_embd, "vocab_size": 50257, "n_positions": 1024,
            "params": params, "backend": backend,
            "backend_options": json.dumps({"attn_implementation": backend.removeprefix("hf-")}),
            "device": device, "dtype": dtype, "batch_size": batch_size, "prompt_len": prompt_len,
            "gen_len": gen_len, "status": "ok", "error": None, "setup_s": 1.84, "cold_ms": 41.7,
            "warmup_iters": 12, "warmup_s": 0.35, "warmup_converged": True, "measured_s": 2.1,
            "flags": ["high_cv"] if order % 2 else [],
            "correctness": json.dumps({"max_rel_err": 0.0031, "tokens_checked": gen_len, "ok": True}),
            "telemetry": json.dumps({"before": {"sm_clock_mhz": 1980, "temp_c": 41},
                                     "after": {"sm_clock_mhz": 1980, "temp_c": 44}}),
            "started_at": T0 + timedelta(seconds=30 * order),
            "finished_at": T0 + timedelta(seconds=30 * order + 25),
        }])
        timer = "cuda_event" if device == "cuda" else "perf_counter_ns"
        rows = []
        for rep in range(reps):
            for phase, steps, scale in (("prefill", 1, 3.0), ("decode", gen_len, 1.0), ("e2e", 1, 1.0 + gen_len)):
                for step in range(steps):
                    rows.append({"cell_id": cell_id, "phase": phase, "rep": rep, "step": step,
                                 "latency_ms": round(base * scale * self.rng.uniform(0.97, 1.05), 5),
                                 "timer": timer})
        insert(self.con, "samples", rows)
        return cell_id


@pytest.fixture
def builder() -> StoreBuilder:
    """An empty in-memory store with a builder over it (builder.con is the connection)."""
    return StoreBuilder(connect_memory())


@pytest.fixture
def store(builder: StoreBuilder):
    """Two runs on two regimes: a finished H100 run with two backends, a running CPU run."""
    b = builder
    b.run("run-h100-a")
    b.cell("run-h100-a", "gpt2-5m", "hf-sdpa")
    b.cell("run-h100-a", "gpt2-25m", "hf-eager")
    b.run("run-epyc-b", regime=EPYC, status="running", n_cells=3)
    b.cell("run-epyc-b", "tiny-gpt2", "hf-eager", dtype="float32", device="cpu")
    return b.con


def dump(con) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: equal dumps mean equal stores."""
    return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}


@pytest.fixture
def dump_store():
    return dump


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rezip(files: dict[str, bytes], *, fix_manifest: bool = True, names: dict[str, str] | None = None) -> bytes:
    """Zip files back up; by default re-sign the manifest so that only the intended flaw
    remains (a forged table must fail the schema check, not the checksum)."""
    files = dict(files)
    if fix_manifest and "manifest.json" in files:
        manifest = json.loads(files["manifest.json"])
        for name in manifest["files"]:
            if name in files:
                manifest["files"][name] = {"sha256": hashlib.sha256(files[name]).hexdigest(),
                                           "bytes": len(files[name])}
                table = name.removesuffix(".parquet")
                manifest["row_counts"][table] = pq.read_table(io.BytesIO(files[name])).num_rows
        files["manifest.json"] = json.dumps(manifest).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr((names or {}).get(name, name), data)
    return buf.getvalue()


def parquet(tbl: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(tbl, buf, compression="zstd")
    return buf.getvalue()


class Forge:
    """Take a snapshot apart: unzip, rezip, read and write its Parquet files."""

    unzip = staticmethod(unzip)
    rezip = staticmethod(rezip)
    parquet = staticmethod(parquet)

    @staticmethod
    def table(files: dict[str, bytes], table: str) -> pa.Table:
        return pq.read_table(io.BytesIO(files[f"{table}.parquet"]))


@pytest.fixture
def forge() -> type[Forge]:
    return Forge


@pytest.fixture
def good(store, forge) -> dict[str, bytes]:
    """The files of a valid snapshot of `store`, by name."""
    from store.snapshot import export_snapshot_bytes

    return forge.unzip(export_snapshot_bytes(store))


def refused(con, source, dump_store, match: str, *, max_chars: int | None = None, **kw) -> str:
    """Import `source`, expect a refusal matching `match`, and check the store is untouched:
    one line (at most `max_chars` when given)."""
    from store.snapshot import SnapshotError, import_snapshot

    before = dump_store(con)
    with pytest.raises(SnapshotError, match=match) as info:
        import_snapshot(con, source, **kw)
    assert dump_store(con) == before
    message = str(info.value)
    assert "\n" not in message
    if max_chars is not None:
        assert len(message) < max_chars
    return message
