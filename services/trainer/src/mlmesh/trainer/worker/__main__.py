"""`python -m mlmesh.trainer.worker --config FILE`: one training rank.

Exit status tells the controller what happened: 0 done (or stopped after a checkpoint), 86 out of
memory, 87 a collective failed or timed out, 88 storage or NATS unreachable, 1 anything else (the
user's model, data or settings), with the traceback on stderr."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from mlmesh.trainer.domain.failures import EXIT_COLLECTIVE_TIMEOUT, EXIT_INFRASTRUCTURE, EXIT_OUT_OF_MEMORY

_COLLECTIVE_HINTS = ("timed out", "timeout", "connection reset", "connection closed", "nccl", "gloo", "broken pipe")


def exit_code_for(exc: BaseException) -> int:
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return EXIT_OUT_OF_MEMORY
    text = f"{type(exc).__name__}: {exc}".lower()
    if "out of memory" in text:
        return EXIT_OUT_OF_MEMORY
    if "address already in use" in text:  # the rendezvous port was taken: retried on a fresh one
        return EXIT_INFRASTRUCTURE
    dist_error = getattr(torch.distributed, "DistError", ())
    if isinstance(exc, dist_error) or (isinstance(exc, RuntimeError) and any(h in text for h in _COLLECTIVE_HINTS)):
        return EXIT_COLLECTIVE_TIMEOUT
    if type(exc).__name__ in ("RpcFailure", "ConnectionError", "TransferError"):
        return EXIT_INFRASTRUCTURE
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlmesh.trainer.worker")
    parser.add_argument("--config", required=True, help="worker config JSON written by the trainer")
    args = parser.parse_args(argv)
    from mlmesh.trainer.worker.config import WorkerConfig
    from mlmesh.trainer.worker.tracing import RankTrace
    from mlmesh.trainer.worker.train import Worker

    worker = None
    traced = RankTrace()
    try:
        cfg = WorkerConfig.load(args.config)
        traced.start(cfg)
        worker = Worker(cfg)
        worker.setup()
        return worker.run()
    except BaseException as exc:  # classified into an exit status the controller understands
        if isinstance(exc, SystemExit):
            raise
        traceback.print_exc()
        code = exit_code_for(exc)
        print(f"mlmesh worker rank {os.environ.get('RANK', '?')} failed: exit {code}", file=sys.stderr, flush=True)
        traced.fail(exc, code)
        traced.close()  # os._exit below skips every finally: send the spans now
        # Skip interpreter teardown: peers may be stuck in a collective that would hang it.
        sys.stderr.flush()
        os._exit(code)
    finally:
        if worker is not None and getattr(worker, "reporter", None) is not None:
            worker.close()
        traced.close()


if __name__ == "__main__":
    sys.exit(main())
