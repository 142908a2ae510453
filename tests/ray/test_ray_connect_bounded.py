"""A Ray address that does not answer ends the run in one line within a bound, and connecting
happens before the machine lock is taken: a run stuck reaching its cluster never blocks the
machine for others."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

pytest.importorskip("ray")

from runner.runlock import machine_lock  # noqa: E402
from tests.runner.helpers import REPO_ROOT, cli_env, run_cli, write_plan  # noqa: E402


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once closed


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_address_nobody_answers_is_refused_in_one_line(tmp_path, address):
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(tmp_path / "run.lock")}
    target = address.format(port=_closed_port())
    done = run_cli("run", write_plan(tmp_path / "plan.toml"), "--runs-dir", tmp_path / "runs", "--no-ingest",
                   "--ray", target, env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach Ray at '{target}'"), done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_malformed_address_is_refused_in_one_line(tmp_path):
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(tmp_path / "run.lock")}
    done = run_cli("run", write_plan(tmp_path / "plan.toml"), "--runs-dir", tmp_path / "runs", "--no-ingest",
                   "--ray", "not an address", env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: Ray address 'not an address' is not local, auto")


def test_the_machine_stays_free_while_a_run_is_still_reaching_its_cluster(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(120)
    port = listener.getsockname()[1]
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(tmp_path / "run.lock")}
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(write_plan(tmp_path / "plan.toml")),
                             "--runs-dir", str(tmp_path / "runs"), "--no-ingest", "--ray", f"127.0.0.1:{port}"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        conn, _ = listener.accept()  # the run is now connecting (a port that accepts and never speaks Ray)
        conn.close()
        with machine_lock("another run", tmp_path / "run.lock.measure"):
            pass  # taken at once: the connecting run does not hold it
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        listener.close()
