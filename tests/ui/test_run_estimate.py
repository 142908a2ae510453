"""The Run page's time estimate learns from this machine's earlier runs, and says when it cannot.

Expectations come from the bundled snapshot's own finished runs (their plans, host classes
and wall times), never from literal numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.load import finished_runs
from dashboard import plan_builder
from runner.plan import estimate_seconds, expand, parse_plan
from store.snapshot import open_snapshot
from vocabulary import PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def history():
    con = open_snapshot(ROOT / "data" / "snapshot")
    yield finished_runs(con)
    con.close()


def rough_ratio(row) -> float:
    plan = parse_plan(json.loads(row.plan))
    cells = expand(plan, device=row.device_kind, resolve_remote=False)
    return row.wall_s / (estimate_seconds(cells, plan.measure) * plan.repeats)


def host_of(row) -> str:
    return json.loads(row.environment)["host_fingerprint"]["host_class"]


@pytest.fixture(scope="module")
def cpu_run(history):
    """A finished current-protocol CPU run with a host fingerprint (the bundle has one)."""
    rows = [r for r in history.itertuples() if r.device_kind == "cpu" and r.protocol_version == PROTOCOL_VERSION
            and (json.loads(r.environment).get("host_fingerprint") or {}).get("host_class")]
    assert rows, "the bundled data holds a protocol-2 CPU run"
    return rows[0]


def test_a_plan_run_before_on_this_host_is_scaled_by_how_that_run_compared_with_the_rough_model(history, cpu_run):
    built = plan_builder.from_toml((ROOT / "plans" / f"{cpu_run.plan_name}.toml").read_text())
    assert built.ok and built.plan.name == cpu_run.plan_name
    same = [r for r in history.itertuples() if r.plan_name == cpu_run.plan_name and r.device_kind == "cpu"
            and r.protocol_version == PROTOCOL_VERSION and host_of(r) == host_of(cpu_run)]
    estimate = plan_builder.history_estimate(built, history, host_of(cpu_run), PROTOCOL_VERSION)
    assert estimate is not None and estimate.same_plan and estimate.runs == len(same)
    ratios = sorted(rough_ratio(r) for r in same)
    assert estimate.low_s == pytest.approx(built.estimate_s * ratios[0])
    assert estimate.high_s == pytest.approx(built.estimate_s * ratios[-1])
    assert estimate.low_s <= estimate.seconds <= estimate.high_s


def test_another_plan_on_that_host_borrows_every_run_there(history, cpu_run):
    built = plan_builder.from_toml((ROOT / "plans" / "smoke-cpu.toml").read_text())
    assert built.ok and built.plan.name != cpu_run.plan_name
    estimate = plan_builder.history_estimate(built, history, host_of(cpu_run), PROTOCOL_VERSION)
    assert estimate is not None and not estimate.same_plan
    assert estimate.seconds == pytest.approx(built.estimate_s * rough_ratio(cpu_run)) or estimate.runs > 1


def test_a_host_with_no_finished_run_gets_no_history_estimate(history):
    built = plan_builder.from_toml((ROOT / "plans" / "smoke-cpu.toml").read_text())
    hosts = {host_of(r) for r in history.itertuples() if "host_fingerprint" in json.loads(r.environment)}
    unseen = "0" * 8
    assert unseen not in hosts
    assert plan_builder.history_estimate(built, history, unseen, PROTOCOL_VERSION) is None
    assert plan_builder.history_estimate(built, history.iloc[0:0], unseen, PROTOCOL_VERSION) is None
