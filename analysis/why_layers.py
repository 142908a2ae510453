"""What a layer of a decode step costs: its dependent phases and its weight reads, the LM head apart.

A decode step at batch 1 is a chain of dependent phases (kernels in a CUDA graph, launches
from the host, operators on a CPU), each reading a slice of the weights. Its floor, as
benchmarks/bench_fused_floor.py states it, is phases x hand-off + weight bytes / bandwidth.
Split by where the bytes live:

    decode_ms  = c + h x phases + a x layer MB + b x head MB
    per layer  = phases per layer x h + a x one layer's MB
    LM head    = b x head MB,   head = vocab x width x dtype bytes

The LM head is its own term: on small models it holds most of the bytes (77% of gpt2-25m's
weights) and is one wide matrix-vector product, which need not be read at the rate of a
layer's several narrow ones. The intercept c holds what neither term counts (the embedding
row, the final norm's launch, sampling).

Two readings side by side, per (regime, backend, options, dtype, workload):
- calibrated: h is the hand-off the run measured for the way this backend hands off
  (`HANDOFF_SOURCES`: runner.sync_cost's graph kernel, graph kernel with PDL or completion-
  counter figures, or runner.calibrate's launch cost), a = b = 1 / the measured copy
  bandwidth. Where the run did not measure a figure the row says NOT_CALIBRATED; no figure
  is borrowed from another run or regime.
- fitted: c, h, a, b by least squares over the group's shapes (statsmodels), each with its
  CI, and each shape's per-layer cost and LM head term with theirs (the coefficients' HC3
  covariance). Weighted by 1 / decode^2: a shape's noise is a share of its latency (the
  bundle's shapes span 0.05 to 30 ms), and unweighted, the slowest shapes' misfit swamps the
  rest: on 15 shapes with 3% noise, OLS with HC3 errors covered a planted hand-off 89% of the
  time at 95%, this weighting 95%. HC3 errors, Student t on the residual df (a group holds 7
  to 43 shapes). A shape measured in several runs enters once, at the geometric mean of its
  runs' medians: runs are replicates of a shape, not more shapes.

The weight-read limit of a shape is the bytes a step must read (every layer, the final norm
and the LM head; the position table and the input embedding's unread rows are left out) over
a bandwidth, given twice: at the run's measured copy bandwidth (runner.calibrate's
`bandwidth_gb_s`, bytes read + written by a 1 GiB copy over its time) and at the GPU's
datasheet figure (analysis.datasheet). decode / limit is how many times the bandwidth-bound
step the measured one takes.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps

from analysis.datasheet import datasheet_bandwidth_gb_s

BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2}
GROUP_KEYS = ("regime", "backend", "backend_options", "dtype", "batch_size", "prompt_len", "gen_len")
SHAPE_KEYS = ("family", "n_layer", "n_embd", "n_head", "n_kv_head", "n_inner", "vocab_size")
NOT_CALIBRATED = "not calibrated"
# calibration key of each way a step hands off from one phase to the next
HANDOFF_SOURCES = {
    "counter": ("counter_handoff_us", "completion-counter hand-off"),
    "graph_pdl": ("graph_kernel_pdl_us", "kernel in a CUDA graph with PDL"),
    "graph": ("graph_kernel_us", "kernel in a CUDA graph"),
    "launch": ("launch_us", "host launch"),
}
TERMS = ("phases", "layer_mb", "head_mb")
FORMULA = "decode_ms ~ phases + layer_mb + head_mb"  # weighted by 1 / decode_ms^2 (_fit_group)
# four coefficients and two residual degrees of freedom: fewer shapes leave a CI on almost nothing
MIN_SHAPES = 6
# Belsley's rule of thumb for a design scaled to unit columns: past 30 the terms are nearly
# collinear and their CIs are wide; the fit is still reported, with that said.
COLLINEAR_CONDITION = 30.0
MB = 1e6


def layer_params(family: str, n_embd: int, n_inner: int, n_head: int, n_kv_head: int) -> int:
    """Weights of one transformer layer (runner.models.ModelSpec.approx_params' per-layer term)."""
    d, inner = int(n_embd), int(n_inner)
    if family == "gpt2":
        return 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
    kv = int(n_kv_head) * (d // int(n_head))
    bias = (d + 2 * kv) if family == "qwen2" else 0
    return d * d + 2 * d * kv + d * d + bias + 3 * d * inner + 2 * d


def final_norm_params(family: str, n_embd: int) -> int:
    """The norm before the LM head: LayerNorm (weight and bias) for gpt2, RMSNorm otherwise."""
    return 2 * int(n_embd) if family == "gpt2" else int(n_embd)


def weight_read_bytes(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with the bytes one decode step reads: layer_bytes (one layer), layers_bytes (all),
    head_bytes (the LM head), read_bytes (layers + final norm + head) and head_share (of read_bytes)."""
    out = frame.copy()
    element = out["dtype"].map(BYTES_PER_ELEMENT).astype(float)
    families = out["family"].fillna("gpt2") if "family" in out else pd.Series("gpt2", index=out.index)
    kv_heads = out["n_kv_head"].fillna(out["n_head"]) if "n_kv_head" in out else out["n_head"]
    per_layer = [layer_params(f, d, i, h, k) for f, d, i, h, k
                 in zip(families, out["n_embd"], out["n_inner"], out["n_head"], kv_heads)]
    norm = [final_norm_params(f, d) for f, d in zip(families, out["n_embd"])]
    out["layer_bytes"] = np.asarray(per_layer, dtype=float) * element
    out["layers_bytes"] = out["layer_bytes"] * out["n_layer"]
    out["head_bytes"] = out["vocab_size"].astype(float) * out["n_embd"] * element
    out["read_bytes"] = out["layers_bytes"] + np.asarray(norm, dtype=float) * element + out["head_bytes"]
    out["head_share"] = out["head_bytes"] / out["read_bytes"]
    return out


def _options(text: object) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def handoff_kind(backend: str, options: object, graphed: bool) -> str:
    """How a cell's step hands off between phases (a key of HANDOFF_SOURCES)."""
    opts = _options(options)
    if backend == "fused":
        if opts.get("persistent"):
            return "counter"
        return "graph_pdl" if opts.get("pdl", True) else "graph"  # pdl is on by default (runner.backends.fused)
    return "graph" if graphed else "launch"


def _cell_handoffs(profiles: pd.DataFrame) -> pd.DataFrame:
    """Per cell: phases (the count the hand-off multiplies), handoff_kind, handoff_us (the run's, or NaN)."""
    out = profiles.copy()
    graphed = (out["graph_launches"].fillna(0) > 0).to_numpy()
    options = out["backend_options"] if "backend_options" in out else pd.Series("{}", index=out.index)
    kinds = [handoff_kind(b, o, g) for b, o, g in zip(out["backend"], options, graphed)]
    out["handoff_kind"] = kinds
    counts = np.where(graphed, out["kernels"].astype(float), out["launches"].astype(float))
    # a persistent step runs all its phases inside one kernel: its count says nothing about phases
    out["phases"] = np.where(np.asarray(kinds) == "counter", np.nan, counts)
    pdl_missing = (out["handoff_kind"] == "graph_pdl") & out["graph_kernel_pdl_us"].isna() & out["graph_kernel_us"].notna()
    # a run that probed hand-offs but not PDL ran on a GPU without it (before sm90): its kernels launch plainly
    out.loc[pdl_missing, "handoff_kind"] = "graph"
    values = np.full(len(out), np.nan)
    for kind, (column, _) in HANDOFF_SOURCES.items():
        rows = (out["handoff_kind"] == kind).to_numpy()
        if column in out:
            values[rows] = pd.to_numeric(out.loc[rows, column], errors="coerce").to_numpy(dtype=float)
    out["handoff_us"] = values
    return out


def per_layer_slope(cells: pd.DataFrame, count: str = "phases") -> float:
    """Slope of a per-step count on depth (width beside it): exact for a captured graph, whose
    count is a property of the shape; NaN with fewer than two depths."""
    known = cells.dropna(subset=[count])
    if known["n_layer"].nunique() < 2:
        return float("nan")
    design = np.column_stack([np.ones(len(known)), known["n_layer"], known["n_embd"]])
    coefficients, *_ = np.linalg.lstsq(design, known[count].to_numpy(dtype=float), rcond=None)
    return float(coefficients[1])


def shape_costs(profiles: pd.DataFrame) -> pd.DataFrame:
    """One row per shape of each group (GROUP_KEYS): its runs pooled, bytes, limits and the calibrated model.

    `profiles` is analysis.why.load_profiles' frame (cells of uncalibrated runs included).
    Columns: GROUP_KEYS, SHAPE_KEYS, model_name (every name the shape was measured under),
    n_runs, decode_ms (geometric mean of the runs' medians), phases, phases_per_layer (the
    group's), the weight_read_bytes columns, bandwidth_gb_s (median of the runs' measured copy
    bandwidth; NaN: not calibrated), datasheet_gb_s (NaN: none), limit_ms / ratio (at the
    measured bandwidth), limit_datasheet_ms / ratio_datasheet, handoff_kind, handoff_us (median
    of the runs' measured hand-off; NaN: not calibrated), handoff_basis (what it is, or
    NOT_CALIBRATED), and the calibrated model: per_layer_us_calibrated, head_us_calibrated,
    floor_ms_calibrated (phases x hand-off + read bytes / bandwidth).
    """
    if profiles.empty:
        return pd.DataFrame(columns=[*GROUP_KEYS, *SHAPE_KEYS, "model_name", "decode_ms", "ratio", "ratio_datasheet"])
    cells = _cell_handoffs(profiles)
    if "backend_options" not in cells:
        cells["backend_options"] = "{}"
    if "family" not in cells:
        cells["family"] = "gpt2"
    cells["n_kv_head"] = cells["n_kv_head"].fillna(cells["n_head"]) if "n_kv_head" in cells else cells["n_head"]
    cells["run_id"] = cells["cell_id"].astype(str).str.split("/").str[0]
    cells["log_decode"] = np.log(cells["decode_ms"].astype(float))
    keys = [*GROUP_KEYS, *SHAPE_KEYS]
    pooled = cells.groupby(keys, sort=True, dropna=False).agg(
        model_name=("model_name", lambda s: " = ".join(sorted(set(map(str, s))))),
        n_runs=("run_id", "nunique"), log_decode=("log_decode", "mean"), phases=("phases", "median"),
        bandwidth_gb_s=("bandwidth_gb_s", "median"), handoff_kind=("handoff_kind", "first"),
        handoff_us=("handoff_us", "median"), cell_id=("cell_id", "first"),
    ).reset_index()
    pooled["decode_ms"] = np.exp(pooled.pop("log_decode"))
    out = weight_read_bytes(pooled)
    codes = out.groupby(list(GROUP_KEYS), sort=False, dropna=False).ngroup()
    slopes = {code: per_layer_slope(group) for code, group in out.groupby(codes)}
    out["phases_per_layer"] = codes.map(slopes)
    bandwidth = out["bandwidth_gb_s"] * 1e9  # bytes / s
    out["datasheet_gb_s"] = [datasheet_bandwidth_gb_s(r) or np.nan for r in out["regime"]]
    out["limit_ms"] = out["read_bytes"] / bandwidth * 1e3
    out["ratio"] = out["decode_ms"] / out["limit_ms"]
    out["limit_datasheet_ms"] = out["read_bytes"] / (out["datasheet_gb_s"] * 1e9) * 1e3
    out["ratio_datasheet"] = out["decode_ms"] / out["limit_datasheet_ms"]
    out["handoff_basis"] = [HANDOFF_SOURCES[k][1] if np.isfinite(v) else NOT_CALIBRATED
                            for k, v in zip(out["handoff_kind"], out["handoff_us"])]
    out["per_layer_us_calibrated"] = out["phases_per_layer"] * out["handoff_us"] + out["layer_bytes"] / bandwidth * 1e6
    out["head_us_calibrated"] = out["head_bytes"] / bandwidth * 1e6
    out["floor_ms_calibrated"] = out["phases"] * out["handoff_us"] / 1e3 + out["read_bytes"] / bandwidth * 1e3
    return out


def _condition_number(design: np.ndarray) -> float:
    """Condition number of the (weighted) design with every column scaled to unit length (Belsley)."""
    scaled = design / np.linalg.norm(design, axis=0)
    singular = np.linalg.svd(scaled, compute_uv=False)
    return float(singular[0] / singular[-1]) if singular[-1] > 0 else float("inf")


def _fit_group(shapes: pd.DataFrame, confidence: float) -> tuple[dict, pd.DataFrame]:
    """The fit of one group and its shapes with their fitted per-layer and LM head terms."""
    data = shapes.dropna(subset=["phases"]).assign(layer_mb=lambda f: f["layers_bytes"] / MB,
                                                   head_mb=lambda f: f["head_bytes"] / MB)
    base = {"n_shapes": int(len(data)), "n_runs": int(shapes["n_runs"].max()) if len(shapes) else 0}
    if len(data) < MIN_SHAPES:
        return base | {"status": "too_few_shapes",
                       "message": f"{len(data)} shapes with a phase count; at least {MIN_SHAPES} are needed"}, shapes
    for term, name in (("phases", "phase count"), ("layer_mb", "layer bytes"), ("head_mb", "LM head bytes")):
        if data[term].nunique() < 2:
            return base | {"status": "not_identifiable", "message": f"the {name} is the same for every shape"}, shapes
    weights = 1.0 / data["decode_ms"].to_numpy(dtype=float) ** 2
    design = np.column_stack([np.ones(len(data)), data[list(TERMS)].to_numpy(dtype=float)])
    condition = _condition_number(design * np.sqrt(weights)[:, None])
    fit = smf.wls(FORMULA, data=data, weights=weights).fit(cov_type="HC3", use_t=True)
    cov = fit.cov_params().to_numpy()
    if not np.isfinite(cov).all():  # a shape of leverage 1 leaves HC3 undefined
        return base | {"status": "not_identifiable", "condition_number": condition,
                       "message": "a shape has leverage 1: HC3 errors are undefined; measure more shapes"}, shapes
    alpha = 1 - confidence
    ci = fit.conf_int(alpha)
    quantile = sps.t.ppf(1 - alpha / 2, fit.df_resid)
    scale = {"Intercept": 1.0, "phases": 1e3, "layer_mb": 1e3, "head_mb": 1e3}  # ms -> us
    names = {"Intercept": "intercept_us", "phases": "handoff_us", "layer_mb": "layer_us_per_mb", "head_mb": "head_us_per_mb"}
    row = base | {"status": "ok", "r2": float(fit.rsquared), "df_resid": float(fit.df_resid),
                  "condition_number": condition,
                  "message": (f"terms nearly collinear (condition number {condition:.0f}): wide CIs" if
                              condition > COLLINEAR_CONDITION else "")}
    for term, name in names.items():
        factor = 1e3 if term == "Intercept" else scale[term]
        row[name] = float(fit.params[term] * factor)
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = (float(v * factor) for v in ci.loc[term])
    # Implied read rates (GB/s) of a layer's weights and of the head: 1 us per MB is 1000 GB/s.
    for name in ("layer", "head"):
        per_mb = row[f"{name}_us_per_mb"]
        row[f"{name}_gb_s"] = 1e3 / per_mb if per_mb > 0 else float("nan")
    # Per shape: per layer = P h + a (one layer's MB), head = b (head MB); in ms, from the fit's covariance.
    order = list(fit.params.index)
    out = shapes.copy()
    per_layer = np.zeros((len(out), len(order)))
    per_layer[:, order.index("phases")] = out["phases_per_layer"].to_numpy(dtype=float)
    per_layer[:, order.index("layer_mb")] = out["layer_bytes"].to_numpy(dtype=float) / MB
    head = np.zeros((len(out), len(order)))
    head[:, order.index("head_mb")] = out["head_bytes"].to_numpy(dtype=float) / MB
    params = fit.params.to_numpy()
    for name, weights in (("per_layer_us", per_layer), ("head_us", head)):
        value = weights @ params * 1e3
        se = np.sqrt(np.einsum("ij,jk,ik->i", weights, cov, weights)) * 1e3
        out[f"{name}_fitted"] = value
        out[f"{name}_fitted_ci_low"], out[f"{name}_fitted_ci_high"] = value - quantile * se, value + quantile * se
    return row, out


def layer_cost(profiles: pd.DataFrame, confidence: float = 0.95) -> dict[str, pd.DataFrame]:
    """{"shapes": shape_costs with the fitted terms, "fits": one row per group} (module docstring).

    fits columns: GROUP_KEYS, status ("ok", "too_few_shapes", "not_identifiable"), message,
    n_shapes, n_runs, and where ok: handoff_us, layer_us_per_mb, head_us_per_mb, intercept_us
    each with _ci_low/_ci_high, layer_gb_s and head_gb_s (the implied read rates), r2,
    df_resid, condition_number; beside them the group's calibrated figures: handoff_kind,
    handoff_calibrated_us with handoff_basis, bandwidth_gb_s, datasheet_gb_s, phases_per_layer.
    """
    shapes = shape_costs(profiles)
    rows, parts = [], []
    for key, group in shapes.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        row, fitted = _fit_group(group, confidence)
        measured = group["handoff_us"].dropna()
        kind = str(group["handoff_kind"].iloc[0])
        rows.append(dict(zip(GROUP_KEYS, key)) | row | {
            "handoff_kind": kind,
            "handoff_calibrated_us": float(measured.median()) if len(measured) else float("nan"),
            "handoff_basis": HANDOFF_SOURCES[kind][1] if len(measured) else NOT_CALIBRATED,
            "bandwidth_gb_s": float(group["bandwidth_gb_s"].median()),
            "datasheet_gb_s": float(group["datasheet_gb_s"].iloc[0]),
            "phases_per_layer": float(group["phases_per_layer"].iloc[0]),
        })
        parts.append(fitted)
    fits = pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*GROUP_KEYS, "status", "message", "n_shapes"])
    return {"shapes": pd.concat(parts, ignore_index=True) if parts else shapes, "fits": fits}


# --- tables as the Why page shows them -------------------------------------------------------

NO_DATASHEET = "no datasheet figure"


def _ci(value: float, low: float, high: float, digits: int = 3) -> str:
    """`value [low, high]` (bounds may be negative: a coefficient, not a latency); '' where not fitted."""
    if not np.isfinite(value):
        return ""
    return f"{value:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def _or(value: float, missing: str, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if np.isfinite(value) else missing


def fit_table(fits: pd.DataFrame) -> pd.DataFrame:
    """One row per fitted group: the fitted terms with their 95% CIs beside the calibrated figures."""
    rows = []
    for f in fits.to_dict("records"):
        ok = f.get("status") == "ok"
        nan = float("nan")
        rows.append({
            "backend": f["backend"], "options": f["backend_options"], "shapes": f["n_shapes"],
            "hand-off µs, fitted [95% CI]": _ci(f.get("handoff_us", nan), f.get("handoff_us_ci_low", nan),
                                                f.get("handoff_us_ci_high", nan)) if ok else "",
            "hand-off µs, calibrated": _or(f["handoff_calibrated_us"], NOT_CALIBRATED),
            "calibrated as": HANDOFF_SOURCES[f["handoff_kind"]][1],
            "phases a layer": _or(f["phases_per_layer"], "", 3),
            "layer reads µs/MB, fitted [95% CI]": _ci(f.get("layer_us_per_mb", nan), f.get("layer_us_per_mb_ci_low", nan),
                                                      f.get("layer_us_per_mb_ci_high", nan)) if ok else "",
            "LM head µs/MB, fitted [95% CI]": _ci(f.get("head_us_per_mb", nan), f.get("head_us_per_mb_ci_low", nan),
                                                  f.get("head_us_per_mb_ci_high", nan)) if ok else "",
            "copy µs/MB, measured": _or(1e3 / f["bandwidth_gb_s"], NOT_CALIBRATED, 3),
            "datasheet µs/MB": _or(1e3 / f["datasheet_gb_s"], NO_DATASHEET, 3),
            "R²": _or(f.get("r2", nan), "", 3), "condition number": _or(f.get("condition_number", nan), "", 3),
            "note": f.get("message") or "",
        })
    return pd.DataFrame(rows)


def shape_table(shapes: pd.DataFrame) -> pd.DataFrame:
    """Per shape: what a layer and the LM head cost, fitted (95% CI) and calibrated."""
    nan = np.full(len(shapes), np.nan)
    get = lambda c: shapes[c].to_numpy(dtype=float) if c in shapes else nan  # noqa: E731 - fitted columns may be absent
    ordered = shapes.assign(_order=np.arange(len(shapes))).sort_values(["n_layer", "n_embd"])
    rows = []
    for i in ordered["_order"]:
        row = shapes.iloc[i]
        rows.append({
            "shape": f"{row['model_name']} ({row['n_layer']} x {row['n_embd']})", "runs": int(row["n_runs"]),
            "decode ms": row["decode_ms"], "phases": row["phases"], "LM head share of bytes": row["head_share"],
            "per layer µs, fitted [95% CI]": _ci(get("per_layer_us_fitted")[i], get("per_layer_us_fitted_ci_low")[i],
                                                 get("per_layer_us_fitted_ci_high")[i]),
            "per layer µs, calibrated": _or(row["per_layer_us_calibrated"], NOT_CALIBRATED),
            "LM head µs, fitted [95% CI]": _ci(get("head_us_fitted")[i], get("head_us_fitted_ci_low")[i],
                                               get("head_us_fitted_ci_high")[i]),
            "LM head µs, calibrated": _or(row["head_us_calibrated"], NOT_CALIBRATED),
            "floor ms, calibrated": _or(row["floor_ms_calibrated"], NOT_CALIBRATED),
        })
    return pd.DataFrame(rows)


def limit_table(shapes: pd.DataFrame) -> pd.DataFrame:
    """Per backend and shape: decode time over the weight-read limit, at the measured copy
    bandwidth and at the datasheet figure (NOT_CALIBRATED / NO_DATASHEET where there is none)."""
    ordered = shapes.sort_values(["backend", "backend_options", "n_layer", "n_embd"])
    return pd.DataFrame([{
        "backend": r.backend, "options": r.backend_options, "shape": f"{r.model_name} ({r.n_layer} x {r.n_embd})",
        "decode ms": r.decode_ms, "MB read a step": r.read_bytes / MB, "LM head share": r.head_share,
        "limit ms, measured copy": _or(r.limit_ms, NOT_CALIBRATED),
        "x limit, measured copy": _or(r.ratio, NOT_CALIBRATED, 3),
        "limit ms, datasheet": _or(r.limit_datasheet_ms, NO_DATASHEET),
        "x limit, datasheet": _or(r.ratio_datasheet, NO_DATASHEET, 3),
    } for r in ordered.itertuples()])


def select(frame: pd.DataFrame, regime: str, dtype: str, workload: tuple[int, int, int],
           backend: str | None = None) -> pd.DataFrame:
    """Rows of a `layer_cost` frame for one regime, dtype and (batch, prompt, gen) workload, one backend or all."""
    batch, prompt, gen = workload
    keep = ((frame["regime"] == regime) & (frame["dtype"] == dtype) & (frame["batch_size"] == batch)
            & (frame["prompt_len"] == prompt) & (frame["gen_len"] == gen))
    if backend is not None:
        keep &= frame["backend"] == backend
    return frame[keep].reset_index(drop=True)
