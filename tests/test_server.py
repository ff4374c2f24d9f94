"""serve(): /metrics and the health path over a real socket."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from workhorse.adapters import HealthCheck
from workhorse.server import Server, serve


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("jobs_total", "Jobs.", registry=registry).inc(3)
    return registry


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[Server]:
    with serve(port=0, registry=registry) as server:
        yield server


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def raw(server: Server, data: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def test_metrics_serves_the_registry(server: Server) -> None:
    status, content_type, body = get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert b"jobs_total 3.0" in body
    assert get(server.url + "/metrics?name[]=jobs_total")[0] == 200


def test_metrics_speaks_openmetrics_when_asked(server: Server) -> None:
    _, content_type, body = get(
        server.url + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_health_path_is_ok_without_a_health_check(server: Server) -> None:
    assert get(server.url + "/ready") == (200, "text/plain; charset=utf-8", b"OK")


def test_health_path_reports_the_health_check(registry: CollectorRegistry) -> None:
    check = HealthCheck()
    with serve(port=0, registry=registry, health=check, health_path="/healthz") as server:
        assert get(server.url + "/healthz")[::2] == (200, b"OK")
        check.status = 500
        assert get(server.url + "/healthz")[::2] == (500, b"DOWN")


def test_unknown_paths_are_404(server: Server) -> None:
    assert get(server.url + "/nope")[0] == 404


def test_head_answers_without_a_body(server: Server) -> None:
    response = raw(server, b"HEAD /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200")
    assert response.endswith(b"\r\n\r\n")


def test_survives_malformed_and_abandoned_requests(server: Server) -> None:
    assert b"400" in raw(server, b"\x00\x01 garbage\r\n\r\n")  # answered as HTTP/0.9
    raw(server, b"GET /metrics HTTP/1.1\r\nHost")  # gives up mid-headers
    assert raw(server, b"") == b""  # connects and says nothing
    assert raw(server, b"BREW /pot HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 501")
    assert get(server.url + "/ready")[0] == 200


def test_one_server_per_address(registry: CollectorRegistry) -> None:
    with serve(port=0, registry=registry) as first:
        assert serve(port=first.port, registry=registry) is first
        assert serve(port=0, registry=registry) is first
        with pytest.raises(ValueError, match="already serves"):
            serve(port=first.port, registry=CollectorRegistry())
    with serve(port=first.port, registry=registry) as again:  # closed: the port is free
        assert again is not first
        assert get(again.url + "/ready")[0] == 200


def test_close_stops_serving(registry: CollectorRegistry) -> None:
    server = serve(port=0, registry=registry)
    url = server.url
    server.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/ready", timeout=2)


@pytest.mark.parametrize(
    ("port", "error"),
    [
        ("9090", TypeError),
        (9090.0, TypeError),
        (True, TypeError),
        (-1, ValueError),
        (65536, ValueError),
    ],
)
def test_bad_ports_are_rejected(port: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        serve(port=port)  # type: ignore[arg-type]


def test_bad_paths_are_rejected() -> None:
    with pytest.raises(ValueError):
        serve(port=0, health_path="ready")
    with pytest.raises(ValueError):
        serve(port=0, health_path="/x", metrics_path="/x")
