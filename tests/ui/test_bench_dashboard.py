"""The dashboard benchmark in its short mode, as CI runs it: every page of the app on the bundled
data, cold and warm, and a failure when a page is above the issue's targets (cold 2 s, warm 0.5 s).

The derived results are the session's (conftest.derived_cache): what a first visitor computes
once per data version is not what this measures. The full benchmark (the bundle and a store ten
times its size, first visits too) is `python -m benchmarks.bench_dashboard`.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from benchmarks.bench_dashboard import PAGES as BENCH_PAGES
from tests.ui.conftest import PAGES, ROOT


def test_benchmark_covers_every_page_of_the_app():
    routed = set(re.findall(r'"(app_pages/\w+\.py)"', (ROOT / "app.py").read_text()))
    assert set(BENCH_PAGES.values()) == routed == set(PAGES.values())


def test_short_benchmark_times_every_page_cold_and_warm_within_the_targets(derived_cache, tmp_path):
    out = tmp_path / "timings.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_dashboard", "--short", "--check",
                           "--cache", str(derived_cache), "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    print(done.stdout)
    timings = json.loads(out.read_text())["bundle"]
    assert set(timings) == set(BENCH_PAGES)
    assert all({"cold", "warm"} <= set(t) for t in timings.values())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
