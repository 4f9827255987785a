"""`mlmesh submit` and `mlmesh jobs list|get|cancel|watch|explain`."""

from __future__ import annotations

import json
import queue
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as api
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2 as trainer_api
from mlmesh.cli.common import (
    EndpointOpt,
    JsonOpt,
    TimeoutOpt,
    age,
    enum_short,
    print_message,
    scheduler,
    to_dict,
)
from mlmesh.cli.output import CliError, console, err_console, print_table
from mlmesh.common.quantities import fmt_bytes, fmt_cpu
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S, Client, RpcFailure, backoff_delays, trainer_client
from mlmesh.sdk.jobspec import JobSpecError, load_job_spec

jobs_app = typer.Typer(help="List, inspect, watch and cancel jobs.", no_args_is_help=True, rich_markup_mode=None)

TERMINAL = frozenset(
    {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_SKIPPED}
)
_STATE_STYLE = {
    job_pb2.JOB_STATE_PENDING: "yellow",
    job_pb2.JOB_STATE_ADMITTED: "cyan",
    job_pb2.JOB_STATE_RUNNING: "blue",
    job_pb2.JOB_STATE_SUCCEEDED: "green",
    job_pb2.JOB_STATE_FAILED: "red",
    job_pb2.JOB_STATE_CANCELLED: "magenta",
    job_pb2.JOB_STATE_PREEMPTED: "yellow",
    job_pb2.JOB_STATE_RETRYING: "yellow",
    job_pb2.JOB_STATE_SKIPPED: "dim",
}
# A watch stream is re-opened at this deadline (clients always set one); the snapshot that starts
# each stream means no change is lost in between.
WATCH_STREAM_S = 300.0
WATCH_MAX_FAILURES = 5
# Training progress comes from the trainer's GetRun, polled while a train/finetune job runs.
TRAINER_KINDS = frozenset({job_pb2.JOB_KIND_TRAIN, job_pb2.JOB_KIND_FINETUNE})
PROGRESS_POLL_S = 1.0
PROGRESS_RPC_S = 2.0
PROGRESS_BACKOFF_S = 10.0  # after a failed poll: the trainer may be down; stay quiet meanwhile


def state_name(state: int) -> str:
    return enum_short(job_pb2.JobState, state, "JOB_STATE_")


def kind_name(kind: int) -> str:
    return enum_short(job_pb2.JobKind, kind, "JOB_KIND_").lower()


def styled_state(state: int) -> str:
    return f"[{_STATE_STYLE.get(state, 'white')}]{state_name(state)}[/]"


def parse_state(text: str) -> int:
    name = text.strip().upper().replace("-", "_")
    for candidate in (name, "JOB_STATE_" + name):
        if candidate in list(job_pb2.JobState.keys()) and candidate != "JOB_STATE_UNSPECIFIED":
            return job_pb2.JobState.Value(candidate)
    names = ", ".join(state_name(v).lower() for v in job_pb2.JobState.values() if v)
    raise CliError(f"--state: unknown state {text!r}", hint=f"one of {names}", exit_code=2)


def parse_labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--label: expected key=value, got {item!r}", exit_code=2)
        labels[key] = value
    return labels


def _workers(spec: job_pb2.JobSpec) -> str:
    if not spec.HasField("workers"):
        return ""
    r = spec.workers.resources
    parts = [f"{r.gpus} GPU"] if r.gpus else []
    parts += [f"{fmt_cpu(r.cpu_millis)} CPU"] if r.cpu_millis else []
    parts += [fmt_bytes(r.memory_bytes)] if r.memory_bytes else []
    return f"{spec.workers.count} x ({', '.join(parts) or 'nothing'})"


def _ts(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts.seconds)) + f" ({age(ts)} ago)"


# --- submit --------------------------------------------------------------------------------------


def submit(
    file: Annotated[Path, typer.Argument(help="Job YAML file (see examples/).", show_default=False)],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow the job until it finishes.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate on the server; create nothing.")] = False,
    request_id: Annotated[
        str | None,
        typer.Option("--request-id", help="Idempotency key [a-z0-9_-]: resubmitting with it returns the same job."),
    ] = None,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Submit a job from a YAML file and print its id (with --watch: follow it to the end)."""
    try:
        spec = load_job_spec(file)
    except JobSpecError as exc:
        raise CliError(str(exc), hint=f"fix {file}; examples/command.yaml shows the format", exit_code=2) from None
    # Always send a key: the client retries on UNAVAILABLE, and a retried submit must not make a second job.
    request = api.SubmitJobRequest(spec=spec, request_id=request_id or uuid.uuid4().hex, dry_run=dry_run)
    with scheduler(endpoint, timeout) as client:
        job = client.call(client.stub.SubmitJob, request).job
        if json_output and not watch:
            print_message(job)
            return
        if dry_run:
            console.print(
                f"[green]valid[/green]: {kind_name(job.spec.kind)} job {job.spec.name} for team {job.meta.team}, "
                f"queue {job.spec.queue or '-'}, priority class {job.spec.priority_class or '-'}"
            )
            return
        if not watch:
            sys.stdout.write(job.meta.id + "\n")
            return
        if not json_output:
            console.print(f"submitted [bold]{job.meta.id}[/bold] ({job.spec.name})")
        try:
            final = follow(client, job, json_output=json_output)
        except KeyboardInterrupt:
            err_console.print(
                f"stopped watching; job {job.meta.id} keeps going (`mlmesh jobs watch {job.meta.id}`)", markup=False
            )
            raise typer.Exit(130) from None
    finish(final)


def finish(job: job_pb2.Job) -> None:
    """Exit 0 on SUCCEEDED; otherwise one error line with the last reason."""
    if job.status.state == job_pb2.JOB_STATE_SUCCEEDED:
        return
    why = ": ".join(p for p in (job.status.reason, job.status.message) if p)
    raise CliError(
        f"job {job.meta.id} {state_name(job.status.state).lower()}" + (f": {why}" if why else ""),
        hint=f"`mlmesh jobs get {job.meta.id}` shows its history",
    )


# --- watching ------------------------------------------------------------------------------------


def watch_stream(client: Client, job_ids: list[str], team: str = "") -> Iterator[api.WatchJobsResponse]:
    """WatchJobs with send_initial, re-opened when its deadline passes or the server drops it.

    Each stream starts with a snapshot, so a reconnect loses no state; callers de-duplicate."""
    delays = backoff_delays(initial=0.2, maximum=5.0)
    failures = 0
    while True:
        request = api.WatchJobsRequest(team=team, job_ids=job_ids, send_initial=True)
        try:
            for response in client.stream(client.stub.WatchJobs, request, timeout=WATCH_STREAM_S):
                failures = 0
                yield response
        except RpcFailure as exc:
            if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                continue
            if exc.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise
            failures += 1
            if failures > WATCH_MAX_FAILURES:
                raise
        else:
            failures += 1  # the server ended the stream (shutting down): reconnect, within limits
            if failures > WATCH_MAX_FAILURES:
                raise CliError("the scheduler keeps closing the watch stream", hint="check `mlmesh status`")
        time.sleep(next(delays))


def with_ticks(items: Iterator, every_s: float = PROGRESS_POLL_S) -> Iterator:
    """`items`, plus None whenever `every_s` passes without one: a stream only speaks on state
    changes, and progress is polled in between. The stream is read on a daemon thread; its
    exceptions come out here. Ctrl-C still interrupts the caller's thread."""
    q: queue.Queue = queue.Queue()
    end = object()

    def pump() -> None:
        try:
            for item in items:
                q.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
        else:
            q.put(end)

    threading.Thread(target=pump, name="mlmesh-watch", daemon=True).start()
    while True:
        try:
            item = q.get(timeout=every_s)
        except queue.Empty:
            yield None
            continue
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def progress_text(p: run_pb2.Progress) -> str:
    """`step 3/6  loss 2.1034  1,234 tok/s  ETA 12s  MFU 41.0%` (MFU only when known)."""
    parts = [f"step {p.step}/{p.total_steps}" if p.total_steps else f"step {p.step}", f"loss {p.loss:.4f}"]
    if p.tokens_per_second > 0:
        parts.append(f"{p.tokens_per_second:,.0f} tok/s")
    if not p.total_steps or p.step < p.total_steps:
        parts.append(f"ETA {_duration(p.eta.ToTimedelta().total_seconds())}")
    if p.mfu > 0:
        parts.append(f"MFU {p.mfu:.1%}")
    return "  ".join(parts)


class ProgressPoller:
    """Training progress of running train/finetune jobs, read from the trainer (GetRun on the job's
    run) at most once per `interval_s` per job. Best effort: with no trainer endpoint, or one that
    does not answer, the watch goes on without progress and without errors."""

    def __init__(self, interval_s: float = PROGRESS_POLL_S, make_client=trainer_client):
        self.interval_s = interval_s
        self._make_client = make_client
        self._client: Client | None = None
        self._disabled = False
        self._quiet_until = 0.0
        self._last_poll: dict[str, float] = {}
        self._shown: dict[str, tuple[str, int]] = {}

    def _trainer(self) -> Client | None:
        if self._client is None and not self._disabled:
            try:
                self._client = self._make_client()
            except CliError:  # no trainer endpoint known (or no token): no progress
                self._disabled = True
        return self._client

    def poll(self, job: job_pb2.Job, *, final: bool = False) -> run_pb2.Progress | None:
        """The job's progress if it is due, known and not shown yet; `final` (the job just ended)
        skips the rate limit, so the last steps are shown even when they were quick."""
        st = job.status
        if job.spec.kind not in TRAINER_KINDS or not st.run_id:
            return None
        if not final and st.state != job_pb2.JOB_STATE_RUNNING:
            return None
        now = time.monotonic()
        if now < self._quiet_until or (not final and now - self._last_poll.get(job.meta.id, -1e9) < self.interval_s):
            return None
        self._last_poll[job.meta.id] = now
        client = self._trainer()
        if client is None:
            return None
        try:
            request = trainer_api.GetRunRequest(run_id=st.run_id)
            run = client.call(client.stub.GetRun, request, timeout=PROGRESS_RPC_S).run
        except CliError:
            self._quiet_until = now + PROGRESS_BACKOFF_S
            return None
        p = run.progress
        key = (run.run_id, p.step)
        if not p.step or self._shown.get(job.meta.id) == key:
            return None
        self._shown[job.meta.id] = key
        return p

    def poll_all(self, jobs: Iterable[job_pb2.Job]) -> list[tuple[job_pb2.Job, run_pb2.Progress]]:
        return [(j, p) for j in jobs if (p := self.poll(j)) is not None]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _print_progress(job: job_pb2.Job, p: run_pb2.Progress) -> None:
    line = Text(f"{time.strftime('%H:%M:%S')}  {job.meta.id}  {job.spec.name}  ")
    line.append(progress_text(p), style="blue")
    console.print(line, soft_wrap=True)


def _changed(seen: dict[str, tuple], job: job_pb2.Job) -> bool:
    key = (job.status.state, job.status.attempt, job.status.reason)
    if seen.get(job.meta.id) == key:
        return False
    seen[job.meta.id] = key
    return True


class _JobView:
    """What `submit --watch` shows: the job's state, attempt, last reason, its pipeline steps and
    recent transitions."""

    def __init__(self, job: job_pb2.Job):
        self.job = job
        self.started = time.monotonic()
        self.transitions: list[tuple[str, int, str]] = []
        self.children: dict[str, job_pb2.Job] = {}  # pipeline step name -> latest child job
        self.progress = ""  # the job's latest training progress, if it trains

    def update(self, job: job_pb2.Job) -> None:
        if job.meta.id != self.job.meta.id:
            self.children[job.pipeline_step] = job
            return
        self.job = job
        msg = ": ".join(p for p in (job.status.reason, job.status.message) if p)
        self.transitions.append((time.strftime("%H:%M:%S"), job.status.state, msg))

    def _steps(self) -> list[tuple[str, str, int]]:
        known = {st.name: (st.job_id, st.state) for st in self.job.status.steps}
        rows = []
        for step in self.job.spec.pipeline.steps:
            job_id, state = known.get(step.name, ("", job_pb2.JOB_STATE_UNSPECIFIED))
            child = self.children.get(step.name)
            if child is not None:
                job_id, state = child.meta.id, child.status.state
            rows.append((step.name, job_id, state))
        return rows

    def __rich__(self):
        j, s = self.job, self.job.status
        head = Table.grid(padding=(0, 2))
        head.add_row("job", f"[bold]{j.meta.id}[/bold] {j.spec.name} ({kind_name(j.spec.kind)})")
        head.add_row("state", styled_state(s.state) + (f"  attempt {s.attempt}" if s.attempt else ""))
        head.add_row("queue", j.spec.queue or "-")
        head.add_row("elapsed", f"{time.monotonic() - self.started:.0f}s")
        if self.progress:
            head.add_row("progress", Text(self.progress))
        if s.reason or s.message:
            head.add_row("last", Text(": ".join(p for p in (s.reason, s.message) if p)))
        parts = [head]
        steps = self._steps()
        if steps:
            table = Table("step", "job", "state", title="steps", title_justify="left")
            for name, job_id, state in steps:
                table.add_row(name, job_id, styled_state(state) if state else "")
            parts.append(table)
        if self.transitions:
            history = Table("time", "state", "reason", title="transitions", title_justify="left")
            for when, state, msg in self.transitions[-10:]:
                history.add_row(when, styled_state(state), Text(msg))
            parts.append(history)
        return Group(*parts)


def follow(client: Client, job: job_pb2.Job, *, json_output: bool = False) -> job_pb2.Job:
    """Watch one job (and a pipeline's steps) until it is terminal; returns its last version.
    Ctrl-C raises KeyboardInterrupt."""
    seen: dict[str, tuple] = {}
    view = _JobView(job)
    pipeline = job.spec.kind == job_pb2.JOB_KIND_PIPELINE
    # A pipeline's steps are separate jobs: watch the team's jobs and keep the pipeline's own.
    ids = [] if pipeline else [job.meta.id]
    live = Live(view, console=console, refresh_per_second=4) if console.is_terminal and not json_output else None
    # JSON output stays one WatchJobsResponse per line: no progress there.
    progress = ProgressPoller() if not json_output else None
    tracked: dict[str, job_pb2.Job] = {}  # this job and its steps, by id, as last seen

    def show(j: job_pb2.Job, p: run_pb2.Progress) -> None:
        if j.meta.id == job.meta.id:
            view.progress = progress_text(p)
        if live is None:
            _print_progress(j, p)

    if live is not None:
        live.start()
    try:
        if job.status.state in TERMINAL:
            return job
        for response in with_ticks(watch_stream(client, ids, job.meta.team)):
            for j, p in progress.poll_all(list(tracked.values())) if progress is not None else ():
                show(j, p)
            if response is None or not response.HasField("job"):
                continue
            got = response.job
            mine = got.meta.id == job.meta.id or (pipeline and got.parent_job_id == job.meta.id)
            if not mine or not _changed(seen, got):
                continue
            tracked[got.meta.id] = got
            # On the way out, the last steps may have come and gone since the previous poll.
            final = progress.poll(got, final=True) if progress is not None and got.status.state in TERMINAL else None
            if final is not None:
                show(got, final)
            view.update(got)
            if json_output:
                sys.stdout.write(_compact(response) + "\n")
                sys.stdout.flush()
            elif live is None:
                _print_change(got, response.previous_state)
            if got.meta.id == job.meta.id:
                job = got
                if job.status.state in TERMINAL:
                    return job
    finally:
        if live is not None:
            live.stop()
        if progress is not None:
            progress.close()
    return job


def _print_change(job: job_pb2.Job, previous: int) -> None:
    msg = ": ".join(p for p in (job.status.reason, job.status.message) if p)
    arrow = f"{styled_state(previous)} → " if previous else ""
    line = Text.from_markup(f"{time.strftime('%H:%M:%S')}  {job.meta.id}  {job.spec.name}  {arrow}")
    line.append_text(Text.from_markup(styled_state(job.status.state)))
    if job.status.attempt > 1:
        line.append(f"  attempt {job.status.attempt}")
    if msg:
        line.append(f"  {msg}")
    console.print(line, soft_wrap=True)


# --- jobs ... ------------------------------------------------------------------------------------


@jobs_app.command("list")
def list_jobs(
    state: Annotated[list[str] | None, typer.Option("--state", "-s", help="Only these states (repeatable).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value (repeatable, ANDed).")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only jobs of this queue.")] = None,
    team: Annotated[str | None, typer.Option("--team", help="Another team's jobs (admins).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many jobs, newest first.", min=1)] = 100,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """List jobs, newest first."""
    request = api.ListJobsRequest(team=team or "", queue=queue or "", states=[parse_state(s) for s in state or []])
    request.label_selector.match_labels.update(parse_labels(label or []))
    jobs: list[job_pb2.Job] = []
    token = ""
    with scheduler(endpoint, timeout) as client:
        while len(jobs) < limit:
            request.page_size = min(1000, limit - len(jobs))
            request.page_token = token
            page = client.call(client.stub.ListJobs, request)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
    if json_output:
        print_message(api.ListJobsResponse(jobs=jobs[:limit], next_page_token=token))
        return
    now = time.time()
    print_table(
        "jobs",
        ["id", "name", "kind", "state", "queue", "attempt", "age", "reason"],
        [
            (
                j.meta.id,
                j.spec.name,
                kind_name(j.spec.kind),
                styled_state(j.status.state),
                j.spec.queue,
                j.status.attempt or "",
                age(j.meta.create_time, now),
                j.status.reason,
            )
            for j in jobs[:limit]
        ],
    )


@jobs_app.command("get")
def get_job(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Show one job: spec summary, state, placement and recent transitions."""
    with scheduler(endpoint, timeout) as client:
        job = client.call(client.stub.GetJob, api.GetJobRequest(job_id=job_id)).job
    if json_output:
        print_message(job)
        return
    s = job.status
    grid = Table.grid(padding=(0, 2))
    rows = [
        ("id", job.meta.id),
        ("name", job.spec.name),
        ("team", job.meta.team),
        ("kind", kind_name(job.spec.kind)),
        ("state", styled_state(s.state)),
        ("reason", s.reason),
        ("message", s.message),
        ("queue", job.spec.queue),
        ("priority class", job.spec.priority_class),
        ("workers", _workers(job.spec)),
        ("command", shlex.join(job.spec.command.command)),
        ("attempt", str(s.attempt or "")),
        ("created", _ts(job.meta.create_time)),
        ("finished", _ts(s.finish_time)),
        ("parent", f"{job.parent_job_id} (step {job.pipeline_step})" if job.parent_job_id else ""),
        ("run", s.run_id),
        ("nodes", ", ".join(f"{n.node_id} ({len(n.workers)} workers)" for n in s.placement.nodes)),
    ]
    for key, value in rows:
        if value:
            grid.add_row(f"[bold]{key}[/bold]", value if key == "state" else Text(value))
    console.print(grid)
    if s.steps:
        print_table("steps", ["step", "job", "state"], [(st.name, st.job_id, styled_state(st.state)) for st in s.steps])
    if s.history:
        print_table(
            "history",
            ["time", "from", "to", "reason", "message"],
            [
                (
                    _ts(t.transition_time).split(" (")[0],
                    state_name(t.from_state),
                    styled_state(t.to_state),
                    t.reason,
                    t.message,
                )
                for t in s.history[-20:]
            ],
        )


@jobs_app.command("cancel")
def cancel_job(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    reason: Annotated[str | None, typer.Option("--reason", help="Recorded in the job's history.")] = None,
    checkpoint: Annotated[bool, typer.Option("--checkpoint", help="Checkpoint before stopping.")] = False,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Cancel a job (and a pipeline's unfinished steps). The job keeps its history."""
    request = api.CancelJobRequest(job_id=job_id, reason=reason or "", checkpoint=checkpoint)
    with scheduler(endpoint, timeout) as client:
        job = client.call(client.stub.CancelJob, request).job
    if json_output:
        print_message(job)
        return
    console.print(f"{job.meta.id}: {styled_state(job.status.state)}")


@jobs_app.command("watch")
def watch_jobs(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Jobs to watch; none = all of your team's.")] = None,
    team: Annotated[str | None, typer.Option("--team", help="Another team's jobs (admins).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One proto3 JSON object per line.")] = False,
    endpoint: EndpointOpt = None,
) -> None:
    """Print one line per job state change (the current states first). Ends when every named job
    has finished, or on Ctrl-C."""
    ids = list(job_ids or [])
    pending = set(ids)
    seen: dict[str, tuple] = {}
    progress = ProgressPoller() if not json_output else None  # JSON stays one response per line
    running: dict[str, job_pb2.Job] = {}  # train/finetune jobs last seen RUNNING
    with scheduler(endpoint) as client:
        try:
            for response in with_ticks(watch_stream(client, ids, team or "")):
                for job, p in progress.poll_all(list(running.values())) if progress is not None else ():
                    _print_progress(job, p)
                if response is None or not response.HasField("job") or not _changed(seen, response.job):
                    continue
                job = response.job
                running.pop(job.meta.id, None)
                if job.status.state == job_pb2.JOB_STATE_RUNNING and job.spec.kind in TRAINER_KINDS:
                    running[job.meta.id] = job
                if json_output:
                    sys.stdout.write(_compact(response) + "\n")
                    sys.stdout.flush()
                else:
                    done = job.status.state in TERMINAL
                    final = progress.poll(job, final=True) if progress is not None and done else None
                    if final is not None:
                        _print_progress(job, final)
                    _print_change(job, response.previous_state)
                if job.status.state in TERMINAL:
                    pending.discard(job.meta.id)
                if ids and not pending:
                    return
        except KeyboardInterrupt:
            return  # Ctrl-C is how an open-ended watch ends
        finally:
            if progress is not None:
                progress.close()


def _compact(message) -> str:
    return json.dumps(to_dict(message), sort_keys=True, separators=(",", ":"))


@jobs_app.command("explain")
def explain_job(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Why a job waits: its queue position, what blocks it, and why nodes were rejected."""
    with scheduler(endpoint, timeout) as client:
        out = client.call(client.stub.ExplainJob, api.ExplainJobRequest(job_id=job_id))
    if json_output:
        print_message(out)
        return
    console.print(Text(out.summary or f"job {job_id} is {state_name(out.job.status.state).lower()}"))
    if out.queue_position:
        console.print(f"position {out.queue_position} of {out.queue_length} pending in queue {out.job.spec.queue}")
    if out.blockers:
        print_table(
            "blockers",
            ["kind", "message", "requested", "available"],
            [
                (
                    enum_short(api.BlockerKind, b.kind, "BLOCKER_KIND_").lower(),
                    b.message,
                    _res(b.requested) if b.HasField("requested") else "",
                    _res(b.available) if b.HasField("available") else "",
                )
                for b in out.blockers
            ],
        )
    if out.node_rejections:
        print_table("node rejections", ["reason", "nodes"], [(r.reason, r.node_count) for r in out.node_rejections])


def _res(r) -> str:
    parts = [f"{r.gpus} GPU"] if r.gpus else []
    parts += [f"{fmt_cpu(r.cpu_millis)} CPU"] if r.cpu_millis else []
    parts += [f"{fmt_bytes(r.memory_bytes)} memory"] if r.memory_bytes else []
    return ", ".join(parts) or "none"


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.add_typer(jobs_app, name="jobs")
