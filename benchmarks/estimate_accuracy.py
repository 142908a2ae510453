"""How close is the time estimate? Runs a plan (default plans/smoke-cpu.toml) once with the real
CLI, prints the estimate (`runner.plan.estimate_seconds`, what `python -m runner plan` and the
Run page show) against the wall time, their ratio, and the machine's load while it ran
(runner.machine_load), since a busy machine stretches every part of a run.

Target: actual / estimate within 0.7-1.3 on a quiet machine. The breakdown says where the
time went (setup, warm-up, timed samples, correctness check, the rest) so that a miss can be
traced to one term of the model.

    python -m benchmarks.estimate_accuracy [--plan plans/smoke-cpu.toml] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.machine_load import LoadSampler, busy_reasons
from runner.plan import estimate_seconds, expand, load_plan
from runner.runfiles import list_run_dirs

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(ROOT / "plans" / "smoke-cpu.toml"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    plan = load_plan(args.plan)
    device = plan.device if plan.device != "auto" else "cpu"
    estimate = estimate_seconds(expand(plan, device=device, resolve_remote=False), plan.measure) * plan.repeats
    before = LoadSampler().sample()
    with tempfile.TemporaryDirectory() as runs:
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "runner", "run", args.plan, "--runs-dir", runs, "--no-ingest"],
                              cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - began
        if done.returncode != 0:
            sys.exit(f"the run failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        [run] = list_run_dirs(runs)
        meta = run.read_meta()
        records = run.cell_records()
        active = run.active_seconds()
    parts = {part: sum(r.get(part) or 0.0 for r in records) for part in ("setup_s", "warmup_s", "measured_s", "check_s")}
    summary = meta.get("machine_load") or {}
    worst = summary.get("worst") or {}
    figures = {
        "plan": plan.name, "cells": len(records), "rounds": plan.measure.rounds, "cores": os.cpu_count(),
        "estimate_s": round(estimate, 1), "actual_s": round(wall, 1), "ratio": round(wall / estimate, 2),
        "run_active_s": round(active, 1), "process_start_and_exit_s": round(wall - active, 1),
        **{part: round(value, 1) for part, value in parts.items()},
        "other_s": round(active - sum(parts.values()), 1),
        "warmup_share": round(parts["warmup_s"] / active, 2) if active else None,
        "warmup_converged_cells": sum(bool(r.get("warmup_converged")) for r in records),
        "load_per_core_before": before["load_per_core"], "competing_cores_before": before["competing_cores"],
        "busy_before": before["busy"], "busy_samples": summary.get("busy_samples"), "samples": summary.get("samples"),
        "worst": "; ".join(busy_reasons(worst)) or "quiet",
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    print(f"{plan.name}: {figures['cells']} cells x {figures['rounds']} rounds on {figures['cores']} cores")
    print(f"estimate {estimate:.1f} s, actual {wall:.1f} s: actual / estimate = {wall / estimate:.2f}")
    print("where the time went: " + ", ".join(f"{k} {figures[k]}" for k in
                                                ("process_start_and_exit_s", "setup_s", "warmup_s", "measured_s",
                                                 "check_s", "other_s")))
    print(f"warm-up {100 * (figures['warmup_share'] or 0):.0f}% of the run; "
          f"{figures['warmup_converged_cells']} of {figures['cells']} cells converged")
    print(f"machine: load {before['load_per_core']:.1f} per core before, "
          f"{figures['busy_samples']} of {figures['samples']} samples busy during the run; at worst {figures['worst']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
