"""Session-wide test settings.

Every `python -m runner run` holds the machine's run lock while it measures; a test session
gets its own lock file (unless one is set), so two test sessions on one machine, or a test
session beside a real run, do not refuse each other's runs.
"""
import os
import tempfile
from pathlib import Path

os.environ.setdefault("SHAPEBENCH_RUN_LOCK", str(Path(tempfile.mkdtemp(prefix="shapebench-tests-")) / "run.lock"))
