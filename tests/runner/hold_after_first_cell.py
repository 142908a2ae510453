"""`python -m runner ARGS`, held after its first finished cell until a signal arrives.

A test hook, kept out of the product: signal tests must interrupt a run that is certainly
still running, whatever the machine's speed. After the first cell file is written, this
touches the file named by SHAPEBENCH_TEST_HELD and waits; SIGINT or SIGTERM then lands
inside the run loop exactly as it would mid-run, and SIGKILL finds the run unfinished.
"""
from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

from runner.runfiles import RunDir

write_cell = RunDir.write_cell


def write_cell_then_hold(self: RunDir, cell_key: str, record: dict) -> None:
    write_cell(self, cell_key, record)
    Path(os.environ["SHAPEBENCH_TEST_HELD"]).touch()
    while True:
        time.sleep(0.05)


RunDir.write_cell = write_cell_then_hold
sys.argv = ["runner", *sys.argv[1:]]
runpy.run_module("runner", run_name="__main__", alter_sys=True)
