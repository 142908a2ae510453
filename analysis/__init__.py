"""Statistics over the store: cell summaries, depth-vs-width fits, inversions, regimes.

Pure functions over DuckDB connections and pandas frames; no torch, no streamlit, so a
read-only dashboard on a snapshot can import all of it. Modules, one job each:

- `load`: read ok cells and raw samples from the store, with filters.
- `intervals`: what each CI is across ("across runs", "across rounds", "none") and its
  Student-t replicates over the highest level measured (see docs/statistics.md).
- `bootstrap`: the order-statistic bootstrap of a median (an i.i.d. lower bound of noise).
- `stats`: per (cell, phase) n, median, mean, std, CV, p5, p95, CI of the median across
  rounds (or none), tokens/s.
- `regression`: depth-only, params-only, depth + width and the seed study's log params + log
  depth OLS per group, with a verdict (depth / params / both / inconclusive).
- `inversions`: pairs where the smaller model is slower, with a CI of the ratio, significant
  at FDR 5% within each group.
- `headline`: what a dataset says first (the seed pair gpt2-5m vs gpt2-25m per regime,
  backend and dtype, then the strongest inversions), pooled over runs per shape; the
  Overview, the README's generated results and the HTML report all show its rows.
- `regimes`: pooled models with regime (or backend) interactions and a Wald test.
- `reproducibility`: run-to-run variance of repeat runs, pooled medians with CIs across runs,
  and which inversion and regression verdicts hold across runs.
- `predict`: latency of an unmeasured shape; samples needed to resolve a difference.
- `figures`: plotly figures, pure functions of frames.
- `report`: `analyze(con, **filters) -> dict` and `format_text(result) -> str` for the CLI.
- `synthetic`: stores filled from a known latency law, and simulated experiments with known
  run, round, generation and sample variance, for tests, benchmarks and CI coverage.
"""
