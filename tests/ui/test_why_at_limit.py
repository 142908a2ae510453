"""The Why page says what a layer costs at the limit wherever the bundle measured `fused` beside
another graph backend, with the same figures as analysis.at_limit on the same data."""
from __future__ import annotations

from store.dataset import BUNDLED_SNAPSHOT
from tests.ui.conftest import PAGES, assert_clean, texts


def test_why_on_the_bundle_states_the_layer_cost_of_fused_and_the_graph_backend_beside_it(app_env):
    from analysis.at_limit import layer_cost_text, layer_costs
    from analysis.regression import fit_all
    from analysis.stats import compute_cell_stats
    from analysis.why import launch_floor, load_profiles
    from store.snapshot import open_snapshot

    con = open_snapshot(BUNDLED_SNAPSHOT)
    floor = launch_floor(load_profiles(con))
    floor = floor[floor["bandwidth_gb_s"].notna()]
    expected = layer_costs(fit_all(compute_cell_stats(con).frame), floor)
    at = app_env()
    at.run()
    at.switch_page(PAGES["why"]).run()
    assert_clean(at)
    if expected.empty:  # a bundle without fused cells: the section stays away
        assert "At the limit: what a layer costs" not in texts(at, "subheader")
        return
    assert "fused" in set(expected["backend"]) and len(set(expected["backend"])) >= 2
    assert "At the limit: what a layer costs" in texts(at, "subheader")
    shown = " ".join(texts(at, "markdown"))
    for line in layer_cost_text(expected):
        assert line.split(":")[0] in shown, "one sentence per backend and dtype"
