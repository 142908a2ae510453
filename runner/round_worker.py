"""`python -m runner.round_worker RUN_DIR ROUND [DEADLINE]`: one round of a run, in a fresh process.

With `[measure] processes = true` the executor starts one of these per round, the way
pyperf spawns workers: each process has its own placement, allocator state and caches, so
the round-to-round spread includes what otherwise only shows between runs. Progress goes to
stdout as prefixed JSON lines for the parent; everything else the worker prints passes
through. DEADLINE (time.time() seconds) is the segment's `[measure] budget_s`. Exit status:
0 done, 130 interrupted, 3 a run error (reported as a worker_error line first).
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from runner.lifecycle import PROGRESS_PREFIX, RunError

RUN_ERROR_EXIT = 3


def emit(event: dict) -> None:
    """One progress line for the parent executor."""
    sys.stdout.write(PROGRESS_PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    from runner.executor import continue_run
    from runner.runfiles import RunDir

    if len(argv) not in (2, 3) or not argv[1].isdigit():
        sys.stderr.write("usage: python -m runner.round_worker RUN_DIR ROUND [DEADLINE]\n")
        return 2
    try:  # the segment's budget, as time.time() seconds: the same wall clock in every worker
        deadline = float(argv[2]) if len(argv) == 3 else None
    except ValueError:
        sys.stderr.write("DEADLINE: seconds since the epoch\n")
        return 2

    def interrupt(signum, frame):  # noqa: ARG001 - SIGTERM ends the round like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        continue_run(RunDir(Path(argv[0])), emit, only_round=int(argv[1]), deadline=deadline)
    except RunError as error:
        emit({"event": "worker_error", "error": str(error)})
        return RUN_ERROR_EXIT
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
