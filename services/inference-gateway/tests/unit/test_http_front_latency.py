"""The HTTP front answers keep-alive requests without Nagle's delay: its socket was made with
protocol 0, so asyncio never set TCP_NODELAY and every reply with a body waited for the client's
delayed ACK (~40 ms a request on one connection)."""

from __future__ import annotations

import asyncio
import http.client
import statistics
import time

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from mlmesh.gateway.http_front import HttpFront

pytestmark = pytest.mark.timeout(30)


def _timed_requests(port: int, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            connection.request("GET", "/thing")
            reply = connection.getresponse()
            assert reply.status == 200 and reply.read()
            times.append(time.perf_counter() - started)
    finally:
        connection.close()
    return times


async def test_keep_alive_replies_are_not_delayed():
    app = FastAPI()

    @app.get("/thing")
    async def thing():
        return JSONResponse({"body": "x" * 100})  # headers and body go out as two writes

    front = HttpFront(app, "127.0.0.1", 0, shutdown_grace_s=1)
    await front.start()
    try:
        times = await asyncio.to_thread(_timed_requests, front.port, 12)
    finally:
        await front.stop()
    assert statistics.median(times[2:]) < 0.02, times
