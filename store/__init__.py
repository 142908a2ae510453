"""The DuckDB store: schema, ingestion of run directories, read queries.

Never imports torch: the hosted read-only dashboard uses this package without it.
"""
