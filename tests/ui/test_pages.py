"""AppTest per page: on the bundled H100 snapshot and on a store the real runner made on the CPU."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dashboard import runs as dashboard_runs
from store.dataset import BUNDLED_SNAPSHOT
from tests.ui.conftest import PAGES, ROOT, assert_clean, fail_cells, fake_running_run, plotly_specs, texts


def bundled_run_ids(plan_name: str, regime_like: str, executor_not: str = "") -> set[str]:
    """Run ids of the bundled snapshot, read from its runs table (never written out here)."""
    import duckdb

    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT run_id FROM read_parquet(?) WHERE plan_name = ? AND regime LIKE ? "
            "AND coalesce(json_extract_string(environment, '$.executor'), 'direct') <> ?",
            [str(BUNDLED_SNAPSHOT / "runs.parquet"), plan_name, regime_like, executor_not]).fetchall()
    finally:
        con.close()
    assert len(rows) >= 2, "the bundled snapshot measures the H100 seed plan more than once"
    return {r[0] for r in rows}


def open_page(at, page):
    at.run()
    if page != "overview":
        at.switch_page(PAGES[page]).run()
    return at


# --- bundled snapshot (real H100 data) --------------------------------------------------

def test_overview_on_bundled_snapshot_leads_with_the_headline_of_analysis_headline(app_env):
    from analysis.headline import headline_for, headline_sections, split_by_regime
    from store.snapshot import open_snapshot

    at = open_page(app_env(), "overview")
    assert_clean(at)
    assert texts(at, "title") == ["Does shape drive latency?"]
    sections = headline_sections(headline_for(open_snapshot(BUNDLED_SNAPSHOT)))
    subheaders = texts(at, "subheader")
    assert subheaders[:len(sections)] == [title for title, _, _ in sections], "the headline comes first"
    seed_title, _, seed_rows = sections[0]
    assert seed_title.startswith("The seed pair") and len(seed_rows)
    # the wide tables are shown per regime, under the regime's name, in the headline's order
    expected = [(regime, rows) for _, _, table in sections if len(table) for regime, rows in split_by_regime(table)]
    shown = [frame.value for frame in at.dataframe[:len(expected)]]
    assert [f.astype(str).values.tolist() for f in shown] == [r.astype(str).values.tolist() for _, r in expected], \
        "the headline's rows, as README shows them"
    regimes = [regime for regime, _ in expected if regime is not None]
    assert regimes and all(any(regime in m for m in texts(at, "markdown")) for regime in regimes)
    for section in ("Which shape variable explains latency", "Data coverage", "Integrity warnings"):
        assert section in subheaders
    assert any("NVIDIA H100" in m for m in texts(at, "markdown")), "the driver verdict per regime"


def test_sidebar_shows_the_open_dataset_and_its_size(app_env):
    at = open_page(app_env(), "overview")
    assert any("bundled snapshot" in c for c in texts(at.sidebar, "caption"))
    metrics = {m.label: m.value for m in at.sidebar.metric}
    manifest = json.loads((BUNDLED_SNAPSHOT / "manifest.json").read_text())
    assert metrics["Cells"] == f"{manifest['row_counts']['cells']:,}"
    assert metrics["Runs"] == f"{manifest['row_counts']['runs']:,}"
    assert metrics["Regimes"] == str(len(manifest["regimes"]))


def test_depth_width_shows_fits_with_bands_and_predicts_a_new_shape(app_env):
    at = open_page(app_env(), "depth_width")
    assert_clean(at)
    specs = plotly_specs(at)
    assert len(specs) == 2
    names = [t.get("name", "") for spec in specs for t in spec["data"]]
    assert any("fit" in n for n in names), names
    assert any(" CI" in n for n in names), "fitted lines come with their CI band"
    assert any(m.label.startswith("Predicted median latency of 10 x 256") for m in at.metric)
    assert not any(m.proto.delta for m in at.metric), "the CI is text, not a delta arrow"
    assert any(t.startswith("95% CI of the median:") for t in texts(at, "markdown"))
    at.number_input(key="dw_pred_depth").set_value(64).run()
    assert any("extrapolation" in w for w in texts(at, "warning"))


def test_inversions_heatmap_and_ranked_table_with_cis(app_env):
    at = open_page(app_env(), "inversions")
    assert_clean(at)
    spec = plotly_specs(at)[0]
    assert spec["data"][0]["type"] == "heatmap"
    table = at.dataframe[0].value
    assert {"ratio", "ratio_ci_low", "ratio_ci_high"} <= set(table.columns)
    assert (table["ratio_ci_low"] > 1).all(), "significant only by default"
    assert list(table["ratio_ci_low"]) == sorted(table["ratio_ci_low"], reverse=True)


def test_regimes_compares_the_depth_effect_on_h100_and_h200_and_across_backends(app_env):
    at = open_page(app_env(), "regimes")
    assert_clean(at)
    titles = [s["layout"]["title"]["text"] for s in plotly_specs(at)]
    assert "Depth elasticity per regime (95% CI)" in titles and "Depth elasticity per backend (95% CI)" in titles
    for spec in plotly_specs(at):
        if spec["layout"]["title"]["text"].startswith("Depth elasticity per"):
            names = [t["name"] for t in spec["data"]]
            assert len(names) == len(set(names)), "each regime or backend named once in the legend"
    regimes = {t["name"] for s in plotly_specs(at) if s["layout"]["title"]["text"] == "Latency vs parameters per regime"
               for t in s["data"]}
    assert any("H100" in r for r in regimes) and any("H200" in r for r in regimes)


def _pick(at, key: str, *parts: str):
    """Choose the first option of a selectbox whose label contains every part. The options are
    ids shown through a format_func ("<id>  (<count> ...)"), which AppTest's select_index does
    not invert, so the id is set as state."""
    label = next(o for o in at.selectbox(key=key).options if all(p in o for p in parts))
    value = label.split("  (")[0]
    if key == "why_group":  # (regime, backend, dtype); the regime itself holds " | "
        *regime, backend, dtype = value.split(" | ")
        value = (" | ".join(regime), backend, dtype)
    at.session_state[key] = value
    return at.run()


def test_why_splits_each_h100_decode_step_and_fits_the_cost_per_launch_with_a_ci(app_env):
    at = open_page(app_env(), "why")
    assert_clean(at)
    at = _pick(at, "why_group", "H100", "| hf-eager | float32")
    assert_clean(at)
    components, kernels = plotly_specs(at)
    assert components["layout"]["barmode"] == "stack"
    names = [t["name"] for t in components["data"]]
    assert [n.split(" ")[0] for n in names[:4]] == ["launch", "memory", "compute", "not"]
    assert "measured median" in names
    bars = components["data"][0]["x"]
    assert len({b.split(" [")[0] for b in bars}) == 43, "every profiled H100 hf-eager float32 shape has a bar"
    assert len(bars) > 43, "a shape profiled in two calibrated runs has a bar per cell, labelled by cell"
    assert {t["name"] for t in kernels["data"]} == {"cuda-graph", "hf-eager", "hf-sdpa", "torch-compile"}
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Bandwidth (calibrated)"].endswith("GB/s") and metrics["Launch (calibrated floor)"].endswith("µs")
    fits = at.dataframe[0].value
    row = fits[(fits["backend"] == "hf-eager") & (fits["dtype"] == "float32") & fits["regime"].str.contains("H100")].iloc[0]
    assert row["cost per"] == "launch" and float(row["CI low"]) < float(row["µs"]) < float(row["CI high"])
    assert metrics["Fitted cost per launch"] == f"{float(row['µs']):.1f} µs"
    assert not fits.isin(["None", "nan"]).any().any(), "an absent fit reads as a dash"
    graph = fits[(fits["backend"] == "cuda-graph") & (fits["dtype"] == "float32")].iloc[0]
    assert graph["cost per"] == "kernel in a CUDA graph"
    verdicts = next(d.value for d in at.dataframe if "not explained ms" in d.value.columns)
    assert len(verdicts) == len(bars)
    assert set(verdicts["verdict"]) <= {"launch-bound", "memory-bound", "compute-bound", "mostly unexplained"}
    # the verdict stands on the tallest bar: "not explained" is never the largest part of a bound cell
    bound = verdicts[verdicts["verdict"] != "mostly unexplained"]
    parts = bound[["launch ms (fitted cost)", "memory_ms", "compute_ms"]].map(float).max(axis=1)
    assert (bound["not explained ms"].map(float) <= parts).all()


def test_reproducibility_shows_the_two_runs_of_the_h100_seed_plan(app_env):
    at = open_page(app_env(), "reproducibility")
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Repeated cell-phases"].replace(",", "")) > 0
    at = _pick(at, "repro_group", "NVIDIA H100", "hf-sdpa | decode | float32")  # on the H100 only the seed plan has hf-sdpa
    assert_clean(at)
    (spec,) = plotly_specs(at)
    runs = {t["name"] for t in spec["data"]}
    assert bundled_run_ids(plan_name="seed", regime_like="%H100%", executor_not="ray") <= runs
    assert "between_run_sd" in at.dataframe[0].value.columns
    assert "Irreproducible cells and what differed between their runs" in texts(at, "subheader")


def test_inversions_links_to_why_and_explains_a_profiled_inversion(app_env):
    at = open_page(app_env(), "inversions")
    assert_clean(at)
    assert [p.proto.label for p in at.get("page_link")] == ["Why is it slow?"]
    # an H200 hf-eager decode group whose strongest inversion is significant across runs (a one-round cell
    # of one run has no CI): the one with the most, read from the page, because with 2 runs the pairs' p-values
    # sit at the bootstrap's floor and which group passes FDR moves with the resampling
    options = [o for o in at.selectbox(key="inv_group").options
               if o.startswith("NVIDIA H200 | driver 580.159.04 | CUDA 13.0 | hf-eager | decode |")]
    best = max(options, key=lambda o: int(o.rsplit("(", 1)[1].split()[0]))
    at.session_state["inv_group"] = best.split("  (")[0]
    at.run()
    assert_clean(at)
    (why,) = [m for m in texts(at, "markdown") if m.startswith("**Strongest inversion here")]
    assert "kernels per token" in why and "launch-bound" in why


def test_explore_backend_filter_changes_the_table_and_the_url(app_env):
    at = open_page(app_env(), "explore")
    assert_clean(at)
    before = at.dataframe[0].value
    assert before["backend"].nunique() > 1
    at = app_env().run()  # AppTest runs the entrypoint (the sidebar) on the first run only
    at.multiselect(key="filter_backend").set_value(["cuda-graph"])
    at.switch_page(PAGES["explore"]).run()
    after = at.dataframe[0].value
    assert set(after["backend"]) == {"cuda-graph"} and len(after) < len(before)
    assert at.query_params["backend"] in ("cuda-graph", ["cuda-graph"])


def test_a_shared_link_opens_with_its_filters(app_env):
    at = app_env()
    at.query_params["phase"] = "prefill"
    at.query_params["batch"] = ["1"]
    open_page(at, "explore")
    assert_clean(at)
    table = at.dataframe[0].value
    measured = table[table["status"] == "ok"]
    assert set(measured["phase"]) == {"prefill"} and set(table["batch_size"]) == {1}
    # cells that failed or were refused have no phase: they stay listed, with their reason
    assert (table[table["phase"].isna()]["status"] != "ok").all()


# --- store made by the real runner ------------------------------------------------------

@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_on_the_runner_store(app_env, runner_store, page):
    db, runs = runner_store
    at = app_env(db, runs).run()
    assert any("store file" in c for c in texts(at.sidebar, "caption"))
    if page != "overview":
        at.switch_page(PAGES[page]).run()
    assert_clean(at)
    assert at.title, "each page has a title"


def test_explore_lists_the_runner_cells_and_their_sample_distributions(app_env, runner_store):
    db, runs = runner_store
    at = open_page(app_env(db, runs), "explore")
    table = at.dataframe[0].value
    assert set(table["model_name"]) == {"tiny-gpt2", "4x64", "1x128"}
    assert set(table["backend"]) == {"hf-eager", "hf-sdpa"}
    assert (table["median"] > 0).all()
    spec = plotly_specs(at)[0]
    assert spec["data"][0]["customdata"], "points carry cell ids for selection"


def test_depth_width_on_three_shapes_explains_that_more_shapes_are_needed(app_env, runner_store):
    db, runs = runner_store
    at = open_page(app_env(db, runs), "depth_width")
    assert_clean(at)
    assert any("too few distinct shapes" in i for i in texts(at, "info"))
    assert len(plotly_specs(at)) == 2, "the measured points are still drawn"


def test_failed_cells_are_listed_with_their_errors(app_env, copy_store):
    db, runs = copy_store
    fail_cells(db, "4x64", "CUDA out of memory. Tried to allocate 2.00 GiB")
    at = open_page(app_env(db, runs), "overview")
    assert_clean(at)
    assert any("failed or are unsupported" in w for w in texts(at, "warning"))
    integrity = at.dataframe[-1].value
    assert "CUDA out of memory" in " ".join(integrity["error"].dropna())


def test_empty_store_tells_how_to_start(app_env, tmp_path):
    at = app_env(tmp_path / "new.duckdb", kind="store file")
    for page in ("overview", "explore", "depth_width", "inversions", "regimes", "why", "reproducibility"):
        at = open_page(at, page)
        assert_clean(at)
        assert any("Run" in i for i in texts(at, "info")), page
    assert not (tmp_path / "new.duckdb").exists(), "nothing is created before the first ingest"


def test_run_page_validates_next_to_the_field_and_blocks_start(app_env, runner_store):
    db, runs = runner_store
    at = open_page(app_env(db, runs), "run")
    assert_clean(at)
    assert any("cell" in m and "estimate" in m for m in texts(at, "markdown")), "time estimate"
    assert any(_toml_reference(c) == ["tiny-gpt2"] for c in texts(at, "code")), "plan as TOML"
    assert not at.button(key="run_start").disabled
    at.text_input(key="run_depths").set_value("1, x").run()
    assert any("whole numbers" in e for e in texts(at, "error"))
    assert at.button(key="run_start").disabled
    at.text_input(key="run_depths").set_value("").run()
    at.text_input(key="run_prompt").set_value("1000")
    at.text_input(key="run_gen").set_value("100").run()
    assert any("exceed" in e and "context" in e for e in texts(at, "error"))


def test_run_in_progress_shows_cells_done_current_cell_and_eta(app_env, copy_store, tmp_path):
    db, runs = copy_store
    at = app_env(db, runs)
    # the dashboard trusts only a run it started itself: start one whose "python" only waits,
    # then lay down the run directory it would have written
    stand_in = tmp_path / "python"
    stand_in.write_text("#!/bin/sh\nexec sleep 600\n")
    stand_in.chmod(0o755)
    started = dashboard_runs.start('name = "in-progress"', "in-progress", runs, lock=tmp_path / "run.lock",
                                   python=str(stand_in))
    fake_running_run(runs, None)
    try:
        at = open_page(at, "run")
        check_run_in_progress(at)
    finally:
        dashboard_runs.cancel(int(started["pid"]), grace_s=5)


def check_run_in_progress(at) -> None:
    """The Run page and the Overview of a run measuring two cells in, one failed."""
    assert_clean(at)
    bar = at.get("progress")[0]
    assert "2 / 5 cells" in bar.proto.text and "1 failed" in bar.proto.text and "ETA" in bar.proto.text
    assert any("gpt2-5m" in m for m in texts(at, "markdown")), "current cell"
    assert any("out of memory" in c for c in texts(at, "code")), "recent log lines"
    assert at.button(key="run_start").disabled, "one run at a time"
    at.switch_page(PAGES["overview"]).run()
    assert any("in progress" in i for i in texts(at, "info"))


def test_why_and_reproducibility_on_the_runner_store_say_what_to_measure(app_env, runner_store):
    db, runs = runner_store
    at = open_page(app_env(db, runs), "why")
    assert_clean(at)
    assert any("`profile = true`" in i and "`calibrate = true`" in i for i in texts(at, "info"))
    at.switch_page(PAGES["reproducibility"]).run()
    assert_clean(at)
    assert any(i.startswith("No repeated cells") and "repeats = N" in i for i in texts(at, "info"))


def test_hosted_mode_has_no_run_page_and_no_import(app_env):
    at = app_env(hosted=True).run()
    assert_clean(at)
    assert "hosted" in " ".join(texts(at.sidebar, "caption")).lower()
    with pytest.raises(ValueError):
        at.switch_page(PAGES["run"])
    at.switch_page(PAGES["snapshots"]).run()
    assert not [b for b in at.button if b.key == "snap_import"]


def test_hosted_app_never_imports_torch():
    code = (
        "import os, sys; os.environ['SHAPEBENCH_HOSTED'] = '1'\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(ROOT / 'app.py')!r}, default_timeout=120).run()\n"
        "for p in ['explore', 'depth_width', 'inversions', 'regimes', 'why', 'reproducibility', 'snapshots']:\n"
        "    at.switch_page(f'app_pages/{p}.py').run(); assert not at.exception, at.exception\n"
        "print('TORCH' if 'torch' in sys.modules or 'transformers' in sys.modules else 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.stdout.strip().endswith("CLEAN"), out.stdout[-500:] + out.stderr[-2000:]


def test_a_problem_naming_a_hostile_path_is_shown_as_text_not_markdown(app_env, tmp_path):
    from dashboard.source import SNAPSHOT

    hostile = str(tmp_path / "![x](https://evil.example/p.png)")
    at = app_env(kind=SNAPSHOT)
    at.session_state["_kept_snapshot_path"] = hostile
    at.run()
    [warning] = [w for w in at.warning if "could not open the snapshot path" in w.value]
    assert "![x](" not in warning.value, "markdown escaped: no image for the visitor's browser to fetch"
    assert "evil.example" in " ".join(texts(at, "warning")), "the path is still shown, as text"


def _toml_reference(code: str) -> list | None:
    """The plan's `[models] reference` when `code` is a TOML plan, else None."""
    import tomllib

    try:
        return tomllib.loads(code).get("models", {}).get("reference")
    except tomllib.TOMLDecodeError:
        return None
