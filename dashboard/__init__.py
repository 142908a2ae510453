"""UI-free helpers for the Streamlit dashboard (app.py, app_pages/).

- `filters`: the global filters, their query-parameter form and the analysis filter dict.
- `data`: what the pages make of analysis.load's frames (coverage, integrity, Explore's
  table, pair counts) and incremental ingestion of run directories.
- `results`: the derived results the pages read, as plain functions over a connection (the
  export and the ingest compute them too).
- `runs`: starting, following and cancelling a runner subprocess (one per machine).
- `plan_builder`: the Run page's form as a validated plan, errors mapped to fields.
- `source` (Streamlit): the datasets the dashboard can open, their connections, ingest from the UI.
- `cache` (Streamlit): the Context a page gets and every result cached per data version and filters.
- `sidebar` (Streamlit): the dataset picker, the global filters and their mirror in the URL.
- `ui` (Streamlit): the page helpers (guard, page header, charts).

Everything but `source`, `cache`, `sidebar` and `ui` imports no streamlit and no torch, so
it is unit-testable and safe for the hosted read-only mode.
"""
