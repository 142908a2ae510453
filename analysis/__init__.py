"""Statistics over the store: cell summaries, depth-vs-width fits, inversions, regimes.

Pure functions over DuckDB connections and pandas frames; no torch, no streamlit, so a
read-only dashboard on a snapshot can import all of it. Modules, one job each:

- `load`: read ok cells and raw samples from the store, with filters.
- `bootstrap`: vectorised bootstrap draws of medians (and so of ratios of medians).
- `stats`: per (cell, phase) n, median, mean, std, CV, p5, p95, CI of the median, tokens/s.
- `regression`: depth-only, params-only, depth + width and the seed study's log params + log
  depth OLS per group, with a verdict (depth / params / both / inconclusive).
- `inversions`: pairs where the smaller model is slower, with a CI of the ratio, significant
  at FDR 5% within each group.
- `regimes`: pooled models with regime (or backend) interactions and a Wald test.
- `reproducibility`: run-to-run variance of repeat runs, pooled medians with run-level CIs,
  and which inversion and regression verdicts hold across runs.
- `predict`: latency of an unmeasured shape; samples needed to resolve a difference.
- `figures`: plotly figures, pure functions of frames.
- `report`: `analyze(con, **filters) -> dict` and `format_text(result) -> str` for the CLI.
- `synthetic`: stores filled from a known latency law, for tests and benchmarks.
"""
