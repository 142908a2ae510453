"""The Why page on the bundle: a layer's hand-offs and weight reads and the LM head, fitted beside
the calibrated figures ("not calibrated" where the bundled runs predate the hand-off probe), and
every backend's decode time over its weight-read limit at the measured and datasheet bandwidths."""
from __future__ import annotations

from store.dataset import BUNDLED_SNAPSHOT
from tests.ui.conftest import PAGES, assert_clean, texts

FUSED_REGIME = "NVIDIA H200 | driver 580.159.04 | CUDA 13.0 | host 5be464da"
CPU_REGIME = "CPU Intel(R) Xeon(R) Processor | 2 threads"


def _expected() -> dict:
    from analysis.why import launch_floor, load_profiles
    from analysis.why_layers import layer_cost
    from store.snapshot import open_snapshot

    con = open_snapshot(BUNDLED_SNAPSHOT)
    try:
        return layer_cost(launch_floor(load_profiles(con)))
    finally:
        con.close()


def _table(at, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_why_on_the_bundle_shows_the_layer_cost_fit_and_both_weight_read_limits(app_env):
    from analysis.why_layers import NO_DATASHEET, NOT_CALIBRATED, fit_table, select
    from dashboard.text import table_text

    expected = _expected()
    at = app_env()
    at.run()
    at.switch_page(PAGES["why"]).run()
    assert_clean(at)
    at.session_state["why_group"] = (FUSED_REGIME, "fused", "float32")
    at.run()
    assert_clean(at)
    headings = texts(at, "subheader")
    assert "Per layer: hand-offs and weight reads" in headings
    assert "Decode time against the weight-read limit" in headings

    fits = _table(at, "hand-off µs, fitted [95% CI]")
    wanted = table_text(fit_table(select(expected["fits"], FUSED_REGIME, "float32", (1, 128, 64), "fused")), digits=3)
    assert list(fits["hand-off µs, fitted [95% CI]"]) == list(wanted["hand-off µs, fitted [95% CI]"])
    assert fits["hand-off µs, fitted [95% CI]"].str.match(r"^\d").all(), "43 fused shapes give a fit"
    # the bundled runs were calibrated before runner.sync_cost existed: no hand-off figure is made up
    assert (fits["hand-off µs, calibrated"] == NOT_CALIBRATED).all()
    assert (fits["calibrated as"] == "kernel in a CUDA graph with PDL").all()

    per_shape = _table(at, "per layer µs, fitted [95% CI]")
    assert (per_shape["per layer µs, calibrated"] == NOT_CALIBRATED).all()
    assert per_shape["LM head µs, calibrated"].str.match(r"^\d").all(), "the copy bandwidth was measured"

    limits = _table(at, "x limit, datasheet")
    assert {"fused", "cuda-graph", "hf-eager"} <= set(limits["backend"])
    assert not (limits["x limit, datasheet"] == NO_DATASHEET).any()
    shown = " ".join(texts(at, "caption"))
    assert "4.80 TB/s" in shown and "nvidia.com" in shown


def test_why_on_a_cpu_group_has_no_datasheet_figure(app_env):
    from analysis.why_layers import NO_DATASHEET

    at = app_env()
    at.run()
    at.switch_page(PAGES["why"]).run()
    at.session_state["why_group"] = (CPU_REGIME, "hf-eager", "float32")
    at.run()
    assert_clean(at)
    limits = _table(at, "x limit, datasheet")
    assert (limits["x limit, datasheet"] == NO_DATASHEET).all()
    assert limits["x limit, measured copy"].str.match(r"^\d").all()
    assert "no datasheet figure" in " ".join(texts(at, "caption"))
