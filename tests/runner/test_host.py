"""Host control and the host fingerprint (protocol v2): applied, read back, recorded."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runner.environment import regime_key
from runner.host import host_fingerprint, resolve_affinity
from tests.runner.helpers import REPO_ROOT, cli_env

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
cpu MHz\t\t: 2450.000
flags\t\t: fpu sse avx2 hypervisor
"""


def test_the_fingerprint_is_stable_on_one_machine_and_differs_when_a_field_differs():
    a, b = host_fingerprint(CPUINFO, "6.1"), host_fingerprint(CPUINFO, "6.1")
    assert a == b and a["model_name"] == "AMD EPYC" and a["cpu_family"] == "25"
    assert host_fingerprint(CPUINFO.replace("stepping\t: 1", "stepping\t: 2"), "6.1")["host_class"] != a["host_class"]
    assert host_fingerprint(CPUINFO.replace(" avx2", ""), "6.1")["host_class"] != a["host_class"]
    # clock speed is recorded but is not what makes a host class
    assert host_fingerprint(CPUINFO.replace("2450.000", "3000.000"), "6.1")["host_class"] == a["host_class"]


def test_two_cpus_of_one_model_name_are_two_regimes_and_an_unfingerprinted_run_keeps_its_key():
    milan = host_fingerprint(CPUINFO, "6.1")
    genoa = host_fingerprint(CPUINFO.replace("model\t\t: 1", "model\t\t: 17"), "6.1")
    cpu_env = {"device_kind": "cpu", "cpu_model": "AMD EPYC", "torch_threads": 2}
    keys = {regime_key({**cpu_env, "host_fingerprint": f}) for f in (milan, genoa)}
    assert len(keys) == 2 and all(k.startswith("CPU AMD EPYC | 2 threads | host ") for k in keys)
    assert regime_key(cpu_env) == "CPU AMD EPYC | 2 threads"  # protocol 1: no fingerprint recorded
    gpu_env = {"device_kind": "cuda", "gpu_name": "NVIDIA H200", "gpu": {"driver": "580"}, "cuda_runtime": "13.0"}
    assert regime_key({**gpu_env, "host_fingerprint": milan}) == f"NVIDIA H200 | driver 580 | CUDA 13.0 | host {milan['host_class']}"


def test_auto_affinity_pins_gpu_runs_to_one_core_and_leaves_cpu_runs_alone():
    assert resolve_affinity("auto", "cuda", {0, 1, 2, 3}) == [3]
    assert resolve_affinity("auto", "cpu", {0, 1}) is None
    assert resolve_affinity("none", "cuda", {0, 1}) is None
    assert resolve_affinity([1], "cpu", {0, 1}) == [1]
    with pytest.raises(ValueError, match="not available here"):
        resolve_affinity([7], "cpu", {0, 1})


def test_a_run_applies_affinity_and_threads_and_records_what_the_process_has(tmp_path):
    core = max(os.sched_getaffinity(0))
    script = (
        "import json, os, sys, torch\n"
        "from runner.lifecycle import prepare_device\n"
        "from runner.plan import MeasureSettings\n"
        f"env = prepare_device('cpu', MeasureSettings(cpu_affinity=[{core}], threads=1))\n"
        "print(json.dumps({'env': {k: env[k] for k in ('cpu_affinity', 'torch_threads', 'host_launch_us')},"
        " 'process': sorted(os.sched_getaffinity(0)), 'threads': torch.get_num_threads(),"
        " 'host_class': env['host_fingerprint']['host_class']}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import json

    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["process"] == [core] == out["env"]["cpu_affinity"]
    assert out["threads"] == 1 == out["env"]["torch_threads"]
    assert out["env"]["host_launch_us"] > 0 and len(out["host_class"]) == 8
