"""The dashboard on a store of two families: the sidebar filters family and KV heads (and the
link says so), Explore lists both per cell, Depth vs width fits within a family and, asked,
across families with family as a term, and the Inversions table names both shapes in full."""
from __future__ import annotations

import re

import pytest

from store.db import connect
from tests.analysis.families import ingest, run_files
from tests.analysis.test_families_analysis import LLAMA_FACTOR, SHAPES, latency
from tests.ui.conftest import PAGES, assert_clean, open_page, plotly_specs, texts

FAMILIES = sorted({s.family for s in SHAPES})
KV_HEADS = sorted({s.n_kv_head for s in SHAPES})


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    """Four gpt2 and four llama shapes (GQA), two runs, in a store file."""
    path = tmp_path_factory.mktemp("families-ui") / "store.duckdb"
    con = connect(path)
    ingest(con, run_files("run-1", SHAPES, latency, seed=1), run_files("run-2", SHAPES, latency, seed=2, run_factor=1.05))
    con.close()
    return path


def test_the_family_and_kv_heads_filters_narrow_explore_and_go_into_the_link(app_env, mixed_store):
    at = open_page(app_env(mixed_store), "explore")
    assert at.multiselect(key="filter_family").options == FAMILIES
    assert at.multiselect(key="filter_kv_heads").options == [str(k) for k in KV_HEADS]
    table = at.dataframe[0].value
    assert set(table["family"]) == set(FAMILIES) and {"n_head", "n_kv_head"} <= set(table.columns)

    at.multiselect(key="filter_family").set_value(["llama"])
    at.switch_page(PAGES["explore"]).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert set(table["family"]) == {"llama"} and set(table["model_name"]) == {s.name for s in SHAPES if s.family == "llama"}
    assert at.query_params["family"] in ("llama", ["llama"])

    at.multiselect(key="filter_kv_heads").set_value([2])
    at.switch_page(PAGES["explore"]).run()
    table = at.dataframe[0].value
    assert set(table["n_kv_head"]) == {2} and set(table["family"]) == {"llama"}
    assert at.query_params["kv_heads"] in ("2", ["2"])


def test_a_shared_link_opens_with_its_family_and_kv_heads(app_env, mixed_store):
    at = app_env(mixed_store)
    at.query_params["family"] = "gpt2"
    at.query_params["kv_heads"] = ["4", "8"]
    table = open_page(at, "explore").dataframe[0].value
    assert set(table["family"]) == {"gpt2"} and set(table["n_kv_head"]) == {4, 8}


def test_depth_width_fits_within_a_family_and_pools_families_on_request(app_env, mixed_store):
    at = open_page(app_env(mixed_store), "depth_width")
    groups = at.selectbox(key="dw_group").options
    assert any(g.startswith("llama | hf-eager | decode") for g in groups)
    assert any(g.startswith("hf-eager | decode") for g in groups)  # a gpt2 group's label names no family
    at.toggle(key="dw_pool").set_value(True).run()
    assert_clean(at)
    assert all("all families" in g for g in at.selectbox(key="dw_pool_group").options)
    at.selectbox(key="dw_pool_group").select(
        next(g for g in at.selectbox(key="dw_pool_group").options if "| decode |" in g)).run()
    assert_clean(at)
    [lead] = [s for s in texts(at, "success") if s.startswith("**Family as a term")]
    ratio = re.search(r"against gpt2: llama (\d+\.\d+)x", lead)
    assert ratio and abs(float(ratio.group(1)) - LLAMA_FACTOR) < 0.05, lead
    terms = at.dataframe[0].value
    assert {"log_params", "log_depth", "family:llama"} <= set(terms["term"])
    [depth, params] = plotly_specs(at)
    families = {row[8] for trace in params["data"] for row in trace.get("customdata") or []}
    assert families == set(FAMILIES), "the pooled group's points are both families', each named in its hover"


def test_the_inversions_table_names_both_shapes_in_full(app_env, mixed_store):
    at = open_page(app_env(mixed_store), "inversions")
    at.toggle(key="inv_sig").set_value(False).run()
    assert_clean(at)
    table = at.dataframe[0].value
    for side in "ab":
        assert {f"family_{side}", f"n_layer_{side}", f"n_embd_{side}", f"n_head_{side}", f"n_kv_head_{side}",
                f"params_{side}"} <= set(table.columns)
    assert (table["family_a"] == table["family_b"]).all(), "pairs stay within a family by default"
