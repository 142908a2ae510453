"""Plans: a TOML file, validated with pydantic, expanded into cells.

A plan describes a factorial (models x backends x dtypes x batch x prompt x gen) plus
optional extra sweeps (`[[also]]`) that override some axes, e.g. "prompt 512 for eager and
cuda-graph only". Expansion deduplicates cells by their configuration key.
"""
from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner.models import (
    CATALOGUE, MAX_CONTEXT, MAX_PARAMS, MAX_VOCAB, REGISTRY, Family, ModelSpec, get_registered, grid, resolve_hub_id,
    spec_from_checkpoint, width_for_budget,
)
from runner.trackers import ENERGY_WINDOW_S
from vocabulary import CONTROL_CHARACTERS, DTYPES

BACKEND_NAMES = ("hf-eager", "hf-sdpa", "torch-compile", "cuda-graph", "fused", "vllm", "onnxruntime")
DeviceName = Literal["cpu", "cuda", "auto"]
# Bounds that keep a typo from becoming a run of days or a number the store cannot hold.
MAX_REPS = 10_000  # timed repetitions of one phase: a median is stable after tens
MAX_ITERS = 100_000  # warm-up iterations
MAX_WARMUP_S = 600.0  # ten minutes of warm-up per cell settles any clock
MAX_SEED = 2**32 - 1  # seed + repeat index stays far inside the store's BIGINT
AXIS_CAPS = {"batch_sizes": 1024, "prompt_lens": 131072, "gen_lens": 8192}
MAX_CELLS = 20_000  # cells x repeats of one plan: about a week at the default settings
MAX_PLAN_BYTES = 1 << 20  # a plan file; the longest real plans are a few KB
MAX_ROUNDS = 100  # rounds of one cell: past this, rounds are not the unit that needs more replicates
DEFAULT_ROUNDS = 3  # the fewest rounds whose t interval is not wider than the data (docs/statistics.md)
MAX_BUDGET_S = 7 * 24 * 3600.0  # a week: a budget past it is a typo, not a plan


class GridSpec(BaseModel):
    """A depth x width (x KV heads) factorial of one family, or at a fixed parameter budget
    the width of each depth computed to meet it (deep-and-thin versus shallow-and-wide)."""

    model_config = ConfigDict(extra="forbid")
    depths: list[int] = Field(min_length=1, description="n_layer values, e.g. [1, 2, 4, 8]")
    widths: list[int] | None = Field(default=None, min_length=1, description="n_embd values, e.g. [64, 128, 256]; left out with param_budget")
    n_head: int = Field(default=2, gt=0, description="heads for every shape (2, as the reference family)")
    head_dim: int | None = Field(default=None, gt=0, le=1024, description="instead of n_head: heads = width / head_dim (64 in every catalogue model)")
    family: Family = Field(default="gpt2", description="gpt2, llama or qwen2")
    kv_heads: list[int] | None = Field(default=None, min_length=1, description="n_kv_head values (llama, qwen2): a third axis")
    n_inner: int | None = Field(default=None, gt=0, description="MLP size for every shape; default the family's rule")
    vocab_size: int | None = Field(default=None, gt=0, le=MAX_VOCAB, description="default the family's")
    n_positions: int | None = Field(default=None, gt=0, le=MAX_CONTEXT, description="context; default the family's")
    tie_embeddings: bool = True
    param_budget: int | None = Field(default=None, gt=0, le=MAX_PARAMS, description="parameters each shape should have: widths computed from the depths")
    width_multiple: int = Field(default=64, gt=0, le=4096, description="computed widths are multiples of this (and of the heads)")

    @field_validator("depths", "widths", "kv_heads")
    @classmethod
    def _positive(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and any(v <= 0 for v in values):
            raise ValueError("every value must be a positive integer")
        return sorted(set(values)) if values is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> "GridSpec":
        if (self.widths is None) == (self.param_budget is None):
            raise ValueError("give widths or param_budget (the widths are then computed), not both")
        if self.kv_heads and self.family == "gpt2":
            raise ValueError("kv_heads: gpt2 has full multi-head attention; use family 'llama' or 'qwen2'")
        if self.param_budget is not None and self.n_inner is not None:
            raise ValueError("n_inner: a fixed MLP size cannot follow the widths a param_budget computes")
        if self.head_dim is None:
            bad = [w for w in self.widths or [] if w % self.n_head]
            if bad:
                raise ValueError(f"widths {bad} are not divisible by n_head ({self.n_head})")
            bad_kv = [k for k in self.kv_heads or [] if self.n_head % k]
            if bad_kv:
                raise ValueError(f"kv_heads {bad_kv} do not divide n_head ({self.n_head})")
        else:
            bad = [w for w in self.widths or [] if w % self.head_dim]
            if bad:
                raise ValueError(f"widths {bad} are not multiples of head_dim ({self.head_dim})")
            bad_kv = [(w, k) for w in self.widths or [] for k in self.kv_heads or [] if (w // self.head_dim) % k]
            if bad_kv:
                w, k = bad_kv[0]
                raise ValueError(f"kv_heads: {k} does not divide the {w // self.head_dim} heads of width {w}")
        return self

    def heads_of(self, width: int) -> int:
        return width // self.head_dim if self.head_dim else self.n_head

    def specs(self) -> list[ModelSpec]:
        """The grid's shapes; with a param_budget, each (depth, KV heads) gets its width."""
        shared = dict(family=self.family, n_inner=self.n_inner, vocab_size=self.vocab_size,
                      n_positions=self.n_positions, tie_embeddings=self.tie_embeddings)
        if self.widths is not None:
            out = []
            for width in self.widths:
                out += grid(self.depths, [width], self.heads_of(width), kv_heads=self.kv_heads, **shared)
            return sorted(out, key=lambda s: (s.n_layer, s.n_embd, s.kv_heads))
        kv_values = self.kv_heads or [None]
        out = []
        for depth in self.depths:
            for kv in kv_values:
                unit = self.head_dim * (kv or 1) if self.head_dim else self.n_head
                multiple = math.lcm(self.width_multiple, unit)
                width = width_for_budget(
                    self.param_budget, depth, family=self.family, multiple=multiple, heads_of=self.heads_of,
                    n_kv_head=kv, vocab_size=self.vocab_size, n_positions=self.n_positions,
                    tie_embeddings=self.tie_embeddings)
                out += grid([depth], [width], self.heads_of(width), kv_heads=[kv] if kv else None, **shared)
        return out


class ModelsSection(BaseModel):
    """Which shapes to measure; every source is optional, at least one is needed."""

    model_config = ConfigDict(extra="forbid")
    reference: list[str] | Literal["all"] = Field(default_factory=list, description="names from the GPT-2 registry or the catalogue, or 'all' (the GPT-2 registry)")
    catalogue: list[str] | Literal["all"] = Field(default_factory=list, description="names from the catalogue of Llama-style decoders, or 'all'")
    grid: GridSpec | None = None
    custom: list[ModelSpec] = Field(default_factory=list, description="explicit shapes")
    checkpoints: list[str] = Field(default_factory=list, description="local gpt2, llama or qwen2 checkpoint directories (safetensors)")
    hub: list[str] = Field(default_factory=list, description="Hugging Face ids, e.g. 'Crusadersk/gpt2-25m'")

    @field_validator("reference", "catalogue")
    @classmethod
    def _known(cls, names):
        if names == "all":
            return names
        for name in names:
            get_registered(name)
        return names

    def specs(self, resolve_remote: bool = True) -> list[ModelSpec]:
        """All shapes in a stable order; checkpoints and hub ids are read here."""
        names = list(REGISTRY) if self.reference == "all" else self.reference
        out = [get_registered(n) for n in names]
        out += [get_registered(n) for n in (list(CATALOGUE) if self.catalogue == "all" else self.catalogue)]
        if self.grid:
            out += self.grid.specs()
        out += [s.model_copy(update={"source": "custom"}) for s in self.custom]
        out += [_read_checkpoint("checkpoints", p, lambda p=p: spec_from_checkpoint(p)) for p in self.checkpoints]
        if resolve_remote:
            for model_id in self.hub:
                spec = _read_checkpoint("hub", model_id, lambda m=model_id: spec_from_checkpoint(resolve_hub_id(m), name=m))
                out.append(spec.model_copy(update={"source": "hub"}))
        return out


def _read_checkpoint(field: str, where: str, read) -> ModelSpec:
    """A checkpoint's shape, or a one-line PlanError naming the field and the checkpoint
    (a config without n_layer, bad JSON, a shape out of bounds, a missing directory)."""
    try:
        return read()
    except ValidationError as error:
        raise PlanError(f"models.{field}: '{where}': {format_validation_error(error)}") from None
    except KeyError as error:
        raise PlanError(f"models.{field}: '{where}': config.json lacks {error}") from None
    except AttributeError:
        raise PlanError(f"models.{field}: '{where}': config.json is not a JSON object") from None
    except (ValueError, TypeError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PlanError(f"models.{field}: '{where}': {reason}") from None


class MeasureSettings(BaseModel):
    """How much to measure per cell. Defaults aim at stable medians in seconds per cell."""

    model_config = ConfigDict(extra="forbid")
    prefill_reps: int = Field(default=20, ge=1, le=MAX_REPS, description="timed prefills")
    decode_reps: int = Field(default=5, ge=1, le=MAX_REPS, description="timed generations; each gives gen_len decode samples")
    e2e_reps: int = Field(default=5, ge=1, le=MAX_REPS, description="timed whole generations")
    warmup_min_iters: int = Field(default=3, ge=1, le=MAX_ITERS, description="never judge stability on fewer")
    warmup_min_s: float = Field(default=0.5, ge=0, le=MAX_WARMUP_S, allow_inf_nan=False, description="lets clocks and allocator settle")
    warmup_max_iters: int = Field(default=50, ge=1, le=MAX_ITERS, description="stop waiting for stability here (flagged)")
    warmup_window: int = Field(default=5, ge=2, le=MAX_ITERS, description="iterations per median window")
    warmup_tolerance: float = Field(default=0.05, gt=0, le=1, allow_inf_nan=False, description="relative change of window medians counted as stable")
    warmup_budget: float = Field(
        default=2.0, gt=0, le=1000, allow_inf_nan=False,
        description="a round's warm-up stops (recorded as not converged) after this many times the round's expected "
        "timed work, beyond warmup_min_s: on a loaded CPU the window medians may never settle, and waiting for them "
        "took 64% of a CPU run")
    min_samples: int = Field(default=10, ge=2, le=MAX_REPS * 1024, description="below this a phase is flagged too-few-samples")
    cv_threshold: float = Field(default=0.10, gt=0, le=10, allow_inf_nan=False, description="robust CV (1.4826 MAD / median) above this is flagged high_cv")
    check_correctness: bool = Field(default=True, description="compare every backend with hf-eager")
    profile: bool = Field(default=False, description="count kernels (GPU) or operators (CPU) of one prefill and one decode step, after the timed phases")
    calibrate: bool = Field(default=False, description="measure the device's bandwidth, compute and launch ceilings at run start")
    # Protocol v2: host control and replication where host-bound variance lives.
    rounds: int = Field(default=DEFAULT_ROUNDS, ge=1, le=MAX_ROUNDS, description="each cell is measured in this many rounds, interleaved with the other cells (order reshuffled per round); the reps are split over the rounds")
    # Adaptive rounds: a precision target instead of a fixed count (runner.rounds, docs/protocol.md).
    precision: float | None = Field(
        default=None, gt=0, lt=1, allow_inf_nan=False,
        description="relative half-width wanted for each cell's decode median (0.03: +-3%), from the 95% t interval "
        "across rounds the analysis draws; after min_rounds, further short rounds (one generation) go only to the cells "
        "not there yet, up to max_rounds; unset: every cell takes `rounds`")
    min_rounds: int = Field(default=3, ge=2, le=MAX_ROUNDS, description="with precision: rounds every cell takes, the reps split over them (2 is the fewest a t interval needs; 3 is the fixed plans' default)")
    max_rounds: int = Field(default=20, ge=2, le=MAX_ROUNDS, description="with precision: no cell takes more rounds (a cell with a 20% round-to-round spread needs about 180 for +-3%: it stops here, marked not reached)")
    budget_s: float | None = Field(
        default=None, gt=0, le=MAX_BUDGET_S, allow_inf_nan=False,
        description="with precision: wall seconds a start or a resume may measure for; no round starts past it, cells "
        "with min_rounds are finished as they stand and the run ends interrupted (budget), resumable")
    cpu_affinity: Literal["auto", "none"] | list[int] = Field(
        default="auto", description='"auto": pin the measuring process to one core on GPU runs (CPU runs keep every core); a list of cores; or "none"')
    threads: int | None = Field(default=None, ge=1, le=1024, description="intra-op threads; default 1 on GPU runs (one launching thread), torch's default on CPU runs")
    energy_window_s: float = Field(default=ENERGY_WINDOW_S, ge=0, le=60, allow_inf_nan=False, description="per round and phase, after the timed phases: repeat the phase this long between energy counter updates (runner.trackers says why 1 s); 0 skips the windows (memory peaks from one call, energy unknown)")
    processes: bool = Field(default=False, description="measure each round in a fresh worker process (as pyperf does): placement, allocator and caches then vary between rounds the way they vary between runs, at the cost of setup once per round")
    # None resolves when the plan is read (below), so a run's meta.json records what it did.
    resource_windows: Literal["last-round", "every-round"] | None = Field(
        default=None, description='memory and energy windows: "last-round" tracks them once per cell, after its last round\'s timing (a round then costs only its timing); "every-round" after every round (energy gets a CI across rounds); default: every-round when the plan sets energy_window_s above 0 (it asks for energy), else last-round')

    @field_validator("cpu_affinity")
    @classmethod
    def _cores(cls, cores):
        if isinstance(cores, list):
            if not cores or any(c < 0 for c in cores) or len(set(cores)) != len(cores):
                raise ValueError("cpu_affinity: a list of distinct core numbers >= 0, \"auto\" or \"none\"")
        return cores

    @model_validator(mode="after")
    def _window(self) -> "MeasureSettings":
        if self.warmup_max_iters < self.warmup_min_iters:
            raise ValueError("warmup_max_iters must be >= warmup_min_iters")
        defaults = type(self).model_fields
        if self.precision is None:
            # compared with the defaults, not with what the file set: a recorded plan (model_dump) names every field
            unused = [name for name in ("min_rounds", "max_rounds", "budget_s") if getattr(self, name) != defaults[name].default]
            if unused:
                raise ValueError(f"{', '.join(unused)}: only with precision (adaptive rounds); set precision or leave them out")
        else:
            if self.rounds != defaults["rounds"].default:
                raise ValueError("rounds: with precision every cell takes min_rounds to max_rounds rounds; leave rounds out")
            if self.max_rounds < self.min_rounds:
                raise ValueError("max_rounds must be >= min_rounds")
        if self.resource_windows is None:
            # A plan that sets a positive energy_window_s asks for energy, whose CI needs a window per
            # round; others get their peaks and one energy figure from the last round, at a third of the cost.
            asks_for_energy = "energy_window_s" in self.model_fields_set and self.energy_window_s > 0
            self.resource_windows = "every-round" if asks_for_energy else "last-round"
        return self


    @property
    def adaptive(self) -> bool:
        """Whether cells take rounds until a precision target (runner.rounds) rather than `rounds`."""
        return self.precision is not None

    @property
    def planned_rounds(self) -> int:
        """The most rounds a cell takes: `rounds`, or `max_rounds` with a precision target."""
        return self.max_rounds if self.adaptive else self.rounds


class Axes(BaseModel):
    """The axes a sweep varies; `[[also]]` entries override any subset of them."""

    model_config = ConfigDict(extra="forbid")
    models: ModelsSection | None = None
    backends: list[str] | None = None
    dtypes: list[str] | None = None
    batch_sizes: list[int] | None = None
    prompt_lens: list[int] | None = None
    gen_lens: list[int] | None = None

    @field_validator("backends", "dtypes", "batch_sizes", "prompt_lens", "gen_lens", mode="before")
    @classmethod
    def _not_empty(cls, values):
        if isinstance(values, (list, tuple)) and not values:
            raise ValueError("must not be empty (leave it out of an [[also]] entry to keep the plan's)")
        return values

    @field_validator("backends")
    @classmethod
    def _backends(cls, names):
        if names is not None:
            for name in names:
                if name not in BACKEND_NAMES:
                    raise ValueError(f"unknown backend '{name}'; allowed: {', '.join(BACKEND_NAMES)}")
        return names

    @field_validator("dtypes")
    @classmethod
    def _dtypes(cls, names):
        if names is not None:
            for name in names:
                if name not in DTYPES:
                    raise ValueError(f"unknown dtype '{name}'; allowed: {', '.join(DTYPES)}")
        return names

    @field_validator("batch_sizes", "prompt_lens", "gen_lens")
    @classmethod
    def _positive(cls, values, info):
        if values is not None and any(v <= 0 for v in values):
            raise ValueError("every value must be a positive integer")
        cap = AXIS_CAPS[info.field_name]
        if values is not None and any(v > cap for v in values):
            raise ValueError(f"every value must be at most {cap}")
        return values


class Plan(Axes):
    """A whole benchmark plan."""

    name: str = Field(default="plan", min_length=1)
    description: str = ""
    device: DeviceName = Field(default="auto", description="cpu, cuda, or auto (cuda when present)")
    seed: int = Field(default=1234, ge=0, le=MAX_SEED, description="shuffle order and input tokens")
    repeats: int = Field(default=1, ge=1, le=100, description="run the whole cell set this many times")
    measure: MeasureSettings = Field(default_factory=MeasureSettings)
    backend_options: dict[str, dict[str, str | int | float | bool]] = Field(default_factory=dict)
    also: list[Axes] = Field(default_factory=list, description="extra sweeps overriding some axes")

    @field_validator("backend_options")
    @classmethod
    def _options_for_known_backends(cls, options):
        for name in options:
            if name not in BACKEND_NAMES:
                raise ValueError(f"options for unknown backend '{name}'; allowed: {', '.join(BACKEND_NAMES)}")
        return options

    @model_validator(mode="after")
    def _complete(self) -> "Plan":
        missing = [f for f in ("models", "backends", "dtypes", "batch_sizes", "prompt_lens", "gen_lens") if getattr(self, f) is None]
        if missing:
            raise ValueError(f"plan is missing: {', '.join(missing)}")
        return self


class Cell(BaseModel):
    """One measured combination: the unit that is timed, stored, retried and resumed."""

    model_config = ConfigDict(frozen=True)
    model: ModelSpec
    backend: str
    backend_options: dict = Field(default_factory=dict)
    device: str
    dtype: str
    batch_size: int
    prompt_len: int
    gen_len: int

    @property
    def key(self) -> str:
        """A short hash of the configuration: equal for the same cell in any run."""
        payload = self.model_dump(mode="json")
        payload["model"] = self.model.key_payload()  # a renamed shape is the same cell
        digest = hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    def label(self) -> str:
        return (
            f"{self.model.name} {self.backend} {self.dtype} b{self.batch_size} "
            f"p{self.prompt_len} g{self.gen_len}"
        )


class PlanError(ValueError):
    """A plan that cannot run, with a message naming the field."""


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "plan"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def parse_plan(data: dict) -> Plan:
    try:
        return Plan.model_validate(data)
    except ValidationError as error:
        raise PlanError(format_validation_error(error)) from None


def load_plan(path: str | Path) -> Plan:
    """Read and validate a TOML plan file."""
    path = Path(path)
    if not path.exists():
        raise PlanError(f"plan file '{path}' does not exist")
    from runner.runfiles import RunFileRefused, read_run_file

    try:
        # a regular file of at most 1 MiB: a device or a FIFO named as a plan is refused at once
        text = read_run_file(path, limit=MAX_PLAN_BYTES).decode("utf-8")
        data = tomllib.loads(text)
    except RunFileRefused as error:
        raise PlanError(f"plan file {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PlanError(f"plan file '{path}' cannot be read: {getattr(error, 'strerror', None) or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise PlanError(f"{path}: not valid TOML: {error}") from None
    except RecursionError:
        raise PlanError(f"{path}: nested too deeply to be a plan") from None
    return parse_plan(data)


def plan_to_toml(plan: Plan) -> str:
    """Render a plan as TOML (for the dashboard's plan builder and download)."""
    import tomli_w

    def without_none(value):  # TOML has no null: an unset field is left out, as its default
        if isinstance(value, dict):
            return {k: without_none(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [without_none(v) for v in value]
        return value

    return tomli_w.dumps(without_none(plan.model_dump(mode="json", exclude_defaults=True)))


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _unique(values: list) -> list:
    """`values` without repeats, first occurrence kept (models by their whole definition)."""
    seen, out = set(), []
    for value in values:
        key = json.dumps(value.model_dump(mode="json"), sort_keys=True) if isinstance(value, BaseModel) else json.dumps(value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _without_repeats(sweep: Plan) -> Plan:
    """The sweep with every axis and every models list deduplicated: a value written 400 times
    is one value, so it costs what it is, not what it weighs."""
    models = sweep.models
    if models is not None:
        update: dict = {"custom": _unique(models.custom), "checkpoints": _unique(models.checkpoints),
                        "hub": _unique(models.hub)}
        for names in ("reference", "catalogue"):  # a grid's axes are deduplicated by GridSpec itself
            if getattr(models, names) != "all":
                update[names] = _unique(getattr(models, names))
        models = models.model_copy(update=update)
    return sweep.model_copy(update={"models": models, **{axis: _unique(getattr(sweep, axis)) for axis in (
        "backends", "dtypes", "batch_sizes", "prompt_lens", "gen_lens")}})


def _model_count(models: ModelsSection) -> int:
    """How many shapes a models section names, before any is built or read."""
    count = len(REGISTRY) if models.reference == "all" else len(models.reference)
    count += len(CATALOGUE) if models.catalogue == "all" else len(models.catalogue)
    if models.grid is not None:  # depth x width x KV heads; a budget gives one width per depth
        grid = models.grid
        count += len(grid.depths) * len(grid.widths or [None]) * len(grid.kv_heads or [None])
    return count + len(models.custom) + len(models.checkpoints) + len(models.hub)


def _check_names(plan: Plan, names: list[str]) -> None:
    """Names reach terminals, pages and spreadsheets: one with a control character is refused."""
    for field, name in [("name", plan.name), *(("models", n) for n in names)]:
        if CONTROL_CHARACTERS.search(name):
            raise PlanError(f"{field}: {name!r} holds a control character (escape sequences, hidden or reordered "
                            "text); use plain text")


def expand(plan: Plan, device: str | None = None, resolve_remote: bool = True) -> list[Cell]:
    """All cells of a plan, deduplicated, in declaration order (the runner shuffles).

    Every axis is deduplicated and the size of the product is bounded before any model is
    built or any cell made, so a small file cannot cost minutes of CPU.
    """
    device = device or plan.device
    sweeps = _unique([plan] + [
        plan.model_copy(update={k: v for k, v in extra.model_dump(exclude_none=True).items()} | (
            {"models": extra.models} if extra.models is not None else {}
        ))
        for extra in plan.also
    ])
    sweeps = [_without_repeats(sweep) for sweep in sweeps]
    per_model = [len(s.backends) * len(s.dtypes) * len(s.batch_sizes) * len(s.prompt_lens) * len(s.gen_lens)
                 for s in sweeps]
    bound = sum(_model_count(s.models) * n for s, n in zip(sweeps, per_model)) * plan.repeats
    if bound > MAX_CELLS:
        raise PlanError(f"the plan expands past {MAX_CELLS} cells (up to {bound} with x{plan.repeats} repeats); "
                        "split it or shrink an axis")
    cells: dict[str, Cell] = {}
    for sweep in sweeps:
        try:
            specs = _unique(sweep.models.specs(resolve_remote=resolve_remote))
        except ValidationError as error:  # a grid shape past a model bound (parameters, heads)
            raise PlanError("models: " + format_validation_error(error)) from None
        _check_names(plan, [spec.name for spec in specs] + list(sweep.models.hub))
        if not specs and sweep.models.hub and not resolve_remote:
            continue  # hub models only: resolved (downloaded or from the cache) when the run starts
        if not specs:
            raise PlanError("models: the plan names no model")
        for spec in specs:
            for backend in sweep.backends:
                for dtype in sweep.dtypes:
                    for batch in sweep.batch_sizes:
                        for prompt_len in sweep.prompt_lens:
                            for gen_len in sweep.gen_lens:
                                if prompt_len + gen_len + 1 > spec.context:
                                    raise PlanError(
                                        f"prompt_lens/gen_lens: {prompt_len} + {gen_len} tokens exceed "
                                        f"model '{spec.name}' context of {spec.context} positions (n_positions)"
                                    )
                                cell = Cell(
                                    model=spec,
                                    backend=backend,
                                    backend_options=dict(plan.backend_options.get(backend, {})),
                                    device=device,
                                    dtype=dtype,
                                    batch_size=batch,
                                    prompt_len=prompt_len,
                                    gen_len=gen_len,
                                )
                                cells.setdefault(cell.key, cell)
    return list(cells.values())


# The wall-time model's constants, calibrated on a 2-thread AMD EPYC CPU host (tiny-gpt2 and
# 1-8 layer x 64-256 wide shapes, hf-eager and hf-sdpa, the least loaded of repeated timings:
# benchmarks/estimate_accuracy.py checks the whole model against a run of plans/smoke-cpu.toml).
PROCESS_START_S = 4.5  # python -m runner: imports torch and transformers, reads the environment
FIRST_BUILD_S = 4.5  # the first model a process builds loads transformers' modelling code
CPU_STEP_BASE_S = 4.5e-4  # one CPU forward of a 1-token step: Python and dispatch before the layers
CPU_STEP_PER_LAYER_S = 2.5e-4  # each layer's handful of small ops on the CPU
CPU_BYTES_PER_S = 10e9  # weights streamed once per step
CPU_FLOPS = 20e9  # 2 x params x tokens
GPU_STEP_PER_LAYER_S = 1e-4  # launch-bound small models on the GPU: ~0.1 ms per layer
BUILD_S_PER_PARAM = 2.5e-8  # random init of the weights
CELL_OVERHEAD_S = 0.05  # per cell: the cell file, freeing memory, the inputs
ROUND_OVERHEAD_S = 0.15  # per cell-round: two host-speed probes and two machine-load samples
COMPILE_S = 30.0  # torch-compile's Inductor compile per cell


def estimate_seconds(cells: list[Cell], measure: MeasureSettings, energy_counter: bool | None = None,
                     rounds: float | Mapping[str, float] | None = None) -> float:
    """The wall time a run of `cells` is expected to take on a quiet machine like the one the
    constants above were calibrated on; not a measurement (dashboard.plan_builder.history_estimate
    scales it by how earlier runs on the same host compared with it).

    Per cell: setup (build + backend), a cold call and a full generation, then per round
    (`measure.rounds`, interleaved) a generation, warm-up, its share of the timed reps, the
    memory / energy windows (3 phases x `energy_window_s` where an energy counter is readable,
    one call of each phase otherwise) and the round's probes; with `processes` the setup is
    paid every round; with `check_correctness` an hf-eager float32 reference is built and
    compared (about three generations). Warm-up per round: stability can first be judged after
    max(min_iters, 2 x window) iterations of a prefill and up to 8 decode steps, at least
    `warmup_min_s`, at most `warmup_max_iters` iterations and at most `warmup_budget` times the
    round's own timed work (runner.protocol). `energy_counter` None: the GPU's (NVML) is
    assumed readable, the CPU's (RAPL) is looked up on this machine.

    With a precision target (adaptive rounds, runner.rounds) a cell takes min_rounds rounds
    that split the reps, then short rounds of one generation (and the prefill and e2e reps in
    proportion) up to the `rounds` it is expected to need: one number, or one per backend
    (what earlier runs needed, `analysis.predict.rounds_from_history`); min_rounds where not
    given. A budget_s caps the measuring (finishing the cells after it is not counted).
    """
    if not cells:
        return 0.0
    total = PROCESS_START_S + FIRST_BUILD_S
    split = measure.min_rounds if measure.adaptive else measure.rounds
    worker_rounds = 0.0  # rounds beyond the first, each a fresh worker process with `processes`
    measuring = 0.0
    for cell in cells:
        expected = rounds.get(cell.backend) if isinstance(rounds, Mapping) else rounds
        cell_rounds = (min(max(float(expected or split), split), measure.max_rounds) if measure.adaptive
                       else float(split))
        extra = cell_rounds - split
        spec = cell.model
        params = spec.approx_params()
        if cell.device == "cuda":
            step_s = GPU_STEP_PER_LAYER_S * (spec.n_layer + 1)
            tokens_free = 512  # prompt tokens a launch-bound prefill takes at the cost of one step
        else:
            step_s = (CPU_STEP_BASE_S + CPU_STEP_PER_LAYER_S * spec.n_layer + params * 4 / CPU_BYTES_PER_S
                      + 2 * params * cell.batch_size / CPU_FLOPS)
            tokens_free = 128
        prefill_s = step_s * (1 + cell.prompt_len * cell.batch_size / tokens_free)
        generation_s = prefill_s + (cell.gen_len - 1) * step_s
        def timed(prefill_reps: float, decode_reps: float, e2e_reps: float) -> float:
            return (prefill_reps * prefill_s + decode_reps * (prefill_s + cell.gen_len * step_s)
                    + e2e_reps * generation_s)

        def round_s(timed_round: float) -> float:
            warm_step = prefill_s + min(cell.gen_len, 8) * step_s
            judged = max(measure.warmup_min_iters, 2 * measure.warmup_window)
            warm = min(max(measure.warmup_min_s, judged * warm_step),
                       max(measure.warmup_max_iters * warm_step, measure.warmup_min_s),
                       max(measure.warmup_min_s, measure.warmup_budget * timed_round))
            return generation_s + warm + timed_round + ROUND_OVERHEAD_S

        counter = energy_counter if energy_counter is not None else (cell.device == "cuda" or _cpu_energy_readable())
        windows = 3 * measure.energy_window_s if (counter and measure.energy_window_s > 0) else prefill_s + step_s + generation_s
        setup = 0.02 + BUILD_S_PER_PARAM * params + (COMPILE_S if cell.backend == "torch-compile" else 0.0)
        check = (0.02 + BUILD_S_PER_PARAM * params + 3 * generation_s) if measure.check_correctness else 0.0
        full = round_s(timed(measure.prefill_reps, measure.decode_reps, measure.e2e_reps) / split)
        short = round_s(timed(*(measure.prefill_reps / measure.decode_reps, 1, measure.e2e_reps / measure.decode_reps)))
        cell_s = (setup * (cell_rounds if measure.processes else 1) + prefill_s + generation_s
                  + split * full + extra * short + cell_rounds * windows + check + CELL_OVERHEAD_S)
        measuring += cell_s - check
        total += cell_s
        worker_rounds = max(worker_rounds, cell_rounds - 1)
    if measure.processes and worker_rounds > 0:
        total += worker_rounds * (PROCESS_START_S + FIRST_BUILD_S)  # a fresh worker process per round
    if measure.adaptive and measure.budget_s is not None:
        total = min(total, total - measuring + measure.budget_s)  # the start and the gate are outside the budget
    return total


def _cpu_energy_readable() -> bool:
    """Whether this machine's RAPL counter can be read (the CPU runs' energy windows then run)."""
    from runner.trackers import energy_counter

    return energy_counter("cpu") is not None


BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2}
# Leave this share of free memory to the allocator, the CUDA context and the host.
MEMORY_HEADROOM = 0.9


def estimate_cell_bytes(cell: Cell) -> dict[str, int]:
    """Rough peak memory of one cell: weights (and the eager reference the correctness
    gate builds), KV cache over the whole sequence, and the prefill's largest activations
    (float32 logits over every prompt position, the MLP and, for eager attention, the
    attention scores). An upper-end estimate for refusing the impossible, not a forecast."""
    spec, width = cell.model, BYTES_PER_ELEMENT.get(cell.dtype, 4)
    tokens = cell.batch_size * (cell.prompt_len + cell.gen_len)
    weights = spec.approx_params() * width * (1 if cell.backend == "hf-eager" else 2)
    kv_cache = 2 * spec.n_layer * tokens * spec.kv_width * width  # keys and values of n_kv_head heads
    prompt = cell.batch_size * cell.prompt_len
    activations = (prompt * spec.vocab * 4 + 2 * prompt * spec.inner * width
                   + cell.batch_size * spec.n_head * cell.prompt_len ** 2 * width)
    return {"weights": weights, "kv_cache": kv_cache, "activations": activations}


def free_memory(device: str) -> int | None:
    """Bytes free on the device now (host RAM for cpu), or None where it cannot be known."""
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    except Exception:  # noqa: BLE001 - no torch, or a CUDA that will not answer: unknown
        return None
    return None


def check_memory(cells: list[Cell], free_bytes: int | None) -> None:
    """Refuse a plan whose largest cell cannot fit in `free_bytes`, naming the cell and the fields."""
    if free_bytes is None or not cells:
        return
    sizes = [(sum(estimate_cell_bytes(c).values()), c) for c in cells]
    need, cell = max(sizes, key=lambda x: x[0])
    if need <= MEMORY_HEADROOM * free_bytes:
        return
    parts = ", ".join(f"{k.replace('_', ' ')} {v / 1e9:.1f} GB" for k, v in estimate_cell_bytes(cell).items())
    raise PlanError(
        f"models/batch_sizes/prompt_lens: cell '{cell.label()}' needs about {need / 1e9:.1f} GB ({parts}), "
        f"more than {MEMORY_HEADROOM:.0%} of the {free_bytes / 1e9:.1f} GB free on {cell.device}; "
        "use a smaller model, batch or prompt"
    )
