"""Measuring one cell: setup, cold sample, warm-up to stability, the three phases, the
correctness gate, telemetry and integrity flags (computed from the samples by
runner.runfiles, which also holds the record, `CellResult`). The order is fixed so that nothing that
happens after the timed phases (checking, profiling) can disturb them.
"""
from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from collections import OrderedDict
from dataclasses import dataclass

import torch

from runner import correctness, telemetry, trackers
from runner.backends import Unsupported, get_backend
from runner.models import build_model, count_params, make_inputs
from runner.plan import Cell, MeasureSettings
from runner.rounds import RoundPolicy, decode_half_width
from runner.runfiles import CellResult, integrity_flags
from runner.timing import make_timer, synchronize, validate_samples, warm_up
from vocabulary import DTYPES, STOP_BUDGET, STOP_PRECISION

TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}  # vocabulary name -> torch dtype


class ReferenceCache:
    """hf-eager float32 references, shared by all cells of one model and input shape."""

    def __init__(self, capacity: int = 16) -> None:  # ~13 MB each at batch 1, gen 64
        self.capacity = capacity
        self._items: OrderedDict[tuple, correctness.Reference] = OrderedDict()

    def get(self, cell: Cell, input_ids: torch.Tensor, seed: int) -> correctness.Reference:
        key = (cell.model.model_dump_json(), cell.device, cell.batch_size, cell.prompt_len, cell.gen_len, seed)
        if key not in self._items:
            model = build_model(cell.model, attn_implementation="eager", dtype=torch.float32, device=cell.device, seed=seed)
            from runner.backends.hf import HFSession

            self._items[key] = correctness.make_reference(HFSession(model), input_ids, cell.gen_len)
            del model
            free_memory(cell.device)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        self._items.move_to_end(key)
        return self._items[key]


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def generate(session, input_ids: torch.Tensor, gen_len: int) -> torch.Tensor:
    """Greedy generation of gen_len tokens: the first from prefill, the rest decode steps."""
    token = session.prefill(input_ids).argmax(-1, keepdim=True)
    for _ in range(gen_len - 1):
        token = session.decode(token).argmax(-1, keepdim=True)
    return token


def measure_cell(
    cell: Cell,
    settings: MeasureSettings,
    seed: int,
    references: ReferenceCache | None = None,
) -> CellResult:
    """Measure one cell in one go (all its rounds back to back). Unsupported combinations
    and exceptions become a stored status. Runs use `measure_in_rounds`, which interleaves
    the rounds of many cells; this is the one-cell form of the same steps."""
    records = list(measure_in_rounds([cell], settings, seed, references, rounds=settings.planned_rounds))
    return records[-1][1]


@dataclass
class PreparedCell:
    """A cell's model and session, kept alive between its rounds (setup is paid once)."""

    cell: Cell
    session: object
    input_ids: torch.Tensor
    reference: object | None
    result: CellResult  # the cell-level fields: params, setup, cold, then correctness and flags
    reference_s: float = 0.0
    rounds_done: int = 0
    generation_s: float = 0.0  # the latest untimed full generation: sizes the warm-up's time budget


def warmup_cap_s(generation_s: float, cell: Cell, reps: dict[str, int], settings: MeasureSettings) -> float:
    """How long one round's warm-up may wait for stability: `warmup_budget` times the round's
    expected timed work (its reps, each forward costing about generation_s / gen_len), and
    never less than `warmup_min_s`. A round that reaches it is recorded as not converged."""
    per_forward = generation_s / max(cell.gen_len, 1)
    forwards = reps["prefill"] + reps["decode"] * (1 + cell.gen_len) + reps["e2e"] * cell.gen_len
    return max(settings.warmup_min_s, settings.warmup_budget * per_forward * forwards)


def unsupported(cell: Cell) -> CellResult | None:
    backend = get_backend(cell.backend)
    reason = backend.availability() or backend.unsupported_reason(cell)
    if reason:
        return CellResult(status="unsupported", error=reason)
    if cell.device == "cuda" and not torch.cuda.is_available():
        return CellResult(status="unsupported", error="no CUDA device on this machine")
    return None


def failure(error: BaseException) -> CellResult:
    if isinstance(error, Unsupported):  # found only once the model was built or compiled
        return CellResult(status="unsupported", error=str(error))
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return CellResult(status="failed", error=f"out of memory: {str(error).splitlines()[0]}")
    return CellResult(status="failed", error=f"{type(error).__name__}: {error}"[:2000])


def prepare_cell(cell: Cell, settings: MeasureSettings, seed: int) -> PreparedCell:
    """Setup, the cold sample and one full generation of the cell's own length (protocol v2:
    attention meets every sequence length it will be timed at before anything is timed).
    The hf-eager reference of the correctness gate is built later, in `finish_cell`."""
    backend = get_backend(cell.backend)
    device = cell.device
    result = CellResult(status="ok")
    input_ids = make_inputs(cell, seed)
    synchronize(device)
    t0 = time.perf_counter()
    model = build_model(
        cell.model, attn_implementation=getattr(backend, "attn_implementation", "eager"),
        dtype=TORCH_DTYPES[cell.dtype], device=device, seed=seed,
    )
    result.params = count_params(model)
    session = backend.prepare(model, cell)
    synchronize(device)
    result.setup_s = time.perf_counter() - t0

    timer = make_timer(device)
    result.timer = timer.kind
    timer.start()
    session.prefill(input_ids).argmax(-1)
    timer.stop()
    result.cold_ms = validate_samples(timer.results_ms(), "cold")[0]
    t_generation = time.perf_counter()
    generate(session, input_ids, cell.gen_len)
    synchronize(device)
    prepared = PreparedCell(cell, session, input_ids, None, result)
    prepared.generation_s = time.perf_counter() - t_generation
    return prepared


def measure_round(prepared: PreparedCell, settings: MeasureSettings, round_index: int,
                  track_resources: bool = True, policy: RoundPolicy | None = None) -> dict:
    """One round of a prepared cell: warm-up to stability (after a full generation, since
    other cells ran in between), then the round's reps of each phase (`policy.reps`: the
    plan's split over its rounds, or an adaptive plan's short rounds). Returns the round's
    record: samples, warm-up, telemetry, the host's speed around it, its wall time
    (`round_s`, what an adaptive budget plans with) and, with `track_resources`, the memory
    and energy windows (else "resources" is None)."""
    from runner.host import host_launch_us

    cell, session, input_ids = prepared.cell, prepared.session, prepared.input_ids
    device = cell.device
    policy = policy or RoundPolicy.of(settings)
    started = time.perf_counter()
    before = telemetry.read_gpu() if device == "cuda" else None
    launch_before = host_launch_us(device, ops=200)
    if prepared.rounds_done:
        t_generation = time.perf_counter()
        generate(session, input_ids, cell.gen_len)
        synchronize(device)
        prepared.generation_s = time.perf_counter() - t_generation
    reps = policy.reps(settings, round_index)

    def warm_step():
        token = session.prefill(input_ids).argmax(-1, keepdim=True)
        for _ in range(min(cell.gen_len, 8)):
            token = session.decode(token).argmax(-1, keepdim=True)

    warmup_iters, warmup_s, converged = warm_up(
        warm_step, device,
        min_iters=settings.warmup_min_iters, min_s=settings.warmup_min_s,
        max_iters=settings.warmup_max_iters, window=settings.warmup_window,
        tolerance=settings.warmup_tolerance, max_s=warmup_cap_s(prepared.generation_s, cell, reps, settings),
    )
    part = CellResult(status="ok")
    # No garbage-collector pauses inside timed regions: a collection triggered by the
    # Python objects of one step would land on a random sample as a multi-ms outlier.
    gc.collect(1)
    gc.disable()
    try:
        _timed_phases(session, cell, reps, input_ids, part, device)
    finally:
        gc.enable()
    after = telemetry.read_gpu() if device == "cuda" else None
    launch_after = host_launch_us(device, ops=200)
    # after the timed phases and their telemetry: the tracked windows never touch a sample
    resources = round_resources(prepared, settings) if track_resources else None
    prepared.rounds_done += 1
    return {
        "round": round_index, "worker": os.getpid(),
        "prefill": part.prefill, "decode": part.decode, "e2e": part.e2e,
        "warmup_iters": warmup_iters, "warmup_s": warmup_s, "warmup_converged": converged,
        "measured_s": part.measured_s,
        "telemetry": {"before": before, "after": after} if before is not None else None,
        "host_launch_us": [launch_before, launch_after],
        "resources": resources,
        "round_s": time.perf_counter() - started,
    }


def round_resources(prepared: PreparedCell, settings: MeasureSettings) -> dict:
    """The memory and energy windows of a prepared cell (runner.trackers), run after timing:
    after every round, or once a cell's last round is known (an adaptive cell's only then)."""
    cell = prepared.cell
    ops = trackers.phase_ops(prepared.session, prepared.input_ids, cell.gen_len, generate)
    return trackers.track_round(ops, cell.device, get_backend(cell.backend).device_allocator, settings.energy_window_s)


def finish_cell(prepared: PreparedCell, settings: MeasureSettings, round_records: list[dict],
                references: ReferenceCache | None = None, seed: int = 0, stop: str | None = None) -> CellResult:
    """The cell's record from its rounds: samples in round order with their round ids, the
    rounds used and the decode median's relative half-width across them, with `stop` (an
    adaptive plan's vocabulary.STOP_REASONS) whether it reached the precision asked, the
    correctness gate (after every timed round of this cell), flags. Closes the session
    unless a profile is still to be taken (`profile_prepared`, after every timed round)."""
    result = prepared.result
    merge_rounds(result, round_records)
    result.rounds_used = len(round_records)
    result.decode_half_width = decode_half_width(round_records)
    if stop:
        result.stop_reason = stop
        result.precision_reached = stop == STOP_PRECISION
    result.resources = trackers.cell_resources(prepared.cell, result.params, [r.get("resources") for r in round_records])
    if prepared.reference is None and settings.check_correctness and references is not None:
        # built here, once, by the process that finishes the cell: with a fresh process per
        # round the earlier rounds' workers never pay for the hf-eager reference
        t_reference = time.perf_counter()
        prepared.reference = references.get(prepared.cell, prepared.input_ids, seed)
        prepared.reference_s = time.perf_counter() - t_reference
    if prepared.reference is not None:
        t_check = time.perf_counter()
        result.correctness = correctness.compare(prepared.session, prepared.reference, prepared.cell.dtype, prepared.cell.device)
        result.check_s = prepared.reference_s + time.perf_counter() - t_check
    result.flags = integrity_flags(result, settings)
    if not settings.profile:
        close_prepared(prepared)
    return result


def merge_rounds(result: CellResult, round_records: list[dict]) -> None:
    records = sorted(round_records, key=lambda r: r["round"])
    result.prefill, result.decode, result.e2e = [], [], []
    result.prefill_round, result.decode_round, result.e2e_round = [], [], []
    result.worker = []
    for r in records:
        result.prefill += r["prefill"]
        result.prefill_round += [r["round"]] * len(r["prefill"])
        result.decode += r["decode"]
        result.decode_round += [r["round"]] * len(r["decode"])
        result.e2e += r["e2e"]
        result.e2e_round += [r["round"]] * len(r["e2e"])
        result.worker.append(r.get("worker"))
    result.warmup_iters = sum(r["warmup_iters"] for r in records)
    result.warmup_s = sum(r["warmup_s"] for r in records)
    result.warmup_converged = all(r["warmup_converged"] for r in records)
    result.measured_s = sum(r["measured_s"] or 0.0 for r in records)
    tele = [r["telemetry"] for r in records if r.get("telemetry")]
    result.telemetry = {"before": tele[0]["before"], "after": tele[-1]["after"]} if tele else None
    result.host_launch_us = [v for r in records for v in (r.get("host_launch_us") or [])]
    # the sample taken right after each round covers that round (runner.machine_load)
    loads = [r["machine_load"] for r in records if r.get("machine_load")]
    result.machine_busy = any(load.get("busy") for load in loads) if loads else None


def profile_prepared(prepared: PreparedCell, result: CellResult) -> None:
    """The profile phase, run only once every timed round of the run is done, then close."""
    from runner.profiling import profile_cell

    try:
        result.profile = profile_cell(prepared.session, prepared.input_ids, prepared.cell.device)
    except Exception as error:  # noqa: BLE001 - a profiler failure must not discard the timings
        result.profile = {"error": f"{type(error).__name__}: {error}"[:500]}
    close_prepared(prepared)


def close_prepared(prepared: PreparedCell) -> None:
    prepared.session.close()
    prepared.session = None


def measure_in_rounds(
    cells: list[Cell],
    settings: MeasureSettings,
    seed: int,
    references: ReferenceCache | None = None,
    *,
    rounds: int,
    order_seed: int = 0,
    done: dict[int, dict[int, dict]] | None = None,
    on_round: "Callable[[int, int, dict], None] | None" = None,
    on_start: "Callable[[int, int], None] | None" = None,
    only_rounds: "set[int] | None" = None,
    deadline: float | None = None,
    on_budget: "Callable[[], None] | None" = None,
):
    """Measure cells in interleaved rounds; yields (cell index, CellResult) as cells finish.

    Round 0 runs the cells in the given order (the run's shuffled order); each later round
    reshuffles it (seeded by `order_seed` + round), so drift never lines up with a cell's
    rounds. A plan of fixed rounds gives every cell `rounds` of them; with `[measure]
    precision` (runner.rounds) every cell takes min_rounds, then short rounds go only to the
    cells whose decode median is not yet known to the precision asked, until it is or
    max_rounds. Every cell stays prepared between its rounds. `done` maps cell index ->
    {round: record} of rounds measured earlier (a resumed run): they are not measured again.
    `on_round(i, r, record)` is called as each round ends, so the caller can keep it on disk
    (a kill then loses at most the round in flight). Engines that time whole cells in a child
    process (`backend.measure`) run once, in round 0. Profiles run after every timed round.
    `only_rounds` restricts this process to those rounds (a fresh worker per round, with
    `done` read from the round files of the others): a cell finishes in the process that
    measures its last round.

    `deadline` (time.time() seconds; an adaptive plan's budget_s): no round starts past it,
    once this call has measured one (so a budget shorter than the setup still lets every resume
    progress). The cells that have min_rounds are then finished as they stand (STOP_BUDGET: a
    resume measures them further), the others keep their rounds for a resume, and
    `on_budget()` is called once.
    """
    import random

    policy = RoundPolicy.of(settings, rounds)
    done = {i: dict(v) for i, v in (done or {}).items()}
    prepared: dict[int, PreparedCell] = {}
    finished: set[int] = set()
    to_profile: list[tuple[int, PreparedCell, CellResult]] = []
    spent = False  # the budget stopped a round from starting

    def kept(i: int) -> list[dict]:
        return list(done.get(i, {}).values())

    def needs_round(i: int) -> bool:  # an adaptive cell past min_rounds that has reached its stop takes none
        return i not in finished and policy.stop(kept(i)) is None

    measured_here = [False]  # every call measures a cell-round before the deadline counts: a resume always progresses

    def out_of_time() -> bool:
        return deadline is not None and measured_here[0] and time.time() >= deadline

    order = list(range(len(cells)))
    for round_index in range(policy.max_rounds):
        if round_index:
            order = list(range(len(cells)))
            random.Random(order_seed * 1000 + round_index).shuffle(order)
        if only_rounds is not None and round_index not in only_rounds:
            continue
        if out_of_time() and any(needs_round(i) for i in order):
            spent = True
            break
        if policy.adaptive and round_index >= policy.min_rounds:
            waiting = [i for i in order if needs_round(i) and round_index not in done.get(i, {})]
            order = policy.choose(waiting, done, None if deadline is None else deadline - time.time())
        for i in order:
            if i in finished or round_index in done.get(i, {}) or not needs_round(i):
                continue
            if out_of_time():
                spent = True
                break
            cell = cells[i]
            if on_start:
                on_start(i, round_index)
            refused = unsupported(cell)
            backend = get_backend(cell.backend)
            if refused is None and hasattr(backend, "measure"):
                finished.add(i)
                try:
                    result = backend.measure(cell, settings, seed, references)
                except Exception as error:  # noqa: BLE001 - one cell's failure must not end the run
                    result = failure(error)
                result.prefill_round = [0] * len(result.prefill)
                result.decode_round = [0] * len(result.decode)
                result.e2e_round = [0] * len(result.e2e)
                yield i, result
                continue
            if refused is not None:
                finished.add(i)
                yield i, refused
                continue
            try:
                with torch.inference_mode():
                    if i not in prepared:
                        prepared[i] = prepare_cell(cell, settings, seed)
                    every_round = settings.resource_windows == "every-round"
                    record = measure_round(prepared[i], settings, round_index, track_resources=every_round,
                                           policy=policy)
                    measured_here[0] = True
                    done.setdefault(i, {})[round_index] = record
                    stop = policy.stop(kept(i))
                    if policy.adaptive:
                        record["decode_half_width"] = decode_half_width(kept(i))
                    if stop is not None and not every_round:
                        # windows in the round that completes the cell (settings.resource_windows)
                        record["resources"] = round_resources(prepared[i], settings)
                    if on_round:
                        on_round(i, round_index, record)
                    if stop is not None:
                        finished.add(i)
                        result = finish_cell(prepared[i], settings, kept(i), references, seed, stop=stop)
                        if settings.profile:
                            to_profile.append((i, prepared.pop(i), result))
                            continue
                        del prepared[i]
                        yield i, result
            except Exception as error:  # noqa: BLE001 - one cell's failure must not end the run
                finished.add(i)
                stale = prepared.pop(i, None)
                if stale is not None and stale.session is not None:
                    close_prepared(stale)
                free_memory(cell.device)
                yield i, failure(error)
        if spent:
            break
    if not spent and deadline is not None and any(needs_round(i) for i in range(len(cells))):
        # cells still open past the deadline (a round worker whose round ended late: no worker
        # comes after it), or left out of a round by the budget when no round index is left
        spent = out_of_time() or only_rounds is None or policy.max_rounds - 1 in only_rounds
    # cells whose every round was kept by an earlier segment, but not their cell file (killed
    # or out of space right before it): prepare again for the gate, then finish them; with the
    # budget spent, the cells that have min_rounds too, as they stand
    for i, cell in enumerate(cells):
        stop = policy.stop(kept(i)) if i not in finished else None
        if stop is None and spent and i not in finished and len(done.get(i, {})) >= policy.min_rounds:
            stop = STOP_BUDGET
        if stop is None:
            continue
        finished.add(i)
        try:
            with torch.inference_mode():
                item = prepared.pop(i, None) or prepare_cell(cell, settings, seed)
                records = kept(i)
                if stop == STOP_BUDGET and settings.resource_windows != "every-round":
                    last = max(done[i])
                    records = [r for r in records if r["round"] != last] + [
                        done[i][last] | {"resources": round_resources(item, settings)}]
                result = finish_cell(item, settings, records, references, seed, stop=stop or None)
        except Exception as error:  # noqa: BLE001 - one cell's failure must not end the run
            yield i, failure(error)
            continue
        if settings.profile:
            to_profile.append((i, item, result))
        else:
            yield i, result
    for i, item, result in to_profile:
        with torch.inference_mode():
            profile_prepared(item, result)
        yield i, result
    for item in prepared.values():
        if item.session is not None:
            close_prepared(item)
    if prepared or finished:
        free_memory("cuda" if any(c.device == "cuda" for c in cells) and torch.cuda.is_available() else "cpu")
    if spent and on_budget:
        on_budget()


def _timed_phases(session, cell: Cell, reps: dict[str, int], input_ids, result: CellResult, device: str) -> None:
    """Prefill, decode and e2e samples, in that order, each region timed on its own."""
    measured_start = time.perf_counter()
    timer = make_timer(device)
    for _ in range(reps["prefill"]):
        timer.start()
        session.prefill(input_ids).argmax(-1)
        timer.stop()
    result.prefill = validate_samples(timer.results_ms(), "prefill")

    for _ in range(reps["decode"]):
        token = session.prefill(input_ids).argmax(-1, keepdim=True)
        timer = make_timer(device)
        for _ in range(cell.gen_len):
            timer.start()
            token = session.decode(token).argmax(-1, keepdim=True)
            timer.stop()
        result.decode.append(validate_samples(timer.results_ms(), "decode"))

    timer = make_timer(device)
    for _ in range(reps["e2e"]):
        timer.start()
        generate(session, input_ids, cell.gen_len)
        timer.stop()
    result.e2e = validate_samples(timer.results_ms(), "e2e")
    synchronize(device)
    result.measured_s = time.perf_counter() - measured_start
