"""A Ray address that does not answer ends the run in one line within a bound, and connecting
happens before the machine lock is taken: a run stuck reaching its cluster never blocks the
machine for others. A port that accepts connections but does not answer as Ray's GCS (a gRPC
server) is refused within RAY_ANSWER_TIMEOUT_S, tried on real local socket servers."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("ray")

from runner.lifecycle import RunError  # noqa: E402
from runner.ray_exec import RAY_ANSWER_TIMEOUT_S, check_reachable  # noqa: E402
from runner.runlock import holder, machine_lock  # noqa: E402
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


class NotRay:
    """A local TCP server that accepts every connection and then answers `reply` (None: says
    nothing and keeps the connection open); `accepted` holds when each connection came."""

    def __init__(self, reply: bytes | None, close: bool = False) -> None:
        self.reply, self.close = reply, close
        self.accepted: list[float] = []
        self.conns: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted.append(time.monotonic())
            self.conns.append(conn)
            if self.reply:
                conn.sendall(self.reply)
            if self.close:
                conn.close()

    def stop(self) -> None:
        self.listener.close()
        for conn in self.conns:
            conn.close()


SERVERS = {
    "silent": dict(reply=None),
    "garbage": dict(reply=b"\x17\x03\x03garbage that is no protocol at all\n"),
    "http1": dict(reply=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
    "hangs up": dict(reply=None, close=True),
}


@pytest.fixture(params=list(SERVERS))
def not_ray(request):
    server = NotRay(**SERVERS[request.param])
    yield request.param, server
    server.stop()


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_port_that_accepts_but_is_not_ray_is_refused_within_the_bound(not_ray, scheme):
    kind, server = not_ray
    address = f"{scheme}127.0.0.1:{server.port}"
    started = time.monotonic()
    with pytest.raises(RunError) as info:
        check_reachable(address)
    took = time.monotonic() - started
    message = str(info.value)
    role = "Ray Client server" if scheme else "GCS"
    assert "\n" not in message
    assert message.startswith(f"Ray address {address!r} accepts connections but does not answer as a Ray "
                              f"cluster ({role})"), message
    if kind == "silent":
        assert message.endswith(f"within {RAY_ANSWER_TIMEOUT_S:.0f} s")
        assert RAY_ANSWER_TIMEOUT_S - 0.5 < took < RAY_ANSWER_TIMEOUT_S + 2
    else:
        assert took < 2, f"{kind}: answered at once, so refused at once"


def test_a_grpc_server_passes_the_probe():
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        check_reachable(f"127.0.0.1:{port}")
        check_reachable(f"ray://127.0.0.1:{port}")
    finally:
        server.stop(None)


@pytest.mark.parametrize("kind", ["silent", "garbage"])
def test_cli_refuses_a_port_that_is_not_ray_in_one_line_and_leaves_the_machine_free(tmp_path, kind):
    server = NotRay(**SERVERS[kind])
    lock = tmp_path / "run.lock"
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(lock)}
    address = f"127.0.0.1:{server.port}"
    try:
        done = run_cli("run", write_plan(tmp_path / "plan.toml"), "--runs-dir", tmp_path / "runs", "--no-ingest",
                       "--ray", address, env=env, timeout=120)
        ended = time.monotonic()
    finally:
        server.stop()
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: Ray address {address!r} accepts connections but does not answer as a Ray "
                               "cluster (GCS)"), done.stderr
    [accepted] = server.accepted
    assert ended - accepted < RAY_ANSWER_TIMEOUT_S + 5  # refused within the bound, not after Ray's own minutes
    assert not (tmp_path / "runs").exists()
    measure_lock = lock.with_name(lock.name + ".measure")
    assert holder(measure_lock) is None
    with machine_lock("another run", measure_lock):
        pass  # free at once: the refused run never took it
