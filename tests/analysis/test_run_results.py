"""A run's own results, first: `runner run` ends with them, read from the run directory
(analysis.run_results), for one tiny real run on the CPU (tiny-gpt2 and a 1 x 32 shape,
hf-eager, three rounds, so every cell has a CI across rounds)."""
from __future__ import annotations

import math

import pytest
from tomli_w import dumps

from analysis.intervals import CI_ACROSS_ROUNDS, CI_NONE
from analysis.run_results import NOT_MEASURED, format_run_results, run_results
from runner.runfiles import RunDir, list_run_dirs
from tests.runner.helpers import FAST_MEASURE, TINY_SHAPE, cli_env, run_cli

ROUNDS = 3


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(completed `runner run --no-ingest` process, its run directory): 2 cells x 3 rounds."""
    root = tmp_path_factory.mktemp("run-results")
    plan = {"name": "results-first", "device": "cpu", "seed": 7, "backends": ["hf-eager"], "dtypes": ["float32"],
            "batch_sizes": [1], "prompt_lens": [8], "gen_lens": [4],
            "models": {"reference": ["tiny-gpt2"],
                       "custom": [{"name": "1x32", "n_layer": 1, "n_embd": 32, "n_head": 2, **TINY_SHAPE}]},
            "measure": FAST_MEASURE | {"rounds": ROUNDS, "decode_reps": ROUNDS, "prefill_reps": ROUNDS}}
    (root / "plan.toml").write_text(dumps(plan))
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(root / "run.lock")}
    done = run_cli("run", root / "plan.toml", "--runs-dir", root / "runs", "--no-ingest", env=env)
    assert done.returncode == 0, done.stderr
    [run] = list_run_dirs(root / "runs")
    return done, run


def test_run_prints_the_results_table_with_decode_ms_per_token_for_each_cell(finished_run):
    done, run = finished_run
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == run.run_id, "the run id stays the last line on stdout, for scripts"
    header = next(i for i, line in enumerate(lines) if "decode ms/token" in line)
    rows = lines[header + 1:header + 3]
    for model in ("tiny-gpt2", "1x32"):
        [row] = [r for r in rows if r.split()[0] == model]
        assert "ok" in row.split() and "hf-eager" in row.split()
        number = row.split("ok", 1)[1].split()[0]
        assert float(number.replace(",", "")) > 0, row
        ci = row.split(number, 1)[1].split("]")[0] + "]"
        low, high = (float(v.replace(",", "")) for v in ci.strip(" [").rstrip("]").split(", "))
        assert low <= float(number.replace(",", "")) <= high, row
    assert f"python -m runner ingest {run.path}" in done.stdout, "--no-ingest: how to store it"
    assert "python -m runner analyze --db" in done.stdout
    assert f"/runs?run={run.run_id}" in done.stdout and "streamlit run app.py" in done.stdout


def test_run_results_has_one_row_per_cell_with_positive_medians_inside_their_intervals(finished_run):
    _, run = finished_run
    frame = run_results(run.path)
    planned = {p["key"] for p in run.read_meta()["cells"]}
    assert set(frame["cell_key"]) == planned and len(frame) == len(planned)
    assert set(frame["model"]) == {"tiny-gpt2", "1x32"} and set(frame["status"]) == {"ok"}
    for row in frame.itertuples():
        assert row.decode_ms_per_token > 0 and row.prefill_ms > 0
        assert row.decode_rounds == ROUNDS and row.ci_kind == CI_ACROSS_ROUNDS
        assert 0 < row.decode_ci_low <= row.decode_ms_per_token <= row.decode_ci_high, row
    # the medians are those of the recorded decode steps, not of something derived
    for record in run.cell_records():
        steps = sorted(v for rep in record["decode"] for v in rep)
        median = frame.loc[frame["cell_key"] == record["cell_key"], "decode_ms_per_token"].item()
        assert steps[0] <= median <= steps[-1]


def test_a_run_of_one_round_says_it_has_no_ci_rather_than_resampling_steps(finished_run, tmp_path):
    _, run = finished_run
    one = RunDir(tmp_path / run.run_id)
    one.create(run.read_meta())
    first, *rest = run.cell_records()
    for record in [first]:  # its decode reps all in round 0, the other cell never measured
        one.write_cell(record["cell_key"], record | {"decode_round": [0] * len(record["decode"])})
    frame = run_results(one.path)
    measured = frame[frame["cell_key"] == first["cell_key"]].iloc[0]
    assert measured["ci_kind"] == CI_NONE and math.isnan(measured["decode_ci_low"])
    assert measured["decode_ms_per_token"] > 0
    assert list(frame.loc[frame["cell_key"] != first["cell_key"], "status"]) == [NOT_MEASURED] * len(rest)
    assert "no CI (1 round)" in format_run_results(frame)


def test_failed_cells_carry_their_error(finished_run, tmp_path):
    _, run = finished_run
    broken = RunDir(tmp_path / run.run_id)
    broken.create(run.read_meta())
    for record in run.cell_records():
        broken.write_cell(record["cell_key"], record | {"status": "failed", "error": "CUDA out of memory",
                                                        "decode": [], "prefill": [], "decode_round": []})
    frame = run_results(broken.path)
    assert set(frame["status"]) == {"failed"} and set(frame["error"]) == {"CUDA out of memory"}
    assert frame["decode_ms_per_token"].isna().all()
    assert "CUDA out of memory" in format_run_results(frame)


def test_a_folder_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        run_results(tmp_path)
