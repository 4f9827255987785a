"""`mlmesh plan FILE.yaml`: how the trainer would run a job (method, ZeRO, precision, batch, memory),
without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.cli.common import JsonOpt, TimeoutOpt, enum_short, print_message
from mlmesh.cli.output import CliError, console
from mlmesh.common.quantities import fmt_bytes
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S, trainer_client
from mlmesh.sdk.jobspec import JobSpecError, load_job_spec, parse_memory

_PLANNABLE = (job_pb2.JOB_KIND_TRAIN, job_pb2.JOB_KIND_FINETUNE)


def _size(value: str | None, flag: str) -> int:
    if value is None:
        return 0
    try:
        return parse_memory(value)
    except ValueError as exc:
        raise CliError(f"{flag}: {exc}", exit_code=2) from None


def device_profile(gpu_model: str | None, gpu_memory: str | None, host_memory: str | None) -> api.DeviceProfile | None:
    """The device to plan for, or None (the trainer picks the best matching devices, or its host).
    bf16 support and peak FLOP/s are the trainer's to derive from the model name."""
    if gpu_model is None and gpu_memory is None and host_memory is None:
        return None
    gpu_bytes = _size(gpu_memory, "--gpu-memory")
    if gpu_model and not gpu_bytes:
        raise CliError("--gpu-model needs --gpu-memory", hint="e.g. --gpu-memory 80Gi", exit_code=2)
    return api.DeviceProfile(
        gpu_model=gpu_model or "", gpu_memory_bytes=gpu_bytes, host_memory_bytes=_size(host_memory, "--host-memory")
    )


def plan(
    file: Annotated[Path, typer.Argument(help="Job YAML file (kind train or finetune).", show_default=False)],
    gpu_model: Annotated[str | None, typer.Option("--gpu-model", help='GPU model name, e.g. "H100".')] = None,
    gpu_memory: Annotated[str | None, typer.Option("--gpu-memory", help="Memory per GPU, e.g. 80Gi.")] = None,
    host_memory: Annotated[str | None, typer.Option("--host-memory", help="Host memory per node, e.g. 512Gi.")] = None,
    json_output: JsonOpt = False,
    trainer: Annotated[
        str | None,
        typer.Option("--trainer", help="host:port of the trainer [env MLMESH_TRAINER_ADDR; default from `mlmesh up`]"),
    ] = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Plan a training job: method, ZeRO stage, offload, precision, batch and memory per device.

    Without device flags the trainer plans for the best devices matching the job's selector, or its own host."""
    try:
        spec = load_job_spec(file)
    except JobSpecError as exc:
        raise CliError(
            str(exc), hint=f"fix {file}; a train or finetune job needs a trainer section", exit_code=2
        ) from None
    if spec.kind not in _PLANNABLE:
        kind = enum_short(job_pb2.JobKind, spec.kind, "JOB_KIND_").lower()
        raise CliError(f"kind: only train and finetune jobs are planned, got {kind}", exit_code=2)
    request = api.PlanRunRequest(spec=spec)
    device = device_profile(gpu_model, gpu_memory, host_memory)
    if device is not None:
        request.device.CopyFrom(device)
    with trainer_client(trainer) as client:
        client.default_timeout = timeout
        result = client.call(client.stub.PlanRun, request).plan
    if json_output:
        print_message(result)
        return
    print_plan(result, spec)


# --- formatting ----------------------------------------------------------------------------------


def fmt_count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _offload(target: int) -> str:
    return "cpu" if target == run_pb2.OFFLOAD_TARGET_CPU else "none"


def summary_rows(p: run_pb2.Plan) -> list[tuple[str, str]]:
    rows = [
        ("method", enum_short(job_pb2.TrainingMethod, p.method, "TRAINING_METHOD_")),
        ("ZeRO stage", str(p.zero_stage)),
        ("offload", f"optimizer {_offload(p.offload_optimizer)}, parameters {_offload(p.offload_parameters)}"),
        ("precision", enum_short(job_pb2.Precision, p.precision, "PRECISION_")),
        (
            "batch",
            f"{p.micro_batch_size} micro x {p.gradient_accumulation_steps} accumulation x {p.data_parallel_size} DP"
            f" = {p.global_batch_size} global",
        ),
        ("gradient checkpointing", _on(p.gradient_checkpointing)),
        ("torch.compile", _on(p.torch_compile)),
        ("backend", p.distributed_backend),
    ]
    if p.HasField("lora"):
        lo = p.lora
        rows.append(
            ("LoRA", f"r={lo.rank} alpha={lo.alpha} dropout={lo.dropout:g} targets={','.join(lo.target_modules)}")
        )
    share = f" ({p.trainable_parameters / p.total_parameters:.2%})" if p.total_parameters else ""
    rows.append(
        ("parameters", f"{fmt_count(p.total_parameters)} total, {fmt_count(p.trainable_parameters)} trainable{share}")
    )
    return rows


def memory_rows(m: run_pb2.MemoryEstimate) -> list[tuple[str, str]]:
    rows = [
        ("parameters", fmt_bytes(m.parameters_bytes)),
        ("gradients", fmt_bytes(m.gradients_bytes)),
        ("optimizer", fmt_bytes(m.optimizer_bytes)),
        ("activations", fmt_bytes(m.activations_bytes)),
        ("overhead", fmt_bytes(m.overhead_bytes)),
        ("total", f"{fmt_bytes(m.total_bytes)} of {fmt_bytes(m.device_capacity_bytes)}"),
    ]
    if m.host_offload_bytes:
        rows.append(("host offload (per node)", fmt_bytes(m.host_offload_bytes)))
    rows.append(("fits", "yes" if m.fits else "NO"))
    return rows


def print_plan(p: run_pb2.Plan, spec: job_pb2.JobSpec) -> None:
    # Text cells throughout: reasons and names are shown as they are, never read as rich markup.
    title = f"plan for {spec.name or 'job'} ({spec.trainer.model or 'no model'})"
    grid = Table.grid(padding=(0, 2))
    for key, value in summary_rows(p):
        grid.add_row(Text(key, style="bold"), Text(value))
    console.print(Text(title, style="bold"))
    console.print(grid)

    memory = Table("memory per device", "bytes", title="memory", title_justify="left")
    for key, value in memory_rows(p.memory):
        style = "red" if key == "fits" and not p.memory.fits else None
        memory.add_row(Text(key), Text(value, style=style or ""))
    console.print(memory)

    decisions = Table("field", "value", "reason", title="decisions", title_justify="left")
    for d in p.decisions:
        decisions.add_row(Text(d.field), Text(d.value), Text(d.reason + (" [override]" if d.overridden else "")))
    console.print(decisions)
    for warning in p.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
