"""/metrics and /healthz: address allowlist and basic auth, through the real WSGI app and a real socket."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from appliance.boxproc import free_port
from appliance.settings import settings_from_mapping
from appliance.web import serve


def _listen() -> str:
    import socket

    return f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"


def _server(metrics: dict, tmp_path: Path):
    settings = settings_from_mapping({"metrics": metrics, "data_dir": str(tmp_path)}, tmp_path)
    return serve(settings.metrics, lambda: {"ok": True, "active_calls": 0})


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_and_health_open_by_default(tmp_path):
    server = _server({"listen": _listen()}, tmp_path)
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        code, body = _get(base + "/metrics")
        assert code == 200 and "registratura_active_calls" in body
        code, body = _get(base + "/healthz")
        assert code == 200 and json.loads(body)["ok"] is True
        assert _get(base + "/nope")[0] == 404
    finally:
        server.shutdown()


def test_basic_auth_guards_metrics_not_health(tmp_path):
    server = _server({"listen": _listen(), "basic_auth": {"user": "prom", "password": "s3cret"}}, tmp_path)
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert _get(base + "/metrics")[0] == 401
        assert _get(base + "/metrics", ("prom", "wrong"))[0] == 401
        assert _get(base + "/metrics", ("prom", "s3cret"))[0] == 200
        assert _get(base + "/healthz")[0] == 200
    finally:
        server.shutdown()


@pytest.mark.parametrize(("allow", "code"), [(["10.0.0.0/8"], 403), (["127.0.0.0/8"], 200)])
def test_address_allowlist(tmp_path, allow, code):
    server = _server({"listen": _listen(), "allow_from": allow}, tmp_path)
    try:
        assert _get(f"http://127.0.0.1:{server.server_port}/metrics")[0] == code
    finally:
        server.shutdown()


def test_the_box_itself_may_always_ask_healthz(tmp_path):
    """The update health check runs on the box: /healthz answers loopback even when the allowlist is the LAN;
    /metrics still does not."""
    server = _server({"listen": _listen(), "allow_from": ["10.0.0.0/8"]}, tmp_path)
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/metrics")[0] == 403
    finally:
        server.shutdown()
