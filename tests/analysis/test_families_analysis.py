"""Analysis on a store that holds two families: groups stay within a family by default, pool
across families on request with family as a term of the fit, and an inversion names both
shapes in full."""
from __future__ import annotations

import csv
import io
import json

import pytest

from analysis.figures import (inversion_heatmap, kernels_vs_depth, latency_vs_params, run_medians_figure, shape_latencies,
                              why_components)
from analysis.inversions import find_inversions, headline_text, inversions_summary, pair_ratios
from analysis.load import ALL_FAMILIES, keys_by_group_id, load_cells
from analysis.predict import predict_latency
from analysis.regression import fit_across_families, fit_all, kv_heads_term
from analysis.reproducibility import has_repeats, pooled_stats, repeat_table, run_medians, with_repeat_key
from analysis.run_compare import compare_runs_by_round, ratio_figure
from analysis.shape_answer import decode_cells
from analysis.shapes import pair_labels
from analysis.stats import across_families, compute_cell_stats
from store.db import connect, connect_memory
from tests.analysis.families import Shape, ingest, power_law, run_files
from tests.runner.helpers import run_cli
from tests.store.conftest import H100

LLAMA_FACTOR = 1.5  # the simulated cost of the llama block over gpt2 at equal params and depth
# four shapes of each family, off one line; llama with grouped-query attention
SHAPES = [
    Shape("gpt2", 2, 256, 4, 4, 20e6), Shape("gpt2", 4, 256, 4, 4, 24e6), Shape("gpt2", 8, 512, 8, 8, 60e6),
    Shape("gpt2", 12, 384, 6, 6, 45e6), Shape("llama", 2, 512, 8, 2, 40e6), Shape("llama", 6, 256, 4, 1, 22e6),
    Shape("llama", 10, 384, 6, 2, 42e6), Shape("llama", 16, 256, 4, 2, 30e6),
]
DECODE = {"phase": ["decode"]}  # one group per family: the phase the fits and the inversion claim are about


def latency(shape: Shape) -> float:
    """ms: a power law in params and depth, times the family's factor."""
    return power_law(shape) * (LLAMA_FACTOR if shape.family == "llama" else 1.0)


@pytest.fixture(scope="module")
def mixed():
    """One run (three rounds) of eight shapes, four gpt2 and four llama with GQA, ingested."""
    con = connect_memory()
    ingest(con, run_files("run-mixed", SHAPES, latency))
    return con


def test_cells_carry_their_family_and_kv_heads_and_filter_on_them(mixed):
    cells = load_cells(mixed)
    assert set(cells["family"]) == {"gpt2", "llama"}
    assert (cells.loc[cells["family"] == "gpt2", "n_kv_head"] == cells.loc[cells["family"] == "gpt2", "n_head"]).all()
    llama = load_cells(mixed, {"family": "llama"})
    assert len(llama) == 4 and set(llama["n_kv_head"]) == {1, 2}
    assert len(load_cells(mixed, {"n_kv_head": 1})) == 1


def test_groups_hold_one_family_by_default_and_a_gpt2_label_names_no_family(mixed):
    frame = compute_cell_stats(mixed, DECODE, n_resamples=200).frame
    assert frame.groupby("group_id")["family"].nunique().max() == 1
    labels = {family: set(rows["group_id"]) for family, rows in frame.groupby("family")}
    [gpt2], [llama] = labels["gpt2"], labels["llama"]
    assert gpt2 == f"{H100} | hf-eager | decode | bfloat16 | batch 1 | prompt 128"
    assert llama == f"{H100} | llama | hf-eager | decode | bfloat16 | batch 1 | prompt 128"
    keys = keys_by_group_id(frame)
    assert {k.family for k in keys.values()} == {"gpt2", "llama"}
    assert {fit.key.family for fit in fit_all(frame)} == {"gpt2", "llama"}


def test_pooled_groups_compare_shapes_across_families_and_name_both_in_full(mixed):
    stats = compute_cell_stats(mixed, DECODE, n_resamples=400, pool_families=True)
    frame = stats.frame
    assert frame["group_id"].nunique() == 1 and f"| {ALL_FAMILIES} |" in frame["group_id"].iloc[0]
    assert set(frame["family"]) == {"gpt2", "llama"}
    [key] = keys_by_group_id(frame).values()
    assert key.family == ALL_FAMILIES
    pairs = find_inversions(stats)
    across = pairs[pairs["family_a"] != pairs["family_b"]]
    assert len(across)  # llama's factor makes smaller llama shapes slower than larger gpt2 ones
    row = across.iloc[0]
    text = headline_text(row)
    for side in "ab":  # each side: family, params, depth x width, query / KV heads
        assert (f"{row[f'family_{side}']}, {row[f'params_{side}'] / 1e6:.1f}M params, {row[f'n_layer_{side}']} x "
                f"{row[f'n_embd_{side}']}, {row[f'n_head_{side}']}/{row[f'n_kv_head_{side}']} heads") in text
    a, b = pair_labels(row)  # the headline's table and the heatmap's hover
    assert a.startswith(f"{row['model_name_a']} ({row['family_a']}, ") and b.startswith(f"{row['model_name_b']} ({row['family_b']}, ")
    gpt2_pair = row.copy()
    gpt2_pair[["family_a", "family_b"]] = "gpt2"  # two GPT-2 shapes read as they always have
    assert "heads" not in headline_text(gpt2_pair) and "heads" not in " ".join(pair_labels(gpt2_pair))
    summary = inversions_summary(pairs)
    assert all({"family_a", "family_b", "n_kv_head_a"} <= set(r) for r in summary["significant"])


def test_a_pooled_fit_puts_family_in_the_seed_form_and_recovers_its_effect(mixed):
    frame = compute_cell_stats(mixed, DECODE, n_resamples=200).frame
    [fit] = fit_across_families(frame)
    assert fit["status"] == "ok" and fit["families"] == ["gpt2", "llama"] and fit["reference"] == "gpt2"
    assert "C(family" in fit["formula"] and {"log_params", "log_depth", "family:llama"} <= set(fit["terms"])
    effect = fit["family_ratios"]["llama"]
    assert effect["ci_low"] <= LLAMA_FACTOR <= effect["ci_high"] and abs(effect["ratio"] - LLAMA_FACTOR) < 0.05
    assert fit["terms"]["log_params"]["ci_low"] <= 0.3 <= fit["terms"]["log_params"]["ci_high"]


def test_a_pooled_fit_of_one_family_or_too_few_shapes_says_why(mixed):
    frame = compute_cell_stats(mixed, DECODE | {"family": "llama"}, n_resamples=50).frame
    [fit] = fit_across_families(frame)
    assert fit["status"] == "one_family" and "only llama" in fit["message"]
    few = compute_cell_stats(mixed, DECODE | {"model_name": [SHAPES[0].name, SHAPES[4].name, SHAPES[5].name]}, n_resamples=50).frame
    [fit] = fit_across_families(few)
    assert fit["status"] == "too_few_shapes" and "measure 2 more" in fit["message"]


def test_two_runs_differing_only_in_family_or_kv_heads_are_never_pooled_as_repeats():
    """A gpt2 and a llama cell of one depth, width, heads and parameter count are two
    measurements, and so are one llama shape with 4 and with 2 KV heads; the shape both runs
    measured alike is one repeat unit of two runs."""
    same = Shape("gpt2", 4, 256, 4, 4, 24e6)
    run_a = run_files("run-a", [same, Shape("gpt2", 8, 512, 8, 8, 60e6), Shape("llama", 6, 384, 6, 6, 40e6)], seed=1)
    run_b = run_files("run-b", [same, Shape("llama", 8, 512, 8, 8, 60e6), Shape("llama", 6, 384, 6, 2, 40e6)], seed=2,
                      run_factor=1.3)  # run b is slower: a pooled pair would show it as run-to-run spread
    con = connect_memory()
    ingest(con, run_a, run_b)
    stats = compute_cell_stats(con, {"phase": "decode"}, n_resamples=200)
    assert has_repeats(stats)
    pooled = pooled_stats(stats).frame
    runs = {(r.family, r.n_layer, r.n_kv_head): r.n_runs for r in pooled.itertuples()}
    assert runs == {("gpt2", 4, 4): 2, ("gpt2", 8, 8): 1, ("llama", 8, 8): 1, ("llama", 6, 6): 1, ("llama", 6, 2): 1}
    table = repeat_table(stats, pooled=pooled_stats(stats))
    assert len(table) == 1 and table["model_name"].iat[0] == same.name
    assert set(with_repeat_key(stats.frame)["repeat_key"].str.contains("llama")) == {True, False}


@pytest.fixture(scope="module")
def mixed_db(tmp_path_factory):
    """The mixed run in a store file, as `analyze --db` reads it."""
    path = tmp_path_factory.mktemp("families-cli") / "store.duckdb"
    con = connect(path)
    ingest(con, run_files("run-mixed", SHAPES, latency))
    con.close()
    return path


def test_analyze_fits_within_a_family_unless_asked_to_pool_with_family_as_a_term(mixed_db):
    done = run_cli("analyze", "--db", mixed_db, "--json", "--phase", "decode")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert not result["pool_families"] and "family_fits" not in result
    assert {r["group"]["family"] for r in result["regressions"]} == {"gpt2", "llama"}
    assert all(r["family_a"] == r["family_b"] for r in result["inversions"]["significant"])

    done = run_cli("analyze", "--db", mixed_db, "--json", "--phase", "decode", "--pool-families")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert {r["group"]["family"] for r in result["regressions"]} == {"gpt2", "llama"}  # the fits per family stay
    [fit] = result["family_fits"]
    assert fit["status"] == "ok" and fit["families"] == ["gpt2", "llama"] and "C(family" in fit["formula"]
    assert fit["ci_kind"] == "across rounds" and "between-round" in fit["cov_type"]
    assert fit["family_ratios"]["llama"]["ci_low"] <= LLAMA_FACTOR <= fit["family_ratios"]["llama"]["ci_high"]
    significant = result["inversions"]["significant"]
    assert any(r["family_a"] != r["family_b"] for r in significant)


def test_the_analyze_summary_says_the_family_term_and_the_filters_narrow_to_a_family(mixed_db):
    done = run_cli("analyze", "--db", mixed_db, "--phase", "decode", "--pool-families")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "== Across families" in done.stdout and "against gpt2: llama 1.5" in done.stdout
    assert "== Across families" not in run_cli("analyze", "--db", mixed_db, "--phase", "decode").stdout

    done = run_cli("analyze", "--db", mixed_db, "--format", "csv", "--family", "llama", "--kv-heads", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert rows and {r["model_name"] for r in rows} == {s.name for s in SHAPES if s.family == "llama" and s.n_kv_head == 2}
    assert {(r["family"], r["n_kv_head"]) for r in rows} == {("llama", "2")}

    done = run_cli("analyze", "--db", mixed_db, "--family", "mamba")
    assert done.returncode == 2 and "unknown family 'mamba'; families: gpt2, llama, qwen2" in done.stderr


@pytest.fixture(scope="module")
def two_runs():
    """The mixed shapes measured in two runs, the second 5% slower."""
    con = connect_memory()
    ingest(con, run_files("run-1", SHAPES, latency, seed=1), run_files("run-2", SHAPES, latency, seed=2, run_factor=1.05))
    return con


def test_every_chart_of_shapes_names_family_and_kv_heads_in_its_hover(mixed, two_runs):
    stats = compute_cell_stats(mixed, DECODE, n_resamples=200)
    llama = next(s for s in SHAPES if s.family == "llama")
    [points] = latency_vs_params(stats.frame).data
    assert {tuple(row[8:11]) for row in points.customdata} == {(s.family, s.n_head, s.n_kv_head) for s in SHAPES}
    assert "heads" in points.hovertemplate

    pairs = pair_ratios(across_families(stats), inversions_only=False)
    heatmap = inversion_heatmap(pairs).data[0]
    hovers = [text for row in heatmap.customdata for text in row if text]
    assert len(hovers) == len(pairs) and "%{customdata}" in heatmap.hovertemplate
    assert any(f"{llama.name} (llama, {llama.n_layer} x {llama.n_embd}, {llama.n_head}/{llama.n_kv_head} heads" in h
               for h in hovers) and any("(gpt2, " in h for h in hovers)

    cells = decode_cells(pooled_stats(stats).frame)  # the Overview's shapes and their chart
    shown = [y for trace in shape_latencies(cells).data for y in trace.y]
    assert f"{llama.name} (llama, {llama.n_layer} x {llama.n_embd}, {llama.n_head}/{llama.n_kv_head} heads" in " ".join(shown)

    runs = compute_cell_stats(two_runs, DECODE, n_resamples=200)
    medians = run_medians_figure(run_medians(runs))
    row = next(r for trace in medians.data for r in trace.customdata if r[0].endswith(f"{llama.name}-hf-eager"))
    assert list(row[3:]) == [llama.n_layer, llama.n_embd, "llama", llama.n_head, llama.n_kv_head]
    assert "heads" in medians.data[0].hovertemplate

    compared = compare_runs_by_round(two_runs, "run-1", "run-2", DECODE)
    labels = [x for trace in ratio_figure(compared, "run-1", "run-2").data for x in trace.x]
    assert any(x.startswith(f"{llama.name} (llama, {llama.n_head}/{llama.n_kv_head} heads)") for x in labels)

    floor = stats.frame.assign(launch_ms=0.1, memory_ms=0.1, compute_ms=0.1, unexplained_ms=0.0, decode_ms=stats.frame["median"],
                               verdict="launch-bound", measured_over_predicted=1.0, kernels=10, launches=10)
    bars = why_components(floor).data[0]
    assert any(f"(llama {llama.n_layer}x{llama.n_embd}, {llama.n_head}/{llama.n_kv_head} heads)" in x for x in bars.x)
    [kernels] = kernels_vs_depth(floor, "n_embd").data
    assert {tuple(row[4:]) for row in kernels.customdata} == {(s.family, s.n_head, s.n_kv_head) for s in SHAPES}


def test_the_predictor_fits_within_the_named_family(mixed):
    frame = compute_cell_stats(mixed, DECODE, n_resamples=50).frame
    group = dict(regime=H100, backend="hf-eager", phase="decode", dtype="bfloat16", batch_size=1, prompt_len=128)
    for family in ("gpt2", "llama"):
        assert predict_latency(frame, n_layer=6, n_embd=384, family=family, **group)["n_cells"] == 4


KV_ELASTICITY = 0.2  # planted: latency ~ (KV heads / heads)^0.2 at equal params and depth
KV_GRID = [Shape("llama", depth, width, 4, kv, depth * width * width * (10 + kv / 2) + 32000 * width)
           for depth in (2, 4, 8) for width in (256, 512) for kv in (1, 2, 4)]


def test_the_seed_form_gains_a_kv_heads_term_where_kv_heads_vary_and_it_is_identified():
    con = connect_memory()
    ingest(con, run_files("run-kv", KV_GRID + SHAPES[:4], lambda s: power_law(s) * (s.n_kv_head / s.n_head) ** KV_ELASTICITY))
    frame = compute_cell_stats(con, DECODE, n_resamples=200).frame
    fits = {fit.key.family: fit for fit in fit_all(frame)}
    kv = fits["llama"].seed_form["kv_term"]
    assert kv["status"] == "ok" and kv["kv_heads"] == ["1/4", "2/4", "4/4"] and kv["n_shapes"] == len(KV_GRID)
    assert kv["coef_log_kv_share_lo"] <= KV_ELASTICITY <= kv["coef_log_kv_share_hi"]
    assert "KV-heads elasticity" in fits["llama"].verdict["text"]
    # GPT-2 shapes of 4, 6 and 8 heads: every head holds its own keys and values, so no KV term
    assert fits["gpt2"].status == "too_few_shapes" and kv_heads_term(frame[frame["family"] == "gpt2"]) is None

    few = compute_cell_stats(con, DECODE | {"model_name": [s.name for s in KV_GRID[:3]]}, n_resamples=50).frame
    assert kv_heads_term(few)["status"] == "not_identified"
