"""Does the host's speed move in time, and is it the core or the whole machine?

Protocol-2 runs showed host-bound decode (hf-eager, hf-sdpa, torch-compile) moving with the
launch probe of its round (`host_launch_us`) inside one pinned process. This probe asks
where that comes from: one process per core, each pinned to its core with one thread,
times the same tiny-op loop on the CPU (no GPU involved) every `interval` seconds and reads
its core's steal ticks (/proc/stat: time the hypervisor ran something else on the vCPU)
and MHz (/proc/cpuinfo). If the cores' speed series move together the cause is host-wide
(clock, other tenants), not the placement a pinning choice could fix.

    PYTHONPATH=. python -m benchmarks.host_speed_probe --seconds 40 --cores auto --out probe.json
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

from runner.host import launch_probe_us

PROBE_OPS = 500  # tiny ops per sample: ~1-4 ms on a CPU, many samples per second


def core_stat(core: int) -> tuple[int, int]:
    """(steal ticks, all ticks) of one core from /proc/stat (zeros off Linux)."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{core} "):
                ticks = [int(x) for x in line.split()[1:]]
                return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)
    except OSError:
        pass
    return 0, 0


def core_mhz(core: int) -> float | None:
    try:
        blocks = Path("/proc/cpuinfo").read_text().split("\n\n")
    except OSError:
        return None
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if fields.get("processor") == str(core) and "cpu MHz" in fields:
            return float(fields["cpu MHz"])
    return None


def probe_core(core: int, seconds: float, interval: float, start_at: float, queue: mp.Queue) -> None:
    """One pinned, single-threaded process: a speed sample every `interval` s, on a shared clock."""
    import torch

    os.sched_setaffinity(0, [core])
    torch.set_num_threads(1)
    launch_probe_us("cpu", PROBE_OPS)  # warm the dispatcher before the shared start
    while time.time() < start_at:
        time.sleep(0.001)
    samples = []
    tick = 0
    while True:
        due = start_at + tick * interval
        if due > start_at + seconds:
            break
        while time.time() < due:
            time.sleep(0.0005)
        steal_before, all_before = core_stat(core)
        us = launch_probe_us("cpu", PROBE_OPS)
        samples.append({"tick": tick, "us": us, "mhz": core_mhz(core), "steal": steal_before, "all": all_before})
        tick += 1
    queue.put((core, samples))


def pick_cores(spec: str) -> list[int]:
    allowed = sorted(os.sched_getaffinity(0))
    if spec == "auto":
        # the core protocol 2 pins to (the highest), the lowest, and two in between
        picks = {allowed[0], allowed[len(allowed) // 3], allowed[2 * len(allowed) // 3], allowed[-1]}
        return sorted(picks)
    cores = [int(c) for c in spec.split(",")]
    missing = sorted(set(cores) - set(allowed))
    if missing:
        raise ValueError(f"core(s) {missing} are not available here (allowed: {allowed})")
    return cores


def correlation(a: list[float], b: list[float]) -> float:
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    den = math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    return num / den if den else float("nan")


def summarise(series: dict[int, list[dict]]) -> dict:
    cores = sorted(series)
    n = min(len(series[c]) for c in cores)
    logs = {c: [math.log(s["us"]) for s in series[c][:n]] for c in cores}
    per_core = {}
    for c in cores:
        s = series[c][:n]
        steal = s[-1]["steal"] - s[0]["steal"]
        ticks = s[-1]["all"] - s[0]["all"]
        per_core[c] = {
            "median_us": statistics.median(x["us"] for x in s),
            "sd_log_us": statistics.pstdev(logs[c]),
            "p10_us": sorted(x["us"] for x in s)[n // 10],
            "p90_us": sorted(x["us"] for x in s)[(9 * n) // 10],
            "steal_share": steal / ticks if ticks else None,
            "mhz_range": [min((x["mhz"] for x in s if x["mhz"]), default=None), max((x["mhz"] for x in s if x["mhz"]), default=None)],
        }
    pairs = {f"{a}-{b}": correlation(logs[a], logs[b]) for i, a in enumerate(cores) for b in cores[i + 1:]}
    return {"samples_per_core": n, "per_core": per_core, "cross_core_correlation": pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--cores", default="auto", help='"auto" or a comma list such as 0,7,15')
    parser.add_argument("--out", type=Path, default=None, help="write the raw series and summary as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.interval <= 0:
        print("error: --seconds and --interval must be positive", file=sys.stderr)
        return 2
    try:
        cores = pick_cores(args.cores)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 8.0  # time for every worker to import torch
    workers = [ctx.Process(target=probe_core, args=(c, args.seconds, args.interval, start_at, queue)) for c in cores]
    for w in workers:
        w.start()
    series = dict(queue.get() for _ in workers)
    for w in workers:
        w.join()
    summary = summarise(series)
    for core, s in summary["per_core"].items():
        steal = "unknown" if s["steal_share"] is None else f"{100 * s['steal_share']:.1f}%"
        print(f"core {core:3d}: median {s['median_us']:.2f} us/op, p10-p90 {s['p10_us']:.2f}-{s['p90_us']:.2f},"
              f" SD of log {s['sd_log_us']:.3f}, steal {steal}, MHz {s['mhz_range']}")
    for pair, r in summary["cross_core_correlation"].items():
        print(f"cores {pair}: correlation of log speed over time {r:+.2f}")
    if args.out:
        args.out.write_text(json.dumps({"cores": cores, "interval_s": args.interval, "summary": summary,
                                        "series": {str(c): v for c, v in series.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
