"""The local dashboard answers only requests addressed to this machine.

The Run page starts and cancels GPU jobs, and the server listens on localhost. A page on
another site can still reach it: it rebinds its own name to 127.0.0.1 (DNS rebinding), and
the browser then sends `Host: evil.example` and `Origin: http://evil.example` to this
server, reads its answers and opens its WebSocket, which is where Start run and Cancel
are pressed. So every HTTP request and WebSocket upgrade must name localhost, 127.0.0.1 or
[::1] in its Host and, where a browser sends one, in its Origin; anything else gets 403.

Streamlit's own `server.allowedHosts` covers the WebSocket only and is one setting for
every deployment, while the public, read-only dashboard (no Run page) must keep answering
on its public name. So this is an ASGI middleware handed to `st.App` (app.py), enforced
exactly when the Run page exists: whenever the server is not in hosted mode.
"""
from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

LOCAL_HOSTNAMES = frozenset({"localhost", "127.0.0.1", "::1"})
REFUSAL = b"refused: this dashboard answers only on localhost, 127.0.0.1 or [::1]\n"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _hostname(netloc: str) -> str | None:
    """The host name of `host[:port]`, or None for anything that is not exactly that."""
    try:
        parts = urlsplit(f"//{netloc}")
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname.rstrip(".") if parts.hostname else None


def is_local_host(host: str | None) -> bool:
    """Whether a Host header names this machine (localhost, 127.0.0.1 or [::1], any port)."""
    return host is not None and _hostname(host.strip()) in LOCAL_HOSTNAMES


def is_local_origin(origin: str | None) -> bool:
    """Whether an Origin header is absent (not a browser) or an http(s) page on this machine.

    The opaque origin `null` (sandboxed frames, file: pages) is refused.
    """
    if origin is None:
        return True
    parts = urlsplit(origin.strip())
    return parts.scheme in ("http", "https") and not parts.path.strip("/") and is_local_host(parts.netloc)


def request_is_local(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an ASGI request's headers name this machine in Host and Origin (each at most once)."""
    found: dict[bytes, list[str]] = {b"host": [], b"origin": []}
    for name, value in headers:
        key = name.lower()
        if key in found:
            found[key].append(value.decode("latin-1"))
    hosts, origins = found[b"host"], found[b"origin"]
    if len(hosts) != 1 or len(origins) > 1:
        return False
    return is_local_host(hosts[0]) and is_local_origin(origins[0] if origins else None)


def run_page_served() -> bool:
    """Whether this server has a Run page, i.e. is not the hosted read-only dashboard."""
    from streamlit import config
    import streamlit as st

    from store.hosted import hosted_mode_enabled, hosted_secrets

    return not hosted_mode_enabled(os.environ, hosted_secrets(st.secrets, config.get_option("secrets.files")))


class LocalhostOnly:
    """ASGI middleware: 403 for any HTTP request or WebSocket upgrade not addressed to this machine.

    `enforce` decides, once, on the first request (after Streamlit has read its config and
    secrets) whether to check at all; the default is "the server has a Run page".
    """

    def __init__(self, app: ASGIApp, enforce: Callable[[], bool] = run_page_served) -> None:
        self.app = app
        self._enforce = enforce
        self._enforced: bool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            if self._enforced is None:
                self._enforced = self._enforce()
            if self._enforced and not request_is_local(scope.get("headers") or []):
                await self._refuse(scope, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            # closing before accepting makes the server answer the upgrade with 403
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(REFUSAL)).encode())]})
        await send({"type": "http.response.body", "body": REFUSAL})
