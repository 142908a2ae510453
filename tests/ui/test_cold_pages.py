"""Every page, cold, on the bundled data: a fresh Python process (no in-memory caches) with
the derived results kept on disk, as every visit after the first one to a data version.

The bound is generous on purpose (a busy 2-core CI machine); it exists to fail when a page
starts recomputing pooled statistics per visit again (that took 80-95 s here). The real
targets (2 s cold) are measured by benchmarks/bench_dashboard.py, not asserted here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.ui.conftest import APP, PAGES, ROOT

COLD_BOUND_S = 30.0

SCRIPT = """
import json, sys, time
from streamlit.testing.v1 import AppTest
pages = json.loads(sys.argv[1])
at = AppTest.from_file(sys.argv[2], default_timeout=300)
out = {}
for name, path in pages.items():
    start = time.perf_counter()
    if name == "overview":
        at.run()
    else:
        at.switch_page(path).run()
    out[name] = {"seconds": time.perf_counter() - start, "exceptions": [str(e.value) for e in at.exception]}
print(json.dumps(out))
"""


def test_every_page_renders_cold_within_a_generous_bound_once_results_are_kept(derived_cache, tmp_path):
    pages = {name: path for name, path in PAGES.items() if name not in ("run", "snapshots")}
    env = {**os.environ, "SHAPEBENCH_CACHE": str(derived_cache), "SHAPEBENCH_DB": str(tmp_path / "absent.duckdb"),
           "PYTHONPATH": str(ROOT)}
    for key in ("SHAPEBENCH_SNAPSHOT", "SHAPEBENCH_HOSTED"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(pages), APP], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    timings = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(timings) == set(pages)
    for name, result in timings.items():
        assert not result["exceptions"], (name, result["exceptions"])
    print("cold page seconds:", {name: round(r["seconds"], 2) for name, r in timings.items()})
    slow = {name: round(r["seconds"], 1) for name, r in timings.items() if r["seconds"] > COLD_BOUND_S}
    assert not slow, f"pages slower than {COLD_BOUND_S:g} s cold with kept results: {slow}"
