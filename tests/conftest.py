"""Session-wide test settings.

Every `python -m runner run` holds the machine's run lock while it measures; a test session
gets its own lock file (unless one is set), so two test sessions on one machine, or a test
session beside a real run, do not refuse each other's runs.
"""
import os
import tempfile
from pathlib import Path

os.environ.setdefault("SHAPEBENCH_RUN_LOCK", str(Path(tempfile.mkdtemp(prefix="shapebench-tests-")) / "run.lock"))


import pytest  # noqa: E402 - after the lock setting, which must precede any runner import


@pytest.fixture(scope="module")
def bundled_con():
    """A connection to the bundled snapshot (data/snapshot), as a fresh clone opens it; closed after the module."""
    from store.dataset import BUNDLED_SNAPSHOT
    from store.snapshot import open_snapshot

    connection = open_snapshot(BUNDLED_SNAPSHOT)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def bundled_v2_runs(tmp_path_factory) -> Path:
    """The bundled protocol-2 run archives (data/runs-v2/*.tar.gz) extracted once per test
    session into one directory of run directories: several specifications read the same runs."""
    import tarfile

    root = tmp_path_factory.mktemp("runs-v2")
    for archive in sorted((Path(__file__).resolve().parents[1] / "data" / "runs-v2").glob("*.tar.gz")):
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    return root
