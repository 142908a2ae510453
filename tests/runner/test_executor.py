"""Running plans in process: failures recorded and the run goes on, shuffled order, interrupts."""
from __future__ import annotations

import pytest
import torch

from runner import protocol
from runner.executor import RunError, continue_run, execute, start_run
from runner.plan import expand, parse_plan
from runner.runfiles import RunDir, list_run_dirs
from store.db import connect
from store.ingest import ingest_run_dir
from tests.runner.helpers import plan_dict

real_build_model = protocol.build_model


def events_of(run: RunDir, kind: str) -> list[dict]:
    return [e for e in run.events() if e["event"] == kind]


def test_failed_cell_is_recorded_and_run_continues(tmp_path, monkeypatch):
    def build_model(spec, **kwargs):  # inject: the 2-layer shape cannot be built
        if spec.n_layer == 2:
            raise RuntimeError("injected build failure for 2x64")
        return real_build_model(spec, **kwargs)

    monkeypatch.setattr(protocol, "build_model", build_model)
    [run] = execute(parse_plan(plan_dict()), tmp_path / "runs")

    meta = run.read_meta()
    assert meta["status"] == "finished" and meta["finished_at"] is not None
    records = {(r["cell"]["model"]["name"], r["cell"]["backend"]): r for r in run.cell_records()}
    assert len(records) == meta["n_cells_planned"] == 4
    for backend in ("hf-eager", "hf-sdpa"):
        failed, ok = records[("2x64", backend)], records[("1x32", backend)]
        assert failed["status"] == "failed"
        assert failed["error"] == "RuntimeError: injected build failure for 2x64"
        assert failed["prefill"] == [] and failed["decode"] == [] and failed["e2e"] == []
        assert ok["status"] == "ok" and ok["error"] is None and len(ok["prefill"]) == 3
    finished = events_of(run, "cell_finished")
    assert sorted(e["status"] for e in finished) == ["failed", "failed", "ok", "ok"]
    assert events_of(run, "run_finished")[0]["done"] == 4

    con = connect(tmp_path / "store.duckdb")
    ingest_run_dir(con, run.path)
    rows = con.execute("""
        SELECT c.model_name, c.status, c.error, count(s.cell_id) FROM cells c
        LEFT JOIN samples s USING (cell_id) GROUP BY c.cell_id, c.model_name, c.status, c.error ORDER BY 1, 2""").fetchall()
    assert [(name, status, n > 0) for name, status, _, n in rows] == [
        ("1x32", "ok", True), ("1x32", "ok", True), ("2x64", "failed", False), ("2x64", "failed", False)]
    assert {error for name, _, error, _ in rows if name == "2x64"} == {"RuntimeError: injected build failure for 2x64"}


def test_out_of_memory_marks_the_cell_failed_and_run_continues(tmp_path, monkeypatch):
    def build_model(spec, **kwargs):  # inject: only the timed sdpa build runs out of memory
        if kwargs.get("attn_implementation") == "sdpa" and spec.n_layer == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n(details)")
        return real_build_model(spec, **kwargs)

    monkeypatch.setattr(protocol, "build_model", build_model)
    [run] = execute(parse_plan(plan_dict()), tmp_path / "runs")
    statuses = {(r["cell"]["model"]["name"], r["cell"]["backend"]): (r["status"], r["error"])
                for r in run.cell_records()}
    assert statuses == {
        ("1x32", "hf-sdpa"): ("failed", "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"),
        ("1x32", "hf-eager"): ("ok", None), ("2x64", "hf-eager"): ("ok", None), ("2x64", "hf-sdpa"): ("ok", None),
    }
    assert run.read_meta()["status"] == "finished"


def test_unsupported_cell_is_stored_with_its_reason_and_run_continues(tmp_path):
    plan = parse_plan(plan_dict(backends=["cuda-graph", "hf-eager"], models={"custom": plan_dict()["models"]["custom"][:1]}))
    [run] = execute(plan, tmp_path / "runs")
    statuses = {r["cell"]["backend"]: (r["status"], r["error"]) for r in run.cell_records()}
    assert statuses == {"cuda-graph": ("unsupported", "cuda-graph runs on cuda, not cpu"), "hf-eager": ("ok", None)}
    assert run.read_meta()["status"] == "finished"


def test_cells_run_in_the_recorded_shuffled_order(tmp_path):
    quick = {"prefill_reps": 1, "decode_reps": 1, "e2e_reps": 1, "check_correctness": False}
    plan = parse_plan(plan_dict(gen_lens=[2, 3, 4], measure=plan_dict()["measure"] | quick))
    declared = [c.key for c in expand(plan, device="cpu")]
    run = start_run(plan, tmp_path / "runs")
    again = start_run(plan, tmp_path / "runs")
    meta = run.read_meta()
    stored = [entry["key"] for entry in meta["cells"]]
    assert sorted(stored) == sorted(declared) and len(stored) == 12
    assert stored != declared  # shuffled: drift cannot line up with declaration order
    assert [e["key"] for e in again.read_meta()["cells"]] == stored  # seeded: reproducible
    assert meta["shuffle_seed"] == plan.seed and meta["input_seed"] == plan.seed
    assert [e["order_index"] for e in meta["cells"]] == list(range(12))

    continue_run(run)
    started = events_of(run, "cell_started")
    assert [e["key"] for e in started if e["round"] == 0] == stored
    assert {r["cell_key"]: r["order_index"] for r in run.cell_records()} == {k: i for i, k in enumerate(stored)}


def test_rounds_interleave_cells_in_a_new_order_each_round_and_samples_carry_their_round(tmp_path):
    three = {"prefill_reps": 3, "decode_reps": 3, "e2e_reps": 3, "rounds": 3, "check_correctness": False}
    plan = parse_plan(plan_dict(gen_lens=[2, 3], measure=plan_dict()["measure"] | three))
    run = start_run(plan, tmp_path / "runs")
    continue_run(run)
    started = events_of(run, "cell_started")
    orders = [[e["key"] for e in started if e["round"] == r] for r in range(3)]
    assert all(sorted(o) == sorted(orders[0]) and len(o) == 8 for o in orders)
    assert orders[1] != orders[0] or orders[2] != orders[0], "each round reshuffles the cells"
    # a cell's rounds are interleaved with other cells, not back to back
    first = [e["key"] for e in started]
    assert any(first[i] != first[i + 1] for i in range(len(first) - 1))
    for record in run.cell_records():
        assert record["prefill_round"] == [0, 1, 2] and record["e2e_round"] == [0, 1, 2]
        assert record["decode_round"] == [0, 1, 2] and len(record["worker"]) == 3
    assert not list((run.path / "rounds").glob("*.json")), "round files give way to the cell file"
    assert run.read_meta()["protocol_version"] == 2 and run.read_meta()["rounds"] == 3


def test_run_records_its_environment_and_regime(tmp_path):
    run = start_run(parse_plan(plan_dict()), tmp_path / "runs")
    meta = run.read_meta()
    assert meta["status"] == "running" and meta["device_kind"] == "cpu"
    assert meta["environment"]["torch"] == torch.__version__
    assert meta["regime"] and meta["tool_version"]
    assert meta["plan"]["name"] == "runner-test" and meta["n_cells_planned"] == 4
    assert [e["event"] for e in run.events()] == ["run_started"]


def test_repeats_make_independent_runs_sharing_a_series(tmp_path):
    plan = parse_plan(plan_dict(repeats=2, backends=["hf-eager"], gen_lens=[2, 3]))
    runs = execute(plan, tmp_path / "runs")
    metas = [r.read_meta() for r in runs]
    assert len(runs) == 2 == len(list_run_dirs(tmp_path / "runs"))
    assert metas[0]["series_id"] and metas[0]["series_id"] == metas[1]["series_id"]
    assert [m["shuffle_seed"] for m in metas] == [plan.seed, plan.seed + 1]
    assert all(m["status"] == "finished" and len(r.cell_records()) == 4 for m, r in zip(metas, runs))


def test_interrupt_marks_the_run_interrupted_and_continuing_finishes_each_cell_once(tmp_path):
    run = start_run(parse_plan(plan_dict()), tmp_path / "runs")

    def interrupt_after_first_cell(event):
        if event["event"] == "cell_finished":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        continue_run(run, interrupt_after_first_cell)
    assert run.read_meta()["status"] == "interrupted"
    assert len(run.finished_keys()) == 1
    assert events_of(run, "run_interrupted")[0]["done"] == 1

    continue_run(run)
    meta = run.read_meta()
    assert meta["status"] == "finished" and meta["finished_at"]
    started = [(e["key"], e["round"]) for e in events_of(run, "cell_started")]
    # no round of any cell measured twice: rounds kept before the interrupt are not redone
    assert sorted(started) == sorted((e["key"], r) for e in meta["cells"] for r in range(meta["rounds"]))
    assert len(events_of(run, "segment_started")) == 2


def test_continuing_a_missing_run_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match="no run directory"):
        continue_run(RunDir(tmp_path / "nope"))


def test_processes_measure_each_round_in_its_own_fresh_worker_and_progress_reaches_the_caller(tmp_path):
    import os

    two = {"prefill_reps": 2, "decode_reps": 2, "e2e_reps": 2, "rounds": 2, "processes": True,
           "check_correctness": False}
    plan = parse_plan(plan_dict(backends=["hf-eager"], measure=plan_dict()["measure"] | two))
    run = start_run(plan, tmp_path / "runs")
    seen = []
    continue_run(run, seen.append)
    meta = run.read_meta()
    assert meta["status"] == "finished" and len(run.cell_records()) == 2
    workers = {w for record in run.cell_records() for w in record["worker"]}
    assert len(workers) == 2 and os.getpid() not in workers, "one new process per round"
    for record in run.cell_records():
        assert record["decode_round"] == [0, 1] and len(set(record["worker"])) == 2
    assert [e["event"] for e in seen].count("cell_finished") == 2
    assert {e["round"] for e in seen if e["event"] == "cell_started"} == {0, 1}
    assert [e["event"] for e in run.events()][-1] == "run_finished"


def test_a_processes_run_interrupted_between_rounds_resumes_without_measuring_a_round_twice(tmp_path):
    two = {"prefill_reps": 2, "decode_reps": 2, "e2e_reps": 2, "rounds": 2, "processes": True,
           "check_correctness": False}
    plan = parse_plan(plan_dict(backends=["hf-eager"], measure=plan_dict()["measure"] | two))
    run = start_run(plan, tmp_path / "runs")

    def interrupt_in_round_one(event):
        if event["event"] == "cell_started" and event["round"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        continue_run(run, interrupt_in_round_one)
    assert run.read_meta()["status"] == "interrupted"
    assert set(run.round_records()) == {e["key"] for e in run.read_meta()["cells"]}, "round 0 kept for both"
    continue_run(run)
    assert run.read_meta()["status"] == "finished" and len(run.cell_records()) == 2
    zero = [e["key"] for e in events_of(run, "cell_started") if e["round"] == 0]
    assert sorted(zero) == sorted(e["key"] for e in run.read_meta()["cells"]), "round 0 was not measured again"


def test_a_processes_run_builds_the_correctness_reference_once_per_cell_in_the_worker_of_its_last_round(
        tmp_path, monkeypatch):
    # each round worker is `continue_run(run, only_round=r)` in a fresh process; called here in turn
    # with the hf-eager reference build counted, round by round
    from runner import correctness

    built = []
    real_reference = correctness.make_reference

    def make_reference(*args, **kwargs):
        built.append(current_round[0])
        return real_reference(*args, **kwargs)

    monkeypatch.setattr(correctness, "make_reference", make_reference)
    three = {"prefill_reps": 3, "decode_reps": 3, "e2e_reps": 3, "rounds": 3, "processes": True, "energy_window_s": 0}
    plan = parse_plan(plan_dict(backends=["hf-sdpa"], gen_lens=[2], measure=plan_dict()["measure"] | three))
    run = start_run(plan, tmp_path / "runs")
    current_round = [None]
    for round_index in range(3):
        current_round[0] = round_index
        continue_run(run, only_round=round_index)
    records = run.cell_records()
    assert len(records) == 2 and all(r["correctness"] and r["correctness"]["ok"] for r in records)
    assert built == [2, 2], "one reference per cell (two shapes), both in the last round's worker, none before"
