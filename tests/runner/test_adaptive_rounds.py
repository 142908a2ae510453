"""Adaptive rounds (`[measure] precision`): after min_rounds, further short rounds go only to the
cells whose decode median is not yet known to the precision asked; a budget ends a run cleanly
and a resume goes on from the rounds it kept.

Real runs of two tiny shapes on the CPU. Which cell is noisy is planted, not left to the
machine: a test-side wrapper around `runner.protocol.measure_round` replaces each round's
decode samples after the real round ran, steady for the `quiet` shape and jumping between
1 and 9 ms from round to round for the `noisy` one (a loaded 2-core machine moves real CPU
round medians by more than any target a test could set). The budget runs on a test clock
that advances 100 s per measured round.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest

from runner import protocol
from runner.executor import continue_run, start_run
from runner.plan import PlanError, parse_plan
from store.db import connect
from store.ingest import ingest_run_dir
from tests.runner.helpers import TINY_SHAPE, plan_dict
from vocabulary import STOP_BUDGET, STOP_MAX_ROUNDS, STOP_PRECISION

real_measure_round = protocol.measure_round
QUIET, NOISY = "quiet", "noisy"
# the fewest reps and warm-up that still measure every phase in every round
ADAPTIVE = dict(prefill_reps=2, decode_reps=2, e2e_reps=2, warmup_min_s=0.0, warmup_min_iters=1, warmup_window=2,
                warmup_max_iters=2, check_correctness=False, energy_window_s=0,
                precision=0.05, min_rounds=2, max_rounds=5)


def adaptive_plan(**measure):
    models = {"custom": [{"name": QUIET, "n_layer": 1, "n_embd": 32, "n_head": 2, **TINY_SHAPE},
                         {"name": NOISY, "n_layer": 2, "n_embd": 32, "n_head": 2, **TINY_SHAPE}]}
    return parse_plan(plan_dict(backends=["hf-eager"], gen_lens=[2], models=models, measure=ADAPTIVE | measure))


@pytest.fixture
def planted(monkeypatch):
    """Every round's decode samples replaced: `quiet` within 0.1% of 2 ms, `noisy` at 1 or 9 ms
    by round. Returns the clock offset list: each measured round moves time.time() 100 s on."""
    offset = [0.0]
    real_time = time.time

    def measure_round(prepared, settings, round_index, *args, **kwargs):
        record = real_measure_round(prepared, settings, round_index, *args, **kwargs)
        if prepared.cell.model.name == QUIET:
            value = 2.0 * (1 + 0.001 * (round_index % 2))
        else:
            value = 1.0 if round_index % 2 else 9.0
        record["decode"] = [[value] * len(generation) for generation in record["decode"]]
        offset[0] += 100.0
        return record

    monkeypatch.setattr(protocol, "measure_round", measure_round)
    monkeypatch.setattr(time, "time", lambda: real_time() + offset[0])
    return offset


def started_rounds(run) -> dict[str, list[int]]:
    names = {entry["key"]: entry["cell"]["model"]["name"] for entry in run.read_meta()["cells"]}
    out: dict[str, list[int]] = {}
    for event in run.events():
        if event["event"] == "cell_started":
            out.setdefault(names[event["key"]], []).append(event["round"])
    return out


def records_by_name(run) -> dict[str, dict]:
    return {record["cell"]["model"]["name"]: record for record in run.cell_records()}


def test_adaptive_rounds_stop_a_cell_at_its_precision_and_go_on_for_a_noisy_one(tmp_path, planted):
    run = start_run(adaptive_plan(), tmp_path / "runs")
    seen = []
    continue_run(run, seen.append)

    meta = run.read_meta()
    assert meta["status"] == "finished" and meta["rounds"] == 5 and "stop_reason" not in meta
    quiet, noisy = records_by_name(run)[QUIET], records_by_name(run)[NOISY]
    assert (quiet["rounds_used"], quiet["precision_reached"], quiet["stop_reason"]) == (2, True, STOP_PRECISION)
    assert quiet["decode_half_width"] <= 0.05
    assert (noisy["rounds_used"], noisy["precision_reached"], noisy["stop_reason"]) == (5, False, STOP_MAX_ROUNDS)
    assert noisy["decode_half_width"] > 0.05
    assert started_rounds(run) == {QUIET: [0, 1], NOISY: [0, 1, 2, 3, 4]}
    # rounds past min_rounds are short: one generation, prefill and e2e in the plan's proportion (2:2:2)
    assert noisy["decode_round"] == [0, 1, 2, 3, 4] and noisy["prefill_round"] == [0, 1, 2, 3, 4]
    assert not list((run.path / "rounds").glob("*.json")), "round files give way to the cell files"
    # the progress carries what the CLI and the Run page count
    finished = {e["key"]: e for e in seen if e["event"] == "cell_finished"}
    assert sorted(e["precision_reached"] for e in finished.values()) == [False, True]
    assert all("decode_half_width" in e for e in seen if e["event"] == "round_finished")
    # the half-width a cell stops on is the one of the interval the run's results show (analysis.run_results)
    from analysis.run_results import run_results

    shown = run_results(run.path).set_index("model")
    for name, record in records_by_name(run).items():
        low, high = shown.loc[name, "decode_ci_low"], shown.loc[name, "decode_ci_high"]
        assert record["decode_half_width"] == pytest.approx((high / low) ** 0.5 - 1, rel=1e-9)


def test_a_budget_ends_an_adaptive_run_cleanly_and_a_resume_measures_its_open_cells_further(tmp_path, planted):
    # 100 s a round on the test clock: 2 cells x 2 rounds, then the noisy cell's round 2, then the budget is spent
    run = start_run(adaptive_plan(budget_s=450), tmp_path / "runs")
    seen = []
    continue_run(run, seen.append)

    meta = run.read_meta()
    assert meta["status"] == "interrupted" and meta["stop_reason"] == STOP_BUDGET
    assert [e for e in run.events() if e["event"] == "run_interrupted"][-1]["reason"] == STOP_BUDGET
    assert any(e["event"] == "budget_spent" for e in seen)
    quiet, noisy = records_by_name(run)[QUIET], records_by_name(run)[NOISY]
    assert quiet["stop_reason"] == STOP_PRECISION
    # stopped by the budget: finished as it stands (stored, analysable), its rounds kept for a resume
    assert (noisy["rounds_used"], noisy["precision_reached"], noisy["stop_reason"]) == (3, False, STOP_BUDGET)
    assert len(list((run.path / "rounds").glob("*.json"))) == 3
    con = connect(tmp_path / "store.duckdb")
    ingest_run_dir(con, run.path)
    assert stored(con) == {QUIET: (2, True, STOP_PRECISION, 2), NOISY: (3, False, STOP_BUDGET, 3)}

    continue_run(run)  # a resume gets a budget of its own: enough for the noisy cell's last two rounds
    meta = run.read_meta()
    assert meta["status"] == "finished" and meta["stop_reason"] is None
    noisy = records_by_name(run)[NOISY]
    assert (noisy["rounds_used"], noisy["stop_reason"]) == (5, STOP_MAX_ROUNDS)
    assert noisy["decode_round"] == [0, 1, 2, 3, 4]
    assert started_rounds(run) == {QUIET: [0, 1], NOISY: [0, 1, 2, 3, 4]}, "no round measured twice"
    assert records_by_name(run)[QUIET]["rounds_used"] == 2
    assert not list((run.path / "rounds").glob("*.json"))
    # the store follows the rewritten cell file: its row and samples replaced, the other cell kept
    ingest_run_dir(con, run.path)
    assert stored(con) == {QUIET: (2, True, STOP_PRECISION, 2), NOISY: (5, False, STOP_MAX_ROUNDS, 5)}
    assert con.execute("SELECT status FROM runs").fetchall() == [("finished",)]


def stored(con) -> dict[str, tuple]:
    """model -> (rounds_used, precision_reached, stop_reason, decode rounds among its samples) in the store."""
    rows = con.execute("""
        SELECT c.model_name, c.rounds_used, c.precision_reached, c.stop_reason, count(DISTINCT s.round)
        FROM cells c JOIN samples s ON s.cell_id = c.cell_id AND s.phase = 'decode' GROUP BY ALL""").fetchall()
    return {name: tuple(rest) for name, *rest in rows}


def test_a_resumed_adaptive_run_loses_at_most_the_round_in_flight(tmp_path, planted):
    run = start_run(adaptive_plan(), tmp_path / "runs")

    def interrupt_in_round_three(event):
        if event["event"] == "cell_started" and event["round"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        continue_run(run, interrupt_in_round_three)
    assert run.read_meta()["status"] == "interrupted"
    assert [r["cell"]["model"]["name"] for r in run.cell_records()] == [QUIET]
    assert sorted(next(iter(run.round_records().values()))) == [0, 1, 2], "the noisy cell's rounds are kept"

    continue_run(run)
    assert run.read_meta()["status"] == "finished"
    assert records_by_name(run)[NOISY]["decode_round"] == [0, 1, 2, 3, 4]
    # the round in flight (3) is the only one started twice
    assert Counter(started_rounds(run)[NOISY]) == Counter({0: 1, 1: 1, 2: 1, 3: 2, 4: 1})


def test_a_budget_shorter_than_a_round_still_measures_one_cell_round_per_start_so_resumes_progress(tmp_path, planted):
    run = start_run(adaptive_plan(budget_s=1), tmp_path / "runs")
    segments = 0
    while run.read_meta()["status"] != "finished":
        before = sum(len(rounds) for rounds in started_rounds(run).values())
        continue_run(run)
        segments += 1
        assert sum(len(rounds) for rounds in started_rounds(run).values()) == before + 1
        assert segments <= 7
    # the same cells, rounds and verdicts as a run with no budget: 2 rounds + 5 rounds
    assert segments == 7 and started_rounds(run) == {QUIET: [0, 1], NOISY: [0, 1, 2, 3, 4]}
    assert {name: r["stop_reason"] for name, r in records_by_name(run).items()} == {
        QUIET: STOP_PRECISION, NOISY: STOP_MAX_ROUNDS}


def test_a_processes_run_with_a_budget_stops_between_workers_and_resumes(tmp_path):
    # real worker processes, so real timings: one cell, exactly two rounds, a budget no round fits
    models = {"custom": [{"name": QUIET, "n_layer": 1, "n_embd": 32, "n_head": 2, **TINY_SHAPE}]}
    plan = parse_plan(plan_dict(backends=["hf-eager"], gen_lens=[2], models=models, measure=ADAPTIVE | {
        "processes": True, "min_rounds": 2, "max_rounds": 2, "budget_s": 0.001}))
    run = start_run(plan, tmp_path / "runs")
    seen = []
    continue_run(run, seen.append)
    assert run.read_meta()["status"] == "interrupted" and run.read_meta()["stop_reason"] == STOP_BUDGET
    assert [e["round"] for e in seen if e["event"] == "round_finished"] == [0], "one cell-round, then the budget"
    assert any(e["event"] == "budget_spent" for e in seen) and not run.cell_records()

    continue_run(run)
    [record] = run.cell_records()
    assert run.read_meta()["status"] == "finished" and record["rounds_used"] == 2
    assert record["decode_round"] == [0, 1] and len(set(record["worker"])) == 2, "one worker per round"
    assert record["stop_reason"] in (STOP_PRECISION, STOP_MAX_ROUNDS)


def test_a_plan_without_precision_keeps_its_fixed_rounds(tmp_path):
    fixed = {k: v for k, v in ADAPTIVE.items() if k not in ("precision", "min_rounds", "max_rounds")}
    plan = parse_plan(plan_dict(backends=["hf-eager"], gen_lens=[2], measure=fixed | {"rounds": 2}))
    run = start_run(plan, tmp_path / "runs")
    continue_run(run)
    assert run.read_meta()["rounds"] == 2 and run.read_meta()["status"] == "finished"
    for record in run.cell_records():
        assert record["decode_round"] == [0, 1] and record["prefill_round"] == [0, 1]
        assert record["rounds_used"] == 2 and record["decode_half_width"] is not None
        assert record["precision_reached"] is None and record["stop_reason"] is None


@pytest.mark.parametrize("measure, message", [
    ({"precision": 0.03, "rounds": 5}, "rounds: with precision"),
    ({"min_rounds": 4}, "min_rounds: only with precision"),
    ({"budget_s": 60}, "budget_s: only with precision"),
    ({"precision": 0.03, "min_rounds": 6, "max_rounds": 4}, "max_rounds must be >= min_rounds"),
    ({"precision": 0.03, "max_rounds": 101}, "max_rounds"),
    ({"precision": 1.5}, "precision"),
    ({"precision": 0.03, "min_rounds": 1}, "min_rounds"),
])
def test_adaptive_settings_that_cannot_mean_anything_are_refused_naming_the_field(measure, message):
    with pytest.raises(PlanError, match=message):
        parse_plan(plan_dict(measure=measure))


def test_a_recorded_adaptive_plan_validates_again_as_a_resume_reads_it():
    plan = adaptive_plan(budget_s=330)
    again = parse_plan(plan.model_dump(mode="json"))
    assert again.measure == plan.measure and again.measure.planned_rounds == 5
    fixed = parse_plan(plan_dict())
    assert parse_plan(fixed.model_dump(mode="json")).measure.planned_rounds == fixed.measure.rounds


def test_the_estimate_counts_the_rounds_a_cell_is_expected_to_need_and_stops_at_the_budget():
    from runner.plan import estimate_seconds, expand

    plan = adaptive_plan(precision=0.03, min_rounds=3, max_rounds=12)
    cells = expand(plan, device="cpu")
    at_min = estimate_seconds(cells, plan.measure, energy_counter=False)
    assert estimate_seconds(cells, plan.measure, energy_counter=False, rounds=3) == at_min
    more = estimate_seconds(cells, plan.measure, energy_counter=False, rounds={"hf-eager": 8})
    most = estimate_seconds(cells, plan.measure, energy_counter=False, rounds=50)  # clipped to max_rounds
    assert at_min < more < most == estimate_seconds(cells, plan.measure, energy_counter=False, rounds=12)
    budget = plan.measure.model_copy(update={"budget_s": 1.0})
    assert estimate_seconds(cells, budget, energy_counter=False, rounds=12) < most
    # a plan of fixed rounds reads `rounds` and nothing else
    fixed = parse_plan(plan_dict(measure={"rounds": 3}))
    assert estimate_seconds(expand(fixed, device="cpu"), fixed.measure, energy_counter=False, rounds=12) == \
        estimate_seconds(expand(fixed, device="cpu"), fixed.measure, energy_counter=False)
