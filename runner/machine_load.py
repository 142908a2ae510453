"""Is the machine busy? Load, CPU steal and competing processes, sampled around the measurement.

A latency measured while another program takes CPU time is the other program's number as
much as ours: the scheduler preempts the measuring threads and caches and memory bandwidth
are shared. So the runner samples the machine once before a run and before and after every
cell-round (never inside a timed region: a sample walks the process table, tens of ms),
records each sample in the run's events (runner.runfiles) and flags what was measured while
the machine was busy (`vocabulary.BUSY_MACHINE_FLAG`). pyperf does the same kind of check
(`pyperf system show`) and gives the same advice (`BUSY_ADVICE`).

Each sample holds:
    load_per_core    1-minute load average / logical cores (os.getloadavg, os.cpu_count)
    steal_fraction   share of CPU time the hypervisor gave to other guests since the last
                     sample (/proc/stat's steal column, read through psutil.cpu_times)
    competing_cores  CPU used by processes outside the run's own process tree since the
                     last sample, in cores (psutil's per-process cpu_percent / 100)
    competing        the few biggest of those processes: pid, name, cores
    busy, reasons    the verdict of `busy_reasons` and why

This module imports psutil only (no torch), so the dashboard may read its verdicts.
"""
from __future__ import annotations

import os
import time

import psutil

# Thresholds, each with why:
# Another program using half a core or more: on a CPU run the measuring threads use every
# core and lose time slices to it; on a GPU run it competes with the one launching thread for
# caches and memory bandwidth. A quiet desktop's background stays well under 0.1 core.
COMPETING_CORES = 0.5
# Steal above 5% of CPU time: the hypervisor ran other guests on our cores, which the run
# sees as random multi-ms stalls (a dedicated host shows 0%).
STEAL_FRACTION = 0.05
# Load above 2 runnable tasks per core: even a run that uses every core gets at most about
# half of the CPU time (the load counts the run's own threads too, hence 2 and not 1).
LOAD_PER_CORE = 2.0
# A process below this share of a core is not listed among the competitors (noise).
LISTED_CORES = 0.05
TOP_COMPETITORS = 3  # how many competitors a sample names
FIRST_SAMPLE_S = 0.5  # per-process CPU shares need an interval; the first sample waits this long

# A Ray node's daemons on this host; its workers (named ray::...) are the raylet's children.
RAY_DAEMONS = ("raylet", "gcs_server")

BUSY_ADVICE = ("close other programs, wait for the load to fall, pin the run to free cores "
               "(taskset -c CORES python -m runner run ...), or use more rounds ([measure] rounds)")


def busy_reasons(sample: dict) -> list[str]:
    """Why a recorded sample counts as busy (empty: quiet), in words a user can act on."""
    reasons = []
    if (sample.get("competing_cores") or 0.0) >= COMPETING_CORES:
        names = ", ".join(f"{p['name']} ({p['cores']:.1f} cores)" for p in sample.get("competing") or [])
        reasons.append(f"other processes use {sample['competing_cores']:.1f} cores" + (f": {names}" if names else ""))
    if (sample.get("steal_fraction") or 0.0) >= STEAL_FRACTION:
        reasons.append(f"the hypervisor steals {100 * sample['steal_fraction']:.0f}% of CPU time")
    if (sample.get("load_per_core") or 0.0) >= LOAD_PER_CORE:
        reasons.append(f"load {sample['load_per_core']:.1f} per core")
    return reasons


def busy_text(sample: dict) -> str:
    """One line for a user: what made the machine busy and what to do about it."""
    return f"the machine is busy ({'; '.join(busy_reasons(sample)) or 'no reason recorded'}): {BUSY_ADVICE}"


def ray_pids() -> set[int]:
    """This host's Ray processes: a node's daemons and workers. Under `--ray` they run the
    run's own cells (a node started with `ray start` is no child of the driver), so a sampler
    of the driver's machine counts them as the run's own, never as competitors."""
    pids = set()
    for proc in psutil.process_iter(["name"]):
        name = proc.info.get("name") or ""
        if name in RAY_DAEMONS or name.startswith("ray::"):
            pids.add(proc.pid)
    return pids


class LoadSampler:
    """Samples the machine; per-process CPU and steal are measured since the previous sample.

    `own_pids` are the run's own processes (default: this one; a round worker adds its parent):
    they and their descendants are never counted as competitors. A sample names the `listed`
    biggest competitors.
    """

    def __init__(self, own_pids: set[int] | None = None, listed: int = TOP_COMPETITORS) -> None:
        self.own_pids = set(own_pids) if own_pids is not None else {os.getpid()}
        self.listed = listed
        self.cores = os.cpu_count() or 1
        self._processes: dict[int, psutil.Process] = {}
        self._cpu_times = psutil.cpu_times()
        self._primed_at = time.monotonic()
        self._prime_processes()

    def _own_tree(self) -> set[int]:
        pids = set(self.own_pids)
        for pid in self.own_pids:
            try:
                pids |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
            except psutil.Error:
                continue
        return pids

    def _prime_processes(self) -> None:
        for proc in psutil.process_iter():
            if proc.pid not in self._processes:
                self._processes[proc.pid] = proc
                try:
                    proc.cpu_percent(None)  # the first call only starts the interval
                except psutil.Error:
                    pass

    def sample(self) -> dict:
        """One sample (module docstring); the first waits until FIRST_SAMPLE_S after priming."""
        wait = FIRST_SAMPLE_S - (time.monotonic() - self._primed_at)
        if wait > 0:
            time.sleep(wait)
        own = self._own_tree()
        competing = []
        alive: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            known = self._processes.get(proc.pid)
            if known is None:  # new since the last sample: counted from the next one on
                try:
                    proc.cpu_percent(None)
                except psutil.Error:
                    continue
                alive[proc.pid] = proc
                continue
            alive[proc.pid] = known
            try:
                cores = known.cpu_percent(None) / 100.0
                name = known.name()
            except psutil.Error:
                continue
            if proc.pid not in own and cores > 0:
                competing.append({"pid": proc.pid, "name": name, "cores": round(cores, 3)})
        self._processes = alive
        now_times = psutil.cpu_times()
        total = sum(now_times) - sum(self._cpu_times)
        steal = getattr(now_times, "steal", 0.0) - getattr(self._cpu_times, "steal", 0.0)
        self._cpu_times = now_times
        competing.sort(key=lambda p: -p["cores"])
        sample = {
            "ts": time.time(),
            "load_per_core": round(os.getloadavg()[0] / self.cores, 3),
            "cores": self.cores,
            "steal_fraction": round(steal / total, 4) if total > 0 else 0.0,
            "competing_cores": round(sum(p["cores"] for p in competing), 3),
            "competing": [p for p in competing if p["cores"] >= LISTED_CORES][:self.listed],
        }
        reasons = busy_reasons(sample)
        return sample | {"busy": bool(reasons), "reasons": reasons}


def load_summary(samples: list[dict]) -> dict:
    """A run's verdict from its samples: busy if any sample was, with the busiest one."""
    if not samples:
        return {"busy": False, "samples": 0, "busy_samples": 0, "worst": None}
    busy = [s for s in samples if s.get("busy")]
    worst = max(samples, key=lambda s: (bool(s.get("busy")), s.get("competing_cores") or 0.0,
                                        s.get("load_per_core") or 0.0))
    return {"busy": bool(busy), "samples": len(samples), "busy_samples": len(busy), "worst": worst}
