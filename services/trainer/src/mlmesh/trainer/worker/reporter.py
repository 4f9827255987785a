"""Worker -> controller reports over core NATS: heartbeats from every rank, progress, checkpoint
and result messages from rank 0. Plain NATS (not JetStream): a lost heartbeat is replaced by the
next one, and the controller keeps what matters (checkpoints, results) in its run record.

NATS runs on a background thread with its own event loop, so a heartbeat keeps flowing while the
training thread is busy in a long step; a process that is gone stops sending, which is the signal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from pathlib import Path

from mlmesh.common.contracts import WORKER, inbox_prefix, worker_report_subject
from mlmesh.trainer.worker.config import NATS_CREDS_ENV


def subject(run_id: str, kind: str) -> str:
    return worker_report_subject(run_id, kind)


class Reporter:
    def __init__(self, nats_url: str, run_id: str, rank: int, heartbeat_s: float, progress_file: str = ""):
        self.run_id = run_id
        self.rank = rank
        self.step = 0
        self._heartbeat_s = heartbeat_s
        self._progress_file = Path(progress_file) if progress_file and rank == 0 else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        if nats_url:
            self._start(nats_url)

    def _start(self, url: str) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                import nats
                from nats.aio.client import RawCredentials

                creds = os.environ.get(NATS_CREDS_ENV)
                auth = {}
                if creds:  # the worker identity: it may publish its reports, nothing else
                    auth = {"user_credentials": RawCredentials(creds), "inbox_prefix": inbox_prefix(WORKER)}
                self._nc = loop.run_until_complete(
                    nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1, **auth)
                )
            except BaseException as exc:  # reported to the caller below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._beat_task = loop.create_task(self._beat())
            loop.run_forever()

        self._thread = threading.Thread(target=main, name="mlmesh-reporter", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise ConnectionError(f"cannot reach NATS at {url}: {errors[0]}")

    async def _beat(self) -> None:
        while not self._stopped.is_set():
            await self._publish("heartbeat", {"rank": self.rank, "step": self.step, "time": time.time()})
            await asyncio.sleep(self._heartbeat_s)

    async def _publish(self, kind: str, payload: dict) -> None:
        # A reconnecting client buffers; a closed one has nothing left to tell.
        with contextlib.suppress(Exception):
            await self._nc.publish(subject(self.run_id, kind), json.dumps(payload).encode())

    def send(self, kind: str, payload: dict) -> None:
        """Thread-safe publish; progress lines also go to the progress file (rank 0)."""
        if kind == "progress" and self._progress_file is not None:
            with self._progress_file.open("a") as f:
                f.write(json.dumps(payload) + "\n")
        if self._loop is not None and self._nc is not None:
            fut = asyncio.run_coroutine_threadsafe(self._publish(kind, payload), self._loop)
            fut.result(timeout=5)

    def close(self) -> None:
        self._stopped.set()
        if self._loop is None or self._nc is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._nc.drain(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
