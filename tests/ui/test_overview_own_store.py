"""The Overview on a user's own store: a real two-shape run on the CPU, ingested by the
dashboard as after a first run, never opened in place of the reference data by itself."""
from __future__ import annotations

import re

import pytest

from tests.runner.helpers import cli_env, run_cli, write_plan
from tests.ui.conftest import assert_clean, plotly_specs, texts


@pytest.fixture(scope="module")
def two_shape_runs(tmp_path_factory):
    """Run files of `python -m runner run` over two tiny shapes (1x32, 2x64) with hf-eager, not
    yet ingested: what a user's runs directory holds after their first run."""
    root = tmp_path_factory.mktemp("own")
    plan = write_plan(root / "two-shapes.toml", name="my-two-shapes", backends=["hf-eager"])
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(root / "run.lock")}
    proc = run_cli("run", plan, "--db", root / "cli.duckdb", "--runs-dir", root / "runs", "--no-derive", env=env,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "runs"


def test_first_run_is_ingested_but_the_reference_data_stays_open(app_env, two_shape_runs, tmp_path):
    store = tmp_path / "store.duckdb"
    at = app_env(db=store, runs=two_shape_runs, picked=False)
    at.run()
    assert_clean(at)
    assert store.exists(), "the sidebar ingested the run into the store"
    assert at.sidebar.radio[0].value == "bundled snapshot"
    assert any("bundled snapshot" in c for c in texts(at.sidebar, "caption"))
    offer = [m for m in texts(at, "markdown") if "Your store has" in m]
    assert offer and "1** run" in offer[0], offer
    at.run()  # a rerun (the app polling) does not switch either
    assert at.sidebar.radio[0].value == "bundled snapshot"


def test_overview_on_a_two_shape_store_shows_the_shapes_and_why_nothing_was_fitted(app_env, two_shape_runs, tmp_path):
    store = tmp_path / "store.duckdb"
    at = app_env(db=store, runs=two_shape_runs, picked=False)
    at.run()
    at.button(key="overview_show_store").click().run()
    assert_clean(at)
    assert at.sidebar.radio[0].value == "store file"
    assert "Your shapes" in texts(at, "subheader")
    markdown = " ".join(texts(at, "markdown"))
    assert "On the CPUs measured" in markdown
    assert "2 shapes (2 depths): measure at least 3 depths" in markdown
    shown = " ".join(str(v) for frame in at.dataframe for v in frame.value.to_numpy().ravel())
    assert "1x32 (1 x 32" in shown and "2x64 (2 x 64" in shown, "the user's cells, by name and shape"
    assert "None" not in shown and "nan" not in shown.split()
    assert not [t for t in texts(at, "subheader") if t.startswith("The seed pair")], "no seed pair to announce"
    assert not [m for m in texts(at, "markdown") if "of 0 fitted groups" in m]
    figure = [spec for spec in plotly_specs(at) if "shape" in spec["layout"]["title"]["text"]][0]
    assert sorted(figure["data"][0]["y"]) == ["1x32 (1 x 32, 0.05M)", "2x64 (2 x 64, 0.2M)"]


def test_store_beside_the_reference_holds_both(app_env, two_shape_runs, tmp_path):
    store = tmp_path / "store.duckdb"
    at = app_env(db=store, runs=two_shape_runs, picked=False)
    at.run()
    reference_runs = int(at.sidebar.metric[0].value.replace(",", ""))
    at.button(key="overview_show_both").click().run()
    assert_clean(at)
    assert at.sidebar.radio[0].value == "bundled + my store"
    assert int(at.sidebar.metric[0].value.replace(",", "")) == reference_runs + 1
    assert at.query_params["data"] == "both", "the choice is in the link"
    subheaders = texts(at, "subheader")
    assert subheaders.index("Your shapes") < subheaders.index("Strongest inversions"), "the user's shapes beside the reference"
    assert any(s.startswith("The seed pair") for s in subheaders), "the reference's seed pair stays"
    shown = " ".join(str(v) for frame in at.dataframe for v in frame.value.to_numpy().ravel())
    # beside llama shapes of the reference, a GPT-2 shape is named with its family too (analysis.shapes)
    assert re.search(r"1x32 \((gpt2, )?1 x 32", shown)
