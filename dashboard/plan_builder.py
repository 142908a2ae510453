"""The Run page's plan builder: form values -> a validated plan, errors mapped to fields.

Validation is the runner's own (`runner.plan.parse_plan` and `expand`), so the page can
never start a plan the CLI would refuse; this module only turns text inputs into the
plan's dict and says which input a message belongs to.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.plan import Cell, Plan, PlanError, estimate_seconds, expand, parse_plan, plan_to_toml

# Which form input a validation message belongs to, by the message's leading location.
FIELD_OF = {
    "models.reference": "reference", "models.grid.depths": "depths", "models.grid.widths": "widths",
    "models.grid": "depths", "models.checkpoints": "checkpoint", "models": "models",
    "backends": "backends", "dtypes": "dtypes", "batch_sizes": "batch_sizes", "prompt_lens": "prompt_lens",
    "gen_lens": "gen_lens", "prompt_lens/gen_lens": "prompt_lens", "measure": "reps", "name": "name",
}


def parse_ints(text: str, label: str) -> list[int]:
    """'1, 2, 4' -> [1, 2, 4]; a ValueError naming the input otherwise."""
    items = [t for t in text.replace(";", ",").replace(" ", ",").split(",") if t]
    try:
        values = [int(t) for t in items]
    except ValueError:
        raise ValueError(f"{label}: write whole numbers separated by commas, e.g. 1, 2, 4 (got {text!r})") from None
    if any(v <= 0 for v in values):
        raise ValueError(f"{label}: every value must be a positive integer")
    return values


def guess_device() -> str:
    """What `auto` will resolve to, without importing torch (the hosted app has none)."""
    return "cuda" if Path("/dev/nvidiactl").exists() else "cpu"


@dataclass
class BuiltPlan:
    plan: Plan | None = None
    cells: list[Cell] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # form input -> message
    toml: str = ""
    estimate_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.plan is not None and not self.errors and bool(self.cells)


@dataclass(frozen=True)
class HistoryEstimate:
    """A plan's wall time scaled by how earlier runs on this host compared with the rough model.

    The model (`runner.plan.estimate_seconds`) counts rounds, warm-up, energy windows and worker
    processes, but not this host's speed or load: the bundled protocol-2 CPU runs took 0.47x to
    1.0x of it, the GPU runs 0.4x to 74x. So the page scales it by the median ratio of earlier
    finished runs on this host (host
    class of the run's fingerprint, same device kind and protocol), those of the same plan
    name if there are any, and shows the range those runs span instead of one confident number.
    """

    seconds: float
    low_s: float
    high_s: float
    runs: int
    same_plan: bool


def history_estimate(built: BuiltPlan, runs: Any, host_class: str, protocol: int) -> HistoryEstimate | None:
    """`built`'s estimate from `runs` (analysis.load.finished_runs) measured on `host_class`, or None."""
    if not built.ok or built.estimate_s <= 0 or runs is None or not len(runs):
        return None
    device = built.cells[0].device
    ratios: dict[str, list[float]] = {}
    for row in runs.itertuples():
        try:
            env = json.loads(row.environment or "null") or {}
            if ((env.get("host_fingerprint") or {}).get("host_class") != host_class or row.device_kind != device
                    or int(row.protocol_version) != protocol or not row.wall_s > 0):
                continue
            plan = parse_plan(json.loads(row.plan))
            rough = estimate_seconds(expand(plan, device=device, resolve_remote=False), plan.measure) * plan.repeats
        except (PlanError, ValueError, TypeError, KeyError):
            continue  # a plan this version cannot read back: no evidence either way
        if rough > 0:
            ratios.setdefault(str(row.plan_name), []).append(float(row.wall_s) / rough)
    same = ratios.get(built.plan.name, [])
    chosen = same or [r for values in ratios.values() for r in values]
    if not chosen:
        return None
    return HistoryEstimate(built.estimate_s * statistics.median(chosen), built.estimate_s * min(chosen),
                           built.estimate_s * max(chosen), len(chosen), bool(same))


def _field_for(message: str) -> str:
    head = message.split(":", 1)[0].strip()
    if head.startswith("checkpoint"):  # raised by runner.models.spec_from_checkpoint
        return "checkpoint"
    for loc in sorted(FIELD_OF, key=len, reverse=True):
        if head == loc or head.startswith(loc + "."):
            return FIELD_OF[loc]
    return "plan"


def build(form: dict[str, Any]) -> BuiltPlan:
    """Form values (name, device, reference, depths, widths, n_head, checkpoint, backends,
    dtypes, batch_sizes, prompt_lens, gen_lens as text or lists, prefill_reps, decode_reps,
    e2e_reps, repeats, seed) -> plan, cells, TOML and time estimate, or errors per input."""
    out = BuiltPlan()
    models: dict[str, Any] = {"reference": list(form.get("reference") or [])}
    lists: dict[str, list[int]] = {}
    for key, label in (("depths", "depths"), ("widths", "widths"), ("batch_sizes", "batch sizes"),
                       ("prompt_lens", "prompt lengths"), ("gen_lens", "generation lengths")):
        raw = form.get(key, "")
        try:
            lists[key] = raw if isinstance(raw, list) else parse_ints(str(raw), label)
        except ValueError as error:
            out.errors[key] = str(error)
    depths, widths = lists.get("depths", []), lists.get("widths", [])
    if bool(depths) != bool(widths) and "depths" not in out.errors and "widths" not in out.errors:
        out.errors["depths" if not depths else "widths"] = "a grid needs both depths and widths (or neither)"
    if depths and widths:
        models["grid"] = {"depths": depths, "widths": widths, "n_head": int(form.get("n_head") or 2)}
    checkpoint = str(form.get("checkpoint") or "").strip()
    if checkpoint:
        models["checkpoints"] = [checkpoint]
    if not models["reference"] and "grid" not in models and not checkpoint:
        out.errors.setdefault("models", "choose at least one model: a reference model, a depth x width grid or a checkpoint")
    for key in ("backends", "dtypes"):
        if not form.get(key):
            out.errors[key] = f"choose at least one of the {key}"
    for key in ("batch_sizes", "prompt_lens", "gen_lens"):
        if key in lists and not lists[key] and key not in out.errors:
            out.errors[key] = "give at least one value"
    if out.errors:
        return out
    data = {
        "name": form.get("name") or "dashboard", "device": form.get("device") or "auto",
        "seed": int(form.get("seed") or 1234), "repeats": int(form.get("repeats") or 1),
        "models": models, "backends": list(form["backends"]), "dtypes": list(form["dtypes"]),
        "batch_sizes": lists["batch_sizes"], "prompt_lens": lists["prompt_lens"], "gen_lens": lists["gen_lens"],
        "measure": {k: int(form[k]) for k in ("prefill_reps", "decode_reps", "e2e_reps") if form.get(k)},
    }
    if form.get("warmup_min_s") is not None:
        data["measure"]["warmup_min_s"] = float(form["warmup_min_s"])
    error = _expand_into(out, data)
    for part in error.split("; ") if error else []:
        out.errors.setdefault(_field_for(part), part)
    return out


def _expand_into(out: BuiltPlan, data: dict[str, Any]) -> str | None:
    """Validate and expand `data` the way the runner does, filling `out` (plan, cells, TOML,
    estimate); the runner's error message instead, for the caller to file under its fields."""
    try:
        plan = parse_plan(data)
        device = plan.device if plan.device != "auto" else guess_device()
        cells = expand(plan, device=device, resolve_remote=False)
    except (PlanError, ValueError) as error:
        return str(error)
    out.plan, out.cells = plan, cells
    out.toml = plan_to_toml(plan)
    out.estimate_s = estimate_seconds(cells, plan.measure) * plan.repeats
    return None


def from_toml(text: str) -> BuiltPlan:
    """A plan written or uploaded as TOML -> the same BuiltPlan as the form, errors per plan field.

    A TOML syntax error is reported under "toml" with its line and column; the plan's own
    validation (`runner.plan.parse_plan`, `expand`) under the field it names, e.g.
    "backends" or "models.grid.depths", so the page can list each next to the editor.
    """
    import tomllib

    out = BuiltPlan()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        out.errors["toml"] = f"not valid TOML: {error}"
        return out
    error = _expand_into(out, data)
    if error:
        field_name = "plan"
        for part in error.split("; "):
            head = part.split(":", 1)[0].strip()
            if head.split(".")[0] in Plan.model_fields or head == "plan":
                field_name = head  # a new message; a part like "allowed: ..." continues the last one
                out.errors[field_name] = part
            else:
                out.errors[field_name] = f"{out.errors[field_name]}; {part}" if field_name in out.errors else part
    elif not out.cells:
        out.errors["plan"] = "the plan expands to no cells"
    return out
