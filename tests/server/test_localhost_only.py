"""The local dashboard (the one with a Run page) answers only requests addressed to this machine.

A page on another site that rebinds its name to 127.0.0.1 makes the browser send its own name
as Host (and Origin); such requests and WebSocket upgrades must be refused, while localhost,
127.0.0.1 and [::1] keep working. Checked on a real `streamlit run app.py` with raw requests.
"""
from __future__ import annotations

import base64
import http.client
import os
from urllib.parse import urlsplit

import pytest

from dashboard.localhost_only import is_local_host, is_local_origin, run_page_served
from tests.ui.live_server import streamlit_server

WS_PATH = "/_stcore/stream"


def _request(base: str, path: str, headers: dict[str, str]) -> int:
    """The status of one GET with exactly these headers (Host included)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def _upgrade(base: str, host: str, origin: str | None) -> int:
    """The status of a WebSocket upgrade of Streamlit's stream: 101 when accepted."""
    headers = {"Host": host, "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    if origin is not None:
        headers["Origin"] = origin
    return _request(base, WS_PATH, headers)


@pytest.fixture(scope="module")
def local_dashboard(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("dashboard")
    with streamlit_server(root, root / "absent.duckdb") as base:
        yield base


def test_foreign_host_gets_403_on_pages_and_websocket(local_dashboard):
    port = urlsplit(local_dashboard).port
    assert _request(local_dashboard, "/", {"Host": "evil.example"}) == 403
    assert _request(local_dashboard, "/", {"Host": f"evil.example:{port}"}) == 403
    assert _request(local_dashboard, "/_stcore/health", {"Host": "evil.example"}) == 403
    assert _upgrade(local_dashboard, f"evil.example:{port}", f"http://evil.example:{port}") == 403
    assert _upgrade(local_dashboard, f"evil.example:{port}", None) == 403


def test_foreign_origin_gets_403_even_with_a_local_host(local_dashboard):
    port = urlsplit(local_dashboard).port
    assert _upgrade(local_dashboard, f"localhost:{port}", f"http://evil.example:{port}") == 403
    assert _upgrade(local_dashboard, f"localhost:{port}", "null") == 403
    assert _request(local_dashboard, "/", {"Host": f"localhost:{port}", "Origin": "http://evil.example"}) == 403


def test_localhost_names_still_open_the_page_and_the_websocket(local_dashboard):
    port = urlsplit(local_dashboard).port
    for host in ("localhost", "127.0.0.1", "[::1]"):
        assert _request(local_dashboard, "/", {"Host": f"{host}:{port}"}) == 200, host
        assert _upgrade(local_dashboard, f"{host}:{port}", f"http://{host}:{port}") == 101, host
    assert _upgrade(local_dashboard, f"localhost:{port}", None) == 101  # not a browser: no Origin


@pytest.mark.parametrize("host", ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "user@localhost",
                                  "localhost:notaport", "localhost/x", "", "0.0.0.0"])
def test_hosts_that_only_look_local_are_refused(host):
    assert not is_local_host(host)


def test_origins_must_be_web_pages_on_this_machine():
    assert is_local_origin(None)
    assert is_local_origin("http://localhost:8501") and is_local_origin("https://[::1]:1")
    for origin in ("null", "file://", "http://evil.example", "chrome-extension://localhost", "http://localhost/x"):
        assert not is_local_origin(origin), origin


def test_hosted_dashboard_answers_on_its_public_name(monkeypatch):
    """The public read-only dashboard has no Run page: the check stays off there."""
    monkeypatch.setenv("SHAPEBENCH_HOSTED", "1")
    assert run_page_served() is False
    monkeypatch.delenv("SHAPEBENCH_HOSTED")
    assert run_page_served() is True
