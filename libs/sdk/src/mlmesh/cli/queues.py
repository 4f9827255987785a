"""`mlmesh queues list|get|create|update`: per-team quota with borrowing."""

from __future__ import annotations

from typing import Annotated

import typer
from google.protobuf import field_mask_pb2

from mlmesh.api.scheduler.v1 import queue_pb2
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as api
from mlmesh.cli.common import (
    EndpointOpt,
    JsonOpt,
    TimeoutOpt,
    print_message,
    scheduler,
)
from mlmesh.cli.output import CliError, console, print_table
from mlmesh.common.quantities import UNLIMITED_CPU_MILLIS, UNLIMITED_MEMORY_BYTES, fmt_bytes, fmt_cpu
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S
from mlmesh.sdk.jobspec import parse_cpu, parse_memory

queues_app = typer.Typer(
    help="Queues: each team's GPU/CPU/memory quota, with borrowing.", no_args_is_help=True, rich_markup_mode=None
)

NameArg = Annotated[str, typer.Argument(help="Queue name, [a-z0-9_-].", show_default=False)]
GpusOpt = Annotated[int | None, typer.Option("--gpus", help="Nominal (guaranteed) GPUs.", min=0)]
CpuOpt = Annotated[str | None, typer.Option("--cpu", help="Nominal CPU, e.g. 64 or 500m [default: not limited].")]
MemoryOpt = Annotated[str | None, typer.Option("--memory", help="Nominal memory, e.g. 512Gi [default: not limited].")]
BorrowOpt = Annotated[int | None, typer.Option("--borrow-gpus", help="GPUs it may borrow beyond nominal.", min=0)]
BorrowCpuOpt = Annotated[str | None, typer.Option("--borrow-cpu", help="CPU it may borrow beyond nominal, e.g. 8.")]
BorrowMemoryOpt = Annotated[
    str | None, typer.Option("--borrow-memory", help="Memory it may borrow beyond nominal, e.g. 64Gi.")
]
WeightOpt = Annotated[float | None, typer.Option("--weight", help="Fair-share weight (0 = 1).", min=0)]


def _cpu(text: str, flag: str = "--cpu") -> int:
    try:
        return parse_cpu(text)
    except ValueError as exc:
        raise CliError(f"{flag}: {exc}", exit_code=2) from None


def _memory(text: str, flag: str = "--memory") -> int:
    try:
        return parse_memory(text)
    except ValueError as exc:
        raise CliError(f"{flag}: {exc}", exit_code=2) from None


def quota_spec(
    team: str, gpus: int, cpu: str | None, memory: str | None, *, default: bool = True
) -> queue_pb2.QueueSpec:
    """A queue's spec with its nominal quota; CPU and memory not limited when not given."""
    spec = queue_pb2.QueueSpec(team=team, team_default=default)
    spec.nominal_quota.gpus = gpus
    spec.nominal_quota.cpu_millis = _cpu(cpu) if cpu is not None else UNLIMITED_CPU_MILLIS
    spec.nominal_quota.memory_bytes = _memory(memory) if memory is not None else UNLIMITED_MEMORY_BYTES
    return spec


def _print_queue(q: queue_pb2.Queue) -> None:
    _table([q])


def _table(queues) -> None:
    def quota(used, nominal, borrow, fmt):
        text = f"{fmt(used)}/{fmt(nominal)}"
        return text + (f" +{fmt(borrow)}" if borrow else "")

    print_table(
        "queues",
        ["name", "team", "default", "gpus", "cpu", "memory", "weight", "pending", "admitted", "running"],
        [
            (
                q.meta.id,
                q.spec.team,
                "yes" if q.spec.team_default else "",
                quota(q.status.used.gpus, q.spec.nominal_quota.gpus, q.spec.borrowing_limit.gpus, str),
                quota(
                    q.status.used.cpu_millis,
                    q.spec.nominal_quota.cpu_millis,
                    q.spec.borrowing_limit.cpu_millis,
                    fmt_cpu,
                ),
                quota(
                    q.status.used.memory_bytes,
                    q.spec.nominal_quota.memory_bytes,
                    q.spec.borrowing_limit.memory_bytes,
                    fmt_bytes,
                ),
                f"{q.spec.weight or 1:g}",
                q.status.pending_jobs,
                q.status.admitted_jobs,
                q.status.running_jobs,
            )
            for q in queues
        ],
    )
    console.print("[dim]used/nominal +borrowing limit[/dim]")


@queues_app.command("list")
def list_queues(
    team: Annotated[str | None, typer.Option("--team", help="Only this team's queues.")] = None,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """List the queues you can see, with their quota and usage."""
    queues: list[queue_pb2.Queue] = []
    request = api.ListQueuesRequest(team=team or "", page_size=1000)
    with scheduler(endpoint, timeout) as client:
        while True:
            page = client.call(client.stub.ListQueues, request)
            queues.extend(page.queues)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    if json_output:
        print_message(api.ListQueuesResponse(queues=queues))
        return
    _table(queues)


@queues_app.command("get")
def get_queue(
    name: NameArg,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Show one queue with its usage."""
    with scheduler(endpoint, timeout) as client:
        q = client.call(client.stub.GetQueue, api.GetQueueRequest(name=name)).queue
    if json_output:
        print_message(q)
    else:
        _print_queue(q)


@queues_app.command("create")
def create_queue(
    name: NameArg,
    team: Annotated[str, typer.Option("--team", help="Team whose jobs it admits.", show_default=False)],
    gpus: Annotated[int, typer.Option("--gpus", help="Nominal (guaranteed) GPUs.", min=0, show_default=False)],
    cpu: CpuOpt = None,
    memory: MemoryOpt = None,
    borrow_gpus: BorrowOpt = None,
    borrow_cpu: BorrowCpuOpt = None,
    borrow_memory: BorrowMemoryOpt = None,
    weight: WeightOpt = None,
    default: Annotated[bool, typer.Option("--default", help="The team's default queue.")] = False,
    priority_class: Annotated[
        str | None, typer.Option("--priority-class", help="Priority class of jobs that name none.")
    ] = None,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Create a queue (admin)."""
    spec = quota_spec(team, gpus, cpu, memory, default=default)
    spec.weight = weight or 0.0
    spec.default_priority_class = priority_class or ""
    spec.borrowing_limit.gpus = borrow_gpus or 0
    spec.borrowing_limit.cpu_millis = _cpu(borrow_cpu, "--borrow-cpu") if borrow_cpu is not None else 0
    spec.borrowing_limit.memory_bytes = _memory(borrow_memory, "--borrow-memory") if borrow_memory is not None else 0
    with scheduler(endpoint, timeout) as client:
        q = client.call(client.stub.CreateQueue, api.CreateQueueRequest(name=name, spec=spec)).queue
    if json_output:
        print_message(q)
    else:
        _print_queue(q)


@queues_app.command("update")
def update_queue(
    name: NameArg,
    gpus: GpusOpt = None,
    cpu: CpuOpt = None,
    memory: MemoryOpt = None,
    borrow_gpus: BorrowOpt = None,
    borrow_cpu: BorrowCpuOpt = None,
    borrow_memory: BorrowMemoryOpt = None,
    weight: WeightOpt = None,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Change a queue's quota or weight (admin); only the options given are changed."""
    spec = queue_pb2.QueueSpec()
    paths = []
    if gpus is not None:
        spec.nominal_quota.gpus = gpus
        paths.append("nominal_quota.gpus")
    if cpu is not None:
        spec.nominal_quota.cpu_millis = _cpu(cpu)
        paths.append("nominal_quota.cpu_millis")
    if memory is not None:
        spec.nominal_quota.memory_bytes = _memory(memory)
        paths.append("nominal_quota.memory_bytes")
    if borrow_gpus is not None:
        spec.borrowing_limit.gpus = borrow_gpus
        paths.append("borrowing_limit.gpus")
    if borrow_cpu is not None:
        spec.borrowing_limit.cpu_millis = _cpu(borrow_cpu, "--borrow-cpu")
        paths.append("borrowing_limit.cpu_millis")
    if borrow_memory is not None:
        spec.borrowing_limit.memory_bytes = _memory(borrow_memory, "--borrow-memory")
        paths.append("borrowing_limit.memory_bytes")
    if weight is not None:
        spec.weight = weight
        paths.append("weight")
    if not paths:
        flags = "--gpus, --cpu, --memory, --borrow-gpus, --borrow-cpu, --borrow-memory or --weight"
        raise CliError("nothing to update", hint=f"give {flags}", exit_code=2)
    request = api.UpdateQueueRequest(name=name, spec=spec, update_mask=field_mask_pb2.FieldMask(paths=paths))
    with scheduler(endpoint, timeout) as client:
        q = client.call(client.stub.UpdateQueue, request).queue
    if json_output:
        print_message(q)
    else:
        _print_queue(q)


def register(app: typer.Typer) -> None:
    app.add_typer(queues_app, name="queues")
