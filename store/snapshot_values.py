"""Values a measurement can have: what a snapshot's rows must satisfy beyond their types.

Checksums prove a snapshot arrived as it was written, not that what was written makes
sense: a hand-edited Parquet file can carry a NaN latency, a model with 0 layers or a run
from year 9999 with valid checksums. Each rule below is one SQL condition per column; a
snapshot is refused at the first row that breaks one, with a line naming the table, the
column, the row and its key. String bounds are checked twice: from the Parquet metadata
before anything is decoded (so a 100 MB model name never reaches memory) and per value
after.
"""
from __future__ import annotations

import duckdb
import pyarrow as pa

from runner.plan import BACKEND_NAMES, MAX_ROUNDS
from runner.runfiles import ENERGY_SOURCES, PEAK_FIELDS
from vocabulary import (CELL_STATUSES, CONTROL_CHARACTERS_IN_TEXT_SQL, CONTROL_CHARACTERS_SQL, DEVICES, DTYPES, FAMILIES,
                        PHASES, RUN_STATUSES, STOP_REASONS)
from store.snapshot_manifest import SnapshotError

KIB = 1 << 10
MIB = 1 << 20
# Longest value (in bytes) a text column may hold: ids and names are short, JSON records a
# few hundred bytes in practice (a plan with a long custom list reaches tens of KiB).
MAX_TEXT_BYTES: dict[str, dict[str, int]] = {
    "runs": {"run_id": 128, "series_id": 128, "status": 32, "plan_name": 256, "plan": MIB,
             "environment": 256 * KIB, "regime": 512, "device_kind": 16, "tool_version": 128,
             "git_revision": 128, "calibration": 256 * KIB, "machine_load": 64 * KIB},
    "cells": {"cell_id": 256, "run_id": 128, "cell_key": 64, "model_name": 256, "model_source": 32,
              "backend": 64, "backend_options": 64 * KIB, "device": 16, "dtype": 16, "status": 32,
              "error": 64 * KIB, "flags": 64, "correctness": 256 * KIB, "telemetry": 256 * KIB,
              "profile": MIB, "energy_source": 16, "resources": 256 * KIB},
    "samples": {"cell_id": 256, "phase": 16, "timer": 64},
}
# Free text and JSON documents: they may hold tabs and line breaks (a traceback), never any other
# control character; every other text column (a name, an id, a regime) holds none at all, so
# nothing from a snapshot or a run file can drive a terminal or hide text (vocabulary).
FREE_TEXT = frozenset({"error", "plan", "environment", "calibration", "backend_options", "correctness", "telemetry",
                       "profile", "resources", "machine_load"})
# A text column this version does not know yet (added by a newer schema) gets this bound.
DEFAULT_TEXT_BYTES = 64 * KIB
# A list column (flags) holds at most this many values per row.
MAX_LIST_LEN = 64
# Timestamps before this are not measurements made with this tool (year 1 is a forgery).
EARLIEST = "2000-01-01"
# Above these a count is not a GPT-2 measurement but an edit (a 2^31 layer model).
MAX_SHAPE = 1 << 20
MAX_LATENCY_MS = 86_400_000.0  # one timed region longer than a day: not a sample
MAX_BYTES = 1 << 50  # a petabyte of memory for one cell: an edit, not a measurement

_ID = r"'^[A-Za-z0-9][A-Za-z0-9._:-]*$'"


def _json_object(col: str) -> str:
    return f"CASE WHEN {col} IS NULL THEN true WHEN json_valid({col}) THEN json_type({col}) = 'OBJECT' ELSE false END"


# The JSON columns and the shape the analysis and the pages read them as: each an object (or
# NULL); a cell's resources hold their per-phase records under "phases", an object of objects.
JSON_OBJECTS = {"runs": ("plan", "environment", "calibration", "machine_load"),
                "cells": ("backend_options", "correctness", "telemetry", "profile", "resources")}
PHASE_RECORDS = ("CASE WHEN resources IS NULL THEN true WHEN json_valid(resources) THEN coalesce(json_type(resources, '$.phases') = 'OBJECT', true) "
                 "AND NOT list_contains(list_transform(json_extract(resources::VARCHAR, '$.phases.*'), "
                 "lambda v: json_type(v) = 'OBJECT'), false) ELSE false END")


def _in(values) -> str:
    return "IN (" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def _timestamp(col: str) -> str:
    # now() + 2 days: a snapshot made on a machine whose clock runs ahead is still fine.
    return f"{col} >= TIMESTAMP '{EARLIEST}' AND {col} <= now()::TIMESTAMP + INTERVAL 2 DAY"


def _seconds(col: str) -> str:
    return f"isfinite({col}) AND {col} >= 0 AND {col} < 1e7"


def _positive(col: str, cap: int = MAX_SHAPE) -> str:
    return f"{col} > 0 AND {col} <= {cap}"


# table -> [(column, condition, what the value must be[, how to show it])]; a NULL passes (NOT NULL is the
# store's own constraint, checked on insert).
RULES: dict[str, list[tuple[str, str, str]]] = {
    "runs": [
        ("run_id", f"regexp_full_match(run_id, {_ID})", "an id of letters, digits and ._:-"),
        ("status", f"status {_in(RUN_STATUSES)}", f"one of {', '.join(RUN_STATUSES)}"),
        ("device_kind", f"device_kind {_in(DEVICES)}", f"one of {', '.join(DEVICES)}"),
        ("regime", "strlen(trim(regime)) > 0", "a non-empty regime"),
        ("started_at", _timestamp("started_at"), f"a time between {EARLIEST} and now"),
        ("finished_at", _timestamp("finished_at"), f"a time between {EARLIEST} and now"),
        ("finished_at", "finished_at >= started_at", "no earlier than started_at"),
        ("n_cells_planned", "n_cells_planned >= 0", "a count >= 0"),
    ],
    "cells": [
        ("cell_id", "cell_id = run_id || '/' || cell_key", "run_id + '/' + cell_key"),
        ("cell_key", f"regexp_full_match(cell_key, {_ID})", "a key of letters, digits and ._:-"),
        ("model_name", "strlen(trim(model_name)) > 0", "a non-empty name"),
        ("n_layer", _positive("n_layer", 4096), "a positive layer count (at most 4096)"),
        ("n_embd", _positive("n_embd"), f"a positive width (at most {MAX_SHAPE})"),
        ("n_head", _positive("n_head"), "a positive head count"),
        ("n_head", "n_embd % n_head = 0", "a divisor of n_embd"),
        ("family", f"family {_in(FAMILIES)}", f"one of {', '.join(FAMILIES)}"),
        ("n_kv_head", _positive("n_kv_head"), "a positive head count"),
        ("n_kv_head", "n_head % n_kv_head = 0", "a divisor of n_head"),
        ("n_inner", _positive("n_inner", 1 << 24), "a positive size"),
        ("vocab_size", _positive("vocab_size", 1 << 24), "a positive size"),
        ("n_positions", _positive("n_positions", 1 << 24), "a positive size"),
        ("params", "params > 0", "a positive parameter count"),
        ("order_index", "order_index >= 0", "an index >= 0"),
        ("backend", f"backend {_in(BACKEND_NAMES)}", f"one of {', '.join(BACKEND_NAMES)}"),
        ("device", f"device {_in(DEVICES)}", f"one of {', '.join(DEVICES)}"),
        ("dtype", f"dtype {_in(DTYPES)}", f"one of {', '.join(DTYPES)}"),
        ("status", f"status {_in(CELL_STATUSES)}", f"one of {', '.join(CELL_STATUSES)}"),
        ("batch_size", _positive("batch_size"), f"a positive batch size (at most {MAX_SHAPE})"),
        ("prompt_len", _positive("prompt_len", 1 << 24), "a positive length"),
        ("gen_len", _positive("gen_len", 1 << 24), "a positive length"),
        ("setup_s", _seconds("setup_s"), "finite seconds >= 0"),
        ("cold_ms", "isfinite(cold_ms) AND cold_ms > 0", "finite milliseconds > 0"),
        ("warmup_iters", "warmup_iters >= 0", "a count >= 0"),
        ("warmup_s", _seconds("warmup_s"), "finite seconds >= 0"),
        ("measured_s", _seconds("measured_s"), "finite seconds >= 0"),
        ("check_s", _seconds("check_s"), "finite seconds >= 0"),
        ("rounds_used", f"rounds_used BETWEEN 1 AND {MAX_ROUNDS}", f"a round count from 1 to {MAX_ROUNDS}"),
        ("decode_half_width", "isfinite(decode_half_width) AND decode_half_width >= 0", "a finite half-width >= 0"),
        ("stop_reason", f"stop_reason {_in(STOP_REASONS)}", f"one of {', '.join(STOP_REASONS)}"),
        ("flags", f"len(flags) <= {MAX_LIST_LEN}", f"at most {MAX_LIST_LEN} flags"),
        ("started_at", _timestamp("started_at"), f"a time between {EARLIEST} and now"),
        ("finished_at", _timestamp("finished_at"), f"a time between {EARLIEST} and now"),
        ("finished_at", "finished_at >= started_at", "no earlier than started_at"),
        *((column, f"{column} > 0 AND {column} < {MAX_BYTES}", "a positive number of bytes (unknown is NULL, not 0)")
          for column in ("weight_bytes", "kv_cache_bytes", *PEAK_FIELDS)),
        ("energy_source", f"energy_source {_in(ENERGY_SOURCES)}", f"one of {', '.join(ENERGY_SOURCES)}"),
        ("resources", PHASE_RECORDS, 'a JSON object whose "phases" is an object of objects'),
    ],
    "samples": [
        ("phase", f"phase {_in(PHASES)}", f"one of {', '.join(PHASES)}"),
        ("rep", "rep >= 0", "an index >= 0"),
        ("step", "step >= 0", "an index >= 0"),
        ("step", "phase = 'decode' OR step = 0", "0 outside the decode phase"),
        ("latency_ms", f"isfinite(latency_ms) AND latency_ms > 0 AND latency_ms < {MAX_LATENCY_MS}",
         "a finite latency > 0 ms (and under a day)"),
        ("timer", "regexp_full_match(timer, '^[a-z0-9_]+$')", "a timer name (lowercase, digits, _)"),
    ],
}
for _table, _columns in JSON_OBJECTS.items():
    RULES[_table][:0] = [(c, _json_object(c), "a JSON object") for c in _columns]
KEY_COLUMN = {"runs": "run_id", "cells": "cell_id", "samples": "cell_id"}


def max_text_bytes(table: str, column: str) -> int:
    return MAX_TEXT_BYTES.get(table, {}).get(column, DEFAULT_TEXT_BYTES)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_text(t: pa.DataType) -> bool:
    while isinstance(t, pa.BaseExtensionType):
        t = t.storage_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _text_rules(table: str, tbl: pa.Table) -> list[tuple[str, str, str]]:
    rules = []
    for f in tbl.schema:
        t = f.type
        is_list = pa.types.is_list(t) or pa.types.is_large_list(t)
        if _is_text(t) or (is_list and _is_text(t.value_type)):
            limit = max_text_bytes(table, f.name)
            col = '"' + f.name.replace('"', '""') + '"'
            size = (f"list_max(list_transform({col}, lambda v: strlen(v::VARCHAR)))" if is_list
                    else f"strlen({col}::VARCHAR)")
            rules.append((f.name, f"{size} <= {limit}", f"at most {limit} bytes a value",
                          f"{size} || ' bytes'"))
            pattern = CONTROL_CHARACTERS_IN_TEXT_SQL if f.name in FREE_TEXT else CONTROL_CHARACTERS_SQL
            matches = (f"list_bool_or(list_transform({col}, lambda v: regexp_matches(v::VARCHAR, '{pattern}')))"
                       if is_list else f"regexp_matches({col}::VARCHAR, '{pattern}')")
            rules.append((f.name, f"NOT {matches}", "text without control characters"))
    return rules


def check_metadata_text(table: str, metadata) -> None:
    """Refuse a Parquet file whose text columns would decode past their per-value bound.

    Uses only the footer's uncompressed sizes, so nothing is decoded yet: a column chunk
    may hold at most its row count times the bound (plus page overhead).
    """
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            if chunk.physical_type != "BYTE_ARRAY":
                continue
            column = chunk.path_in_schema.split(".")[0]
            limit = max_text_bytes(table, column)
            allowed = group.num_rows * (limit + 16) * (MAX_LIST_LEN if column == "flags" else 1) + MIB
            if chunk.total_uncompressed_size > allowed:
                raise SnapshotError(
                    f"{table}.{column}: values would decode to {chunk.total_uncompressed_size} bytes for "
                    f"{group.num_rows} rows, over {limit} bytes a value; refused before decoding"
                )


def check_values(tables: dict[str, pa.Table]) -> None:
    """Refuse the first row, in table order, whose value no measurement can have."""
    con = duckdb.connect(":memory:")
    try:
        for table, tbl in tables.items():
            if not tbl.num_rows:
                continue
            present = set(tbl.schema.names)
            rules = [r for r in RULES.get(table, []) if r[0] in present] + _text_rules(table, tbl)
            view = tbl.append_column("_row", pa.array(range(tbl.num_rows), pa.int64()))
            firsts = ", ".join(f"min(_row) FILTER (WHERE NOT coalesce(({cond}), true))" for _, cond, *_ in rules)
            try:
                con.register("_snapshot_rows", view)
                bad = con.execute(f"SELECT {firsts} FROM _snapshot_rows").fetchall()[0]
            except duckdb.Error as e:
                raise SnapshotError(f"{table}.parquet: values cannot be checked: {str(e).splitlines()[0]}") from None
            found = [(row, rule) for row, rule in zip(bad, rules) if row is not None]
            if found:
                row, (column, _, must, *display) = min(found, key=lambda x: x[0])
                key = KEY_COLUMN[table]
                shown = display[0] if display else '"' + column.replace('"', '""') + '"'
                value, key_value = con.execute(
                    f"SELECT {shown}, left({key}::VARCHAR, 200) FROM _snapshot_rows WHERE _row = ?", [row]
                ).fetchall()[0]
                raise SnapshotError(
                    f"{table}.{column}: row {row} ({key} {_short(key_value)}) has "
                    f"{value if display else _short(value)}; must be {must}"
                )
            con.unregister("_snapshot_rows")
    finally:
        con.close()
