"""Measuring one cell: setup, cold sample, warm-up to stability, the three phases, the
correctness gate, telemetry and integrity flags. The order is fixed so that nothing that
happens after the timed phases (checking, profiling) can disturb them.
"""
from __future__ import annotations

import gc
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from runner import correctness, telemetry
from runner.backends import get_backend
from runner.models import build_model, count_params
from runner.plan import Cell, MeasureSettings
from runner.timing import make_timer, synchronize, validate_samples, warm_up

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Early samples this far above the median mean setup work leaked into the phase.
SETUP_LEAK_FACTOR = 2.0
# An SM clock this far below its reading before the cell means the GPU throttled.
CLOCK_DROP_FRACTION = 0.9


@dataclass
class CellResult:
    """Everything stored for one cell: the columns of `cells` and the raw samples."""

    status: str  # ok | failed | unsupported
    error: str | None = None
    params: int | None = None
    setup_s: float | None = None
    cold_ms: float | None = None
    warmup_iters: int | None = None
    warmup_s: float | None = None
    warmup_converged: bool | None = None
    measured_s: float | None = None
    check_s: float | None = None
    flags: list[str] = field(default_factory=list)
    correctness: dict | None = None
    telemetry: dict | None = None
    profile: dict | None = None
    timer: str | None = None
    prefill: list[float] = field(default_factory=list)
    decode: list[list[float]] = field(default_factory=list)  # per rep, one value per step
    e2e: list[float] = field(default_factory=list)


def make_inputs(cell: Cell, seed: int) -> torch.Tensor:
    """Random prompt token ids from a seeded generator (never zeros), on the cell's device."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cell.model.vocab_size, (cell.batch_size, cell.prompt_len), generator=generator)
    return ids.to(cell.device)


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
    """Measure one cell. Unsupported combinations and exceptions become a stored status."""
    backend = get_backend(cell.backend)
    reason = backend.availability() or backend.unsupported_reason(cell)
    if reason:
        return CellResult(status="unsupported", error=reason)
    if cell.device == "cuda" and not torch.cuda.is_available():
        return CellResult(status="unsupported", error="no CUDA device on this machine")

    try:
        if hasattr(backend, "measure"):  # an engine that is not step-based times whole cells itself
            return backend.measure(cell, settings, seed, references)
        with torch.inference_mode():
            return _measure(cell, settings, seed, references, backend)
    except torch.cuda.OutOfMemoryError as error:
        return CellResult(status="failed", error=f"out of memory: {str(error).splitlines()[0]}")
    except Exception as error:  # noqa: BLE001 - one cell's failure must not end the run
        return CellResult(status="failed", error=f"{type(error).__name__}: {error}"[:2000])
    finally:
        free_memory(cell.device)  # the failed cell's tensors are unreachable by now


def _measure(cell, settings, seed, references, backend) -> CellResult:
    device = cell.device
    result = CellResult(status="ok")
    input_ids = make_inputs(cell, seed)
    t_reference = time.perf_counter()
    reference = references.get(cell, input_ids, seed) if (settings.check_correctness and references) else None
    reference_s = time.perf_counter() - t_reference

    before = telemetry.read_gpu() if device == "cuda" else None
    synchronize(device)
    t0 = time.perf_counter()
    model = build_model(
        cell.model, attn_implementation=getattr(backend, "attn_implementation", "eager"),
        dtype=DTYPES[cell.dtype], device=device, seed=seed,
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

    def warm_step():
        token = session.prefill(input_ids).argmax(-1, keepdim=True)
        for _ in range(min(cell.gen_len, 8)):
            token = session.decode(token).argmax(-1, keepdim=True)

    result.warmup_iters, result.warmup_s, result.warmup_converged = warm_up(
        warm_step, device,
        min_iters=settings.warmup_min_iters, min_s=settings.warmup_min_s,
        max_iters=settings.warmup_max_iters, window=settings.warmup_window,
        tolerance=settings.warmup_tolerance,
    )

    # No garbage-collector pauses inside timed regions: a collection triggered by the
    # Python objects of one step would land on a random sample as a multi-ms outlier.
    gc.collect(1)  # young garbage of setup and warm-up; the previous cell ended with a full collect
    gc.disable()
    try:
        _timed_phases(session, cell, settings, input_ids, result, device)
    finally:
        gc.enable()

    after = telemetry.read_gpu() if device == "cuda" else None
    if before is not None:
        result.telemetry = {"before": before, "after": after}
    if reference is not None:
        t_check = time.perf_counter()
        result.correctness = correctness.compare(session, reference, cell.dtype, device)
        result.check_s = reference_s + time.perf_counter() - t_check
    if settings.profile:
        from runner.profiling import profile_cell

        try:
            result.profile = profile_cell(session, input_ids, device)
        except Exception as error:  # noqa: BLE001 - a profiler failure must not discard the timings
            result.profile = {"error": f"{type(error).__name__}: {error}"[:500]}
    session.close()
    result.flags = integrity_flags(result, settings)
    return result


def _timed_phases(session, cell: Cell, settings: MeasureSettings, input_ids, result: CellResult, device: str) -> None:
    """Prefill, decode and e2e samples, in that order, each region timed on its own."""
    measured_start = time.perf_counter()
    timer = make_timer(device)
    for _ in range(settings.prefill_reps):
        timer.start()
        session.prefill(input_ids).argmax(-1)
        timer.stop()
    result.prefill = validate_samples(timer.results_ms(), "prefill")

    for _ in range(settings.decode_reps):
        token = session.prefill(input_ids).argmax(-1, keepdim=True)
        timer = make_timer(device)
        for _ in range(cell.gen_len):
            timer.start()
            token = session.decode(token).argmax(-1, keepdim=True)
            timer.stop()
        result.decode.append(validate_samples(timer.results_ms(), "decode"))

    timer = make_timer(device)
    for _ in range(settings.e2e_reps):
        timer.start()
        generate(session, input_ids, cell.gen_len)
        timer.stop()
    result.e2e = validate_samples(timer.results_ms(), "e2e")
    synchronize(device)
    result.measured_s = time.perf_counter() - measured_start



def robust_cv(values: list[float]) -> float:
    """1.4826 x MAD / median: the spread that matters for a median, blind to rare outliers.

    Launch-bound GPU decode has heavy host-side outliers; they inflate the plain CV of
    almost every eager cell without moving the median the analysis uses. The plain CV is
    still computed by the analysis from the raw samples.
    """
    tensor = torch.tensor(values, dtype=torch.float64)
    med = tensor.median()
    return float(1.4826 * (tensor - med).abs().median() / med) if len(values) > 1 else 0.0


def integrity_flags(result: CellResult, settings: MeasureSettings) -> list[str]:
    """Flags shown next to the numbers; an empty list means nothing looked wrong."""
    flags = []
    decode_flat = [v for rep in result.decode for v in rep]
    phases = {"prefill": result.prefill, "decode": decode_flat, "e2e": result.e2e}
    if any(robust_cv(v) > settings.cv_threshold for v in phases.values() if len(v) > 1):
        flags.append("high_cv")
    if result.warmup_converged is False:
        flags.append("warmup_not_converged")
    for samples in (result.prefill, decode_flat):
        if len(samples) >= 6:
            med = float(torch.tensor(samples).median())
            if sum(samples[:3]) / 3 > SETUP_LEAK_FACTOR * med:
                flags.append("setup_leak")
                break
    if any(len(v) < settings.min_samples for v in (result.prefill, decode_flat)):
        flags.append("too_few_samples")
    tele = result.telemetry or {}
    before, after = tele.get("before") or {}, tele.get("after") or {}
    if before.get("sm_clock_mhz") and after.get("sm_clock_mhz"):
        if after["sm_clock_mhz"] < CLOCK_DROP_FRACTION * before["sm_clock_mhz"]:
            flags.append("clock_drop")
    if before.get("foreign_pids") or after.get("foreign_pids"):
        flags.append("foreign_gpu_process")
    if result.correctness is not None and not result.correctness["ok"]:
        flags.append("output_mismatch")
    return flags
