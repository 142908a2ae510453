"""The Why page says what a layer costs at the limit wherever the bundle measured `fused` beside
another graph backend, with the same figures as analysis.at_limit on the same data."""
from __future__ import annotations

from store.dataset import BUNDLED_SNAPSHOT
from tests.ui.conftest import PAGES, assert_clean, texts


def _group(label: str) -> tuple[str, str, str]:
    """A Why group id back from its option label "<regime> | <backend> | <dtype>  (<n> ...)"."""
    *regime, backend, dtype = label.split("  (")[0].split(" | ")
    return " | ".join(regime), backend, dtype


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
    regime = expected["regime"].iloc[0]
    expected = expected[expected["regime"] == regime]
    other = next(g for g in at.selectbox(key="why_group").options if regime not in g)
    at.session_state["why_group"] = _group(other)
    at.run()
    assert "At the limit: what a layer costs" not in texts(at, "subheader"), "only for the selected regime"
    at.session_state["why_group"] = (regime, "fused", expected["dtype"].iloc[0])
    at.run()
    assert_clean(at)
    assert "At the limit: what a layer costs" in texts(at, "subheader")
    shown = " ".join(texts(at, "markdown"))
    for line in layer_cost_text(expected):
        assert line.split(":")[0] in shown, "one sentence per backend and dtype"
