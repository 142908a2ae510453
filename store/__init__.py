"""The DuckDB store: schema, ingestion of run directories, snapshots, kept derived results.

What writes the store lives here; reads of the measured data go through analysis.load, the
one room for queries (so a page, a report and the CLI read the same frames the same way).

Never imports torch: the hosted read-only dashboard uses this package without it.
"""
