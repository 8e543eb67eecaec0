"""The box's small HTTP side: /metrics for Prometheus and /healthz, with an address allowlist and basic auth."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from appliance import metrics

_LOGGER = logging.getLogger(__name__)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        _LOGGER.debug("http %s", format % args)


def build_app(settings: Any, health: Callable[[], dict[str, Any]],
              only_health: bool = False) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: refuses addresses outside metrics.allow_from (403) and wrong credentials (401).
    ``only_health`` (safe mode, see safemode.py): every other path answers 503."""
    prom = make_wsgi_app(metrics.REGISTRY)
    auth = settings.basic_auth
    expected = None
    if auth is not None:
        expected = "Basic " + base64.b64encode(f"{auth.user}:{auth.password}".encode()).decode()

    def local(addr: str) -> bool:
        """The box asking itself (the update health check): loopback, or its own listen address."""
        try:
            return ipaddress.ip_address(addr).is_loopback or addr == settings.host
        except ValueError:
            return False

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        addr = environ.get("REMOTE_ADDR", "")
        path = environ.get("PATH_INFO", "/")
        if not settings.allows(addr) and not (path == "/healthz" and local(addr)):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"forbidden\n"]
        if path == "/healthz":
            # Health carries no personal data, so it stays open to the allowed addresses without auth:
            # the image's first-boot checks and load balancers read it.
            state = health()
            status = "200 OK" if state.get("ok") else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(state, ensure_ascii=False).encode()]
        if only_health:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"safe mode: the box takes no calls; see /healthz\n"]
        if expected is not None and not hmac.compare_digest(environ.get("HTTP_AUTHORIZATION", ""), expected):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="registratura"'),
                                                ("Content-Type", "text/plain")])
            return [b"unauthorized\n"]
        if path in ("/metrics", "/"):
            return prom(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def serve(settings: Any, health: Callable[[], dict[str, Any]], only_health: bool = False) -> _Server:
    """Start serving in a daemon thread; returns the server (``shutdown()`` to stop)."""
    server = make_server(settings.host, settings.port, build_app(settings, health, only_health),
                         server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
