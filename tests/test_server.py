"""serve(): /metrics and the health path over a real socket."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from workhorse.adapters import HealthCheck
from workhorse.server import Request, Response, Server, serve


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


# -- apps mounted at a prefix (the dashboard's way in) ------------------------------------------


def echo_app(request: Request) -> Response:
    text = f"{request.method} {request.mount}|{request.path}?{request.query} {request.body!r}"
    return Response(200, "text/plain; charset=utf-8", text.encode(), [("X-Echo", "1")])


def send(
    url: str, method: str = "GET", data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def mounted() -> Iterator[Server]:
    routes = {"/ready": lambda accept: (200, "text/plain", b"OK")}
    server = Server("127.0.0.1", 0, routes, ("t",), {"/app": echo_app})
    yield server
    server.close()


def test_a_mounted_app_gets_every_method_below_its_prefix(mounted: Server) -> None:
    assert send(mounted.url + "/app/x/y?a=1")[2] == b"GET /app|/x/y?a=1 b''"
    assert send(mounted.url + "/app/x", "POST", b"hi")[2] == b"POST /app|/x? b'hi'"
    status, headers, body = send(mounted.url + "/app/", "DELETE")
    assert (status, headers["X-Echo"], body) == (200, "1", b"DELETE /app|/? b''")


def test_a_mount_without_its_slash_redirects_to_it(mounted: Server) -> None:
    response = raw(mounted, b"GET /app?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 308") and b"Location: /app/?q=1\r\n" in response


def test_exact_routes_win_and_answer_only_get_and_head(mounted: Server) -> None:
    assert send(mounted.url + "/ready")[::2] == (200, b"OK")
    status, headers, _ = send(mounted.url + "/ready", "POST", b"")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert send(mounted.url + "/application")[0] == 404  # a prefix is a whole segment


def test_a_root_mount_gets_what_no_route_takes() -> None:
    with Server("127.0.0.1", 0, {}, ("t",), {"": echo_app}) as server:
        assert send(server.url + "/anything")[2] == b"GET |/anything? b''"


def test_bodies_are_bounded(mounted: Server) -> None:
    big = b"POST /app/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
    assert raw(mounted, big).startswith(b"HTTP/1.1 413")
    chunked = b"POST /app/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert raw(mounted, chunked).startswith(b"HTTP/1.1 411")
    assert raw(mounted, b"POST /app/x HTTP/1.1\r\nContent-Length: x\r\n\r\n").startswith(
        b"HTTP/1.1 400"
    )
    assert send(mounted.url + "/app/x", "POST", b"ok")[0] == 200


def test_a_failing_app_is_a_500_and_the_server_goes_on() -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    with Server("127.0.0.1", 0, {}, ("t",), {"": broken}) as server:
        assert send(server.url + "/x")[0] == 500
        assert send(server.url + "/x")[0] == 500


def test_close_does_not_wait_for_idle_keep_alive_connections(mounted: Server) -> None:
    with socket.create_connection((mounted.host, mounted.port), timeout=5) as sock:
        sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        mounted.close()  # the connection stays open: a browser's keep-alive
        assert time.monotonic() - started < 5
