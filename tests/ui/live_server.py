"""A real `streamlit run app.py` and Debian's Chromium, shared by the browser tests and by
`scripts/screenshots.py` (so the pictures in docs/ are taken the way the tests look at pages)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 60
APP_CONNECTED = "[data-testid='stApp'][data-test-connection-state='CONNECTED']"
SCRIPT_FINISHED = "[data-testid='stApp'][data-test-script-state='notRunning']"


class ServerDidNotStart(RuntimeError):
    """`streamlit run` exited or did not answer its health check in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(root: Path, db: Path) -> Iterator[str]:
    """A new `streamlit run app.py` on the store file `db` (the bundled snapshot where it does
    not exist), runs under `root / "runs"`; yields its base URL once healthy, stops it after."""
    port = free_port()
    env = {**os.environ, "SHAPEBENCH_DB": str(db), "SHAPEBENCH_RUNS": str(root / "runs"),
           "SHAPEBENCH_RUN_LOCK": str(root / "run.lock")}
    env.pop("SHAPEBENCH_HOSTED", None)
    env.pop("SHAPEBENCH_SNAPSHOT", None)
    log_path = root / f"server-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://localhost:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).status == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise ServerDidNotStart("streamlit did not start: " + log_path.read_text()[-2000:])
                    time.sleep(0.2)  # polling the health endpoint: there is no event to wait on
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for_app(pg, timeout_ms: int = 60_000) -> None:
    """As Streamlit's e2e tests: connected, then the script has finished running."""
    pg.wait_for_selector(APP_CONNECTED, timeout=timeout_ms)
    pg.wait_for_selector(SCRIPT_FINISHED, timeout=timeout_ms)
