"""Wall time of a fresh worker process per round (`[measure] processes = true`) against the same
rounds in one process, on one plan, alternated so that drift in the machine's load hits both.

Each run is `python -m runner run PLAN --no-ingest` in a subprocess, timed from outside (what a
user waits for), with the run's own split (benchmarks.wall_time_split: setup, warm-up,
measured, correctness check). A worker process pays the import of torch and transformers,
the environment and every cell's setup once per round; the hf-eager correctness reference is
built once per cell, in the worker of its last round (tests/runner/test_executor.py holds
that). Target (issue "Numbers to a stated precision", part 5): processes / one process <= 1.5.

    PYTHONPATH=. python -m benchmarks.processes_vs_rounds [PLAN] [--pairs 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

from benchmarks.wall_time_split import split
from runner.plan import load_plan
from runner.runfiles import list_run_dirs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PLAN = REPO / "plans" / "smoke-cpu.toml"  # tiny shapes: the per-process cost is the largest share it can be


def run_once(plan_path: Path, runs_dir: Path) -> tuple[float, dict[str, float]]:
    """(wall seconds from outside, the run's own split) of one `runner run` of the plan."""
    env = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    before = {run.run_id for run in list_run_dirs(runs_dir)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runner", "run", str(plan_path), "--no-ingest", "--runs-dir", str(runs_dir)],
                   cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    [run] = [run for run in list_run_dirs(runs_dir) if run.run_id not in before]
    return wall, split(run.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", type=Path, nargs="?", default=DEFAULT_PLAN)
    parser.add_argument("--pairs", type=int, default=2, help="one-process and processes runs, alternated")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell in both modes")
    args = parser.parse_args()
    plan = load_plan(args.plan)
    with tempfile.TemporaryDirectory(prefix="processes-vs-rounds-") as tmp:
        root = Path(tmp)
        paths = {}
        for processes in (False, True):
            variant = plan.model_copy(update={"measure": plan.measure.model_copy(
                update={"rounds": args.rounds, "processes": processes})})
            paths[processes] = root / f"processes-{processes}.toml"
            dumped = variant.model_dump(mode="json", exclude_none=True)
            paths[processes].write_text(tomli_w.dumps(dumped))
        walls: dict[bool, list[float]] = {False: [], True: []}
        splits: dict[bool, list[dict]] = {False: [], True: []}
        for pair in range(args.pairs):
            for processes in ((False, True) if pair % 2 == 0 else (True, False)):
                wall, parts = run_once(paths[processes], root / "runs")
                walls[processes].append(wall)
                splits[processes].append(parts)
                print(f"pair {pair + 1}: {'processes' if processes else 'one process'}: {wall:.1f} s "
                      f"(setup {parts['setup']:.1f}, warm-up {parts['warm-up']:.1f}, measured {parts['measured']:.1f}, "
                      f"check {parts['correctness check']:.1f}, other {parts['other']:.1f})", flush=True)
    one, many = statistics.median(walls[False]), statistics.median(walls[True])
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"{args.plan.name}, {args.rounds} rounds, {len(walls[False])} runs each, {cpu} ({os.cpu_count()} CPUs), "
          f"load average {os.getloadavg()[0]:.1f}")
    pairs = ", ".join(f"{b / a:.2f}" for a, b in zip(walls[False], walls[True]))
    print(f"median wall: one process {one:.1f} s, a process per round {many:.1f} s; "
          f"ratio {many / one:.2f} (target <= 1.5); per pair {pairs}")


if __name__ == "__main__":
    main()
