"""UI-free helpers for the Streamlit dashboard (app.py, app_pages/).

- `filters`: the global filters, their query-parameter form and the analysis filter dict.
- `data`: queries the pages need beyond `analysis` (summary, options, every cell with its
  status, coverage, samples of chosen cells) and incremental ingestion of run directories.
- `runs`: starting, following and cancelling a runner subprocess (one per machine).
- `plan_builder`: the Run page's form as a validated plan, errors mapped to fields.
- `ui`: the thin Streamlit layer (connections, caches, sidebar, page guard).

Everything but `ui` imports no streamlit and no torch, so it is unit-testable and safe
for the hosted read-only mode.
"""
