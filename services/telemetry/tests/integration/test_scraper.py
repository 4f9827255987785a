"""The gateway scraper against real HTTP `/metrics` endpoints on loopback: p99 over the window from
two scrapes, and a target that is down or serves garbage pauses the signal instead of killing it."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram, start_http_server

from mlmesh.telemetry.scraper import Scraper

pytestmark = pytest.mark.timeout(60)
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture
def gateway_metrics():
    registry = CollectorRegistry()
    latency = Histogram(
        "mlmesh_rpc_duration_seconds", "RPC handling time", ["service", "method"], registry=registry,
        buckets=(0.01, 0.1, 0.5, 1.0),
    )  # fmt: skip
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", latency
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def garbage_metrics():
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"mlmesh_rpc_duration_seconds_bucket{le= this is not an exposition\n"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_p99_over_the_window_from_real_scrapes(gateway_metrics):
    url, latency = gateway_metrics
    latency.labels("inference-gateway", INFER).observe(0.9)  # before the window: not counted
    scraper = Scraper([url], interval_s=1, window_s=60)
    await scraper.scrape(url)
    assert scraper.p99() == {}  # one scrape: no window yet
    for _ in range(100):
        latency.labels("inference-gateway", INFER).observe(0.05)
    latency.labels("inference-gateway", "/mlmesh.gateway.v1.DeploymentService/GetDeployment").observe(0.9)
    await scraper.scrape(url)
    p99 = scraper.p99()[url]
    assert 0.01 < p99 <= 0.1, p99  # the 100 inference calls of 50 ms; the slow non-inference RPC is not one
    assert scraper.errors == {}


async def test_a_target_down_or_unparsable_pauses_only_its_own_signal(gateway_metrics, garbage_metrics):
    url, latency = gateway_metrics
    down = f"http://127.0.0.1:{_closed_port()}/metrics"
    scraper = Scraper([url, down, garbage_metrics], interval_s=1, window_s=60, timeout_s=1)
    for _ in range(2):
        latency.labels("inference-gateway", INFER).observe(0.05)
        for target in scraper.targets:
            await scraper.scrape(target)
    assert set(scraper.errors) == {down, garbage_metrics}
    assert set(scraper.p99()) == {url}
