"""Snapshots: export the current selection, import one into the store, or open one in this session."""
import streamlit as st

from dashboard import cache, filters as flt, source, ui
from dashboard.text import md


def _open_upload(data: bytes, name: str) -> None:
    """Callback: open the upload in memory (locked down) and switch the sidebar to it."""
    from store.hosted import open_upload
    from store.snapshot import SnapshotError

    try:
        con = open_upload(data)
    except SnapshotError as error:
        st.session_state["_snap_msg"] = ("error", f"Refused: {md(error, 2000)}")
        return
    old = st.session_state.get(source.UPLOAD_KEY)
    if old:
        old[1].close()
    st.session_state[source.UPLOAD_KEY] = (ui.sha256(data), con, name)
    st.session_state["_kept_dataset_kind"] = source.UPLOAD
    st.session_state["_snap_msg"] = ("success", f"Opened {name} read-only in this session (sidebar: uploaded snapshot).")


def _import(ctx: cache.Context, data: bytes, name: str) -> None:
    from runner.runfiles import list_run_dirs
    from store.snapshot import SnapshotError, import_snapshot

    try:
        live = [d.run_id for d in list_run_dirs(ctx.runs_dir) if d.read_meta().get("status") == "running"]
        with source.store_file(str(ctx.store)).writing() as con:
            report = import_snapshot(con, data, live_runs=live)  # a run measuring here is never changed
    except SnapshotError as error:
        st.session_state["_snap_msg"] = ("error", f"Refused, store unchanged: {md(error, 2000)}")
        return
    except Exception as error:  # noqa: BLE001 - e.g. the store file is locked by another process
        st.session_state["_snap_msg"] = ("error", f"Could not import into {ctx.store}: {str(error).splitlines()[0]}")
        return
    st.session_state["_kept_dataset_kind"] = source.STORE
    st.session_state["_snap_msg"] = ("success", f"Imported {name} into {ctx.store}: {report}")


def _snapshot_bytes(ctx: cache.Context, regimes: list[str] | None, backends: list[str] | None) -> bytes:
    from store.snapshot import export_snapshot_bytes

    with ctx.reading() as con:
        return export_snapshot_bytes(con, regimes=regimes, backends=backends)


def _report_html(ctx: cache.Context) -> str:
    from analysis.html_report import build_report

    with ctx.reading() as con:
        return build_report(con, {k: v for k, v in ctx.selection.items() if v}, title=f"shapebench: {ctx.label}")


def body(ctx: cache.Context) -> None:
    st.title("Snapshots")
    st.caption("A snapshot is a zip of Parquet tables (runs, cells, raw samples) with a manifest of row counts and "
               "checksums: how measurements travel between machines.")
    msg = st.session_state.pop("_snap_msg", None)
    if msg:
        getattr(st, msg[0])(msg[1])

    st.subheader("Export the current selection")
    regimes, backends = ctx.selection.get("regime") or None, ctx.selection.get("backend") or None
    ignored = [flt.BY_COLUMN[c].label.lower() for c in ("phase", "dtype", "batch_size", "prompt_len") if ctx.selection.get(c)]
    st.markdown(f"From **{md(ctx.label)}**: regimes {md(', '.join(regimes), 2000) if regimes else 'all'}; "
                f"backends {md(', '.join(backends)) if backends else 'all'}.")
    if ignored:
        st.caption(f"Snapshots select whole runs and backends: the {', '.join(ignored)} filter is not applied to the export.")
    if ctx.summary["cells"] == 0:
        st.info("Nothing to export: this dataset is empty.")
    else:
        st.download_button(
            "Download snapshot (.zip)",
            lambda: _snapshot_bytes(ctx, regimes, backends),
            "shapebench-snapshot.zip", "application/zip", on_click="ignore", type="primary", key="snap_export")
        st.download_button(
            "Download HTML report",
            lambda: _report_html(ctx),
            "shapebench-report.html", "text/html", on_click="ignore", key="report_export",
            help="One self-contained file: headline inversions, verdicts and the interactive charts of the current "
                 "selection (all filters apply), viewable without any server.")

    st.subheader("Load a snapshot")
    from store.snapshot import UPLOAD_LIMITS

    session_mb = UPLOAD_LIMITS.max_bytes // 2**20
    upload = st.file_uploader("Snapshot zip", type=["zip"], key="snap_upload", max_upload_size=ui.upload_limit_mb(ctx.hosted))
    if upload is None:
        st.caption(f"Upload a snapshot zip to open it read-only in this session (up to {session_mb} MB)"
                   + ("" if ctx.hosted else f" or to merge it into the store file (up to {ui.upload_limit_mb(False)} MB)") + ".")
        return
    data = upload.getvalue()
    c1, c2 = st.columns(2)
    c1.button("Open read-only in this session", on_click=_open_upload, args=(data, upload.name), key="snap_open")
    if ctx.hosted:
        c2.caption("Hosted mode: imports into a store are switched off.")
    else:
        c2.button(f"Import into the store ({ctx.store})", on_click=_import, args=(ctx, data, upload.name),
                  key="snap_import", help="validated, idempotent, all or nothing")


ui.guard(body)
