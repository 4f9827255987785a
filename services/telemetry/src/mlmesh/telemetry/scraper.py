"""Scrapes the gateways' `/metrics` for the inference-latency signal.

Inference latency never travels on NATS (it would cost the hot path a publish per request), so the
telemetry service reads the gateways' own histograms the way Prometheus does: every scrape keeps the
cumulative buckets, and p99 over the window is histogram_quantile of (now - window ago).
Inference requests are the gRPC ModelInfer/ModelStreamInfer calls and the HTTP routes under
`/v2/models/.../infer` and `/v1/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import urllib.request
from collections import deque

from prometheus_client.parser import text_string_to_metric_families

from mlmesh.telemetry.domain.signals import bucket_delta, histogram_quantile

log = logging.getLogger("mlmesh.telemetry.scraper")

GRPC_METHODS = ("/inference.GRPCInferenceService/ModelInfer", "/inference.GRPCInferenceService/ModelStreamInfer")


def is_inference(family: str, labels: dict[str, str]) -> bool:
    if family == "mlmesh_rpc_duration_seconds":
        return labels.get("method") in GRPC_METHODS
    if family == "mlmesh_http_request_duration_seconds":
        route = labels.get("route", "")
        return route.endswith("/infer") or (route.startswith("/v1/") and route != "/v1/models")
    return False


def inference_buckets(text: str) -> dict[float, float]:
    """Cumulative buckets (le -> count) of every inference histogram series in one exposition."""
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_bucket") or not is_inference(family.name, sample.labels):
                continue
            le = float(sample.labels["le"])
            out[le] = out.get(le, 0.0) + sample.value
    return out


class Scraper:
    def __init__(self, targets: list[str], *, interval_s: float, window_s: float, timeout_s: float = 2.0):
        self.targets = targets
        self.interval_s = interval_s
        self.window_s = window_s
        self.timeout_s = timeout_s
        self.snapshots: dict[str, deque[tuple[float, dict[float, float]]]] = {t: deque() for t in targets}
        self.errors: dict[str, str] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.targets:
            self._task = asyncio.create_task(self._run(), name="telemetry-scraper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self.scrape(t) for t in self.targets))
            await asyncio.sleep(self.interval_s)

    def _fetch(self, url: str) -> dict[float, float]:
        """Fetch and parse on a worker thread: a large exposition must not hold up the event loop."""
        with urllib.request.urlopen(url, timeout=self.timeout_s) as reply:
            return inference_buckets(reply.read().decode())

    async def scrape(self, target: str) -> None:
        try:
            buckets = await asyncio.to_thread(self._fetch, target)
        except Exception as exc:  # a gateway restarting is normal; the signal just pauses
            if self.errors.get(target) != str(exc):
                log.warning("scrape of %s failed: %s", target, exc)
            self.errors[target] = str(exc)
            return
        self.errors.pop(target, None)
        now = time.time()
        snaps = self.snapshots[target]
        snaps.append((now, buckets))
        while len(snaps) > 2 and snaps[1][0] <= now - self.window_s:
            snaps.popleft()

    def p99(self) -> dict[str, float]:
        """Per target, p99 of the requests seen over the window (NaN while too few scrapes)."""
        out = {}
        for target, snaps in self.snapshots.items():
            if len(snaps) < 2:
                continue
            delta = bucket_delta(snaps[-1][1], snaps[0][1])
            out[target] = histogram_quantile(0.99, delta)
        return {t: v for t, v in out.items() if not math.isnan(v)}
