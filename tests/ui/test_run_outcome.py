"""Run page (AppTest): every start is answered where the user pressed Start.

A run measuring on this machine (whoever started it: this page, a terminal) disables Start
and says who holds the machine and since when; a start the runner refuses or that fails shows
the runner's own line until the next start; a finished run ends with its results and a link
to it on the Runs page. The runner is the real one, as a subprocess; the measuring lock is the
real flock, held from this test process.
"""
from __future__ import annotations

import os

import pytest
from tomli_w import dumps

from dashboard import runs
from runner import runlock
from tests.runner.helpers import FAST_MEASURE, TINY_SHAPE, wait_for
from tests.ui.conftest import PAGES, assert_clean, texts

RUN_TIMEOUT_S = 240  # a 1-cell CPU run (torch import, model build, 3 rounds) on a busy 2-core machine


def open_run_page(app_env, tmp_path):
    at = app_env(runs=tmp_path / "runs").run()
    at.switch_page(PAGES["run"]).run()
    assert_clean(at)
    return at


def use_plan(at, plan: dict):
    """The TOML mode of the page with this plan in the editor."""
    at.radio(key="run_mode").set_value("Write or upload a plan (TOML)").run()
    at.text_area(key="run_plan_toml").set_value(dumps(plan)).run()
    assert_clean(at)
    return at


def tiny_plan(**overrides) -> dict:
    plan = {"name": "page-run", "device": "cpu", "seed": 3, "backends": ["hf-eager"], "dtypes": ["float32"],
            "batch_sizes": [1], "prompt_lens": [8], "gen_lens": [4],
            "models": {"custom": [{"name": "1x32", "n_layer": 1, "n_embd": 32, "n_head": 2, **TINY_SHAPE}]},
            "measure": FAST_MEASURE | {"rounds": 3, "decode_reps": 3, "prefill_reps": 3}}
    return plan | overrides


def follow_until_ended(at):
    """Wait for the launched runner's process to end, then let the page's poll notice it."""
    launched = at.session_state["_run_launch"]
    wait_for(lambda: runs.read_lock() is None, RUN_TIMEOUT_S)
    for _ in range(3):  # the poll sees the end, records it and redraws the page
        at.run()
        if "_run_outcome" in at.session_state:
            return at.session_state["_run_outcome"]
    pytest.fail(f"the page never noticed that run {launched} ended")


def test_start_is_disabled_with_the_reason_while_another_process_measures(app_env, tmp_path):
    at = open_run_page(app_env, tmp_path)
    assert not at.button(key="run_start").disabled
    with runlock.machine_lock("plan from a terminal", runlock.lock_path()):
        at.run()
        reason = [w for w in texts(at, "warning") if "Another run is measuring on this machine" in w]
        assert reason, texts(at, "warning")
        assert f"pid {os.getpid()}" in reason[0] and "plan from a terminal" in reason[0] and "since" in reason[0]
        start = at.button(key="run_start")
        assert start.disabled and "Another run is measuring" in start.help
    at.run()
    assert not at.button(key="run_start").disabled, "free again once the other run ends"
    assert not [w for w in texts(at, "warning") if "Another run is measuring" in w]


def test_refused_start_shows_who_holds_the_machine_until_the_next_start(app_env, tmp_path):
    at = open_run_page(app_env, tmp_path)
    with runlock.machine_lock("plan from a terminal", runlock.lock_path()):
        at.button(key="run_start").click().run()  # pressed as the other run took the machine
        errors = [e for e in texts(at, "error") if "Another run is measuring on this machine" in e]
        assert errors and f"pid {os.getpid()}" in errors[0] and "plan from a terminal" in errors[0]
    at.run()
    assert [e for e in texts(at, "error") if "Another run is measuring" in e], "stays until the next start"


def test_a_plan_the_runner_rejects_shows_its_error_line_on_the_page(app_env, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the plan is rejected for asking for a GPU this machine does not have")
    at = use_plan(open_run_page(app_env, tmp_path), tiny_plan(device="cuda"))
    at.button(key="run_start").click().run()
    outcome = follow_until_ended(at)
    assert not outcome.ok and outcome.run_id is None
    errors = texts(at, "error")
    assert any("The run did not start" in e and "no CUDA device is available here" in e for e in errors), errors
    assert not at.button(key="run_start").disabled
    at.run()
    assert any("no CUDA device is available here" in e for e in texts(at, "error")), "stays until the next start"


def test_a_finished_run_ends_with_its_results_and_a_link_to_it_on_the_runs_page(app_env, tmp_path):
    at = use_plan(open_run_page(app_env, tmp_path), tiny_plan())
    at.button(key="run_start").click().run()
    outcome = follow_until_ended(at)
    assert outcome.ok, outcome.message
    assert_clean(at)
    assert any(outcome.run_id in s for s in texts(at, "success"))
    [results] = [d.value for d in at.dataframe if "decode ms/token" in d.value.columns]
    assert list(results["model"]) == ["1x32"] and list(results["status"]) == ["ok"]
    assert float(results["decode ms/token"].iloc[0].replace(",", "")) > 0
    assert results["95% CI"].iloc[0].startswith("[") and results["rounds"].iloc[0] == 3
    [link] = [el for el in at.get("page_link") if outcome.run_id in el.proto.label]
    assert link.proto.page.endswith("runs") and f"run={outcome.run_id}" in link.proto.query_string

    at.query_params[runs.RUN_PARAM] = outcome.run_id  # following the link
    at.switch_page(PAGES["runs"]).run()
    assert_clean(at)
    assert any(outcome.run_id in s for s in texts(at, "subheader"))
    linked = [d.value for d in at.dataframe if "decode ms/token" in d.value.columns]
    assert linked and list(linked[0]["model"]) == ["1x32"]
