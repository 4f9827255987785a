"""The strategy planner: method, ZeRO stage, offload, precision, batch and memory for a model on a device.

Pure: a ModelShape, the user's TrainerConfig and a DeviceProfile in, a `run_pb2.Plan` out. The search
tries candidates in order of preference and takes the first that fits:

1. without offload: methods FULL (<= 400M parameters) -> LORA -> QLORA (GPU); for each, gradient
   checkpointing off then on; for each, the ZeRO stages of the world size (1 rank: 0; more: 2 then 3);
2. with CPU offload (GPU only): the same methods with optimizer offload, then parameter offload;
3. nothing fits: the smallest plan (LORA, most offload, checkpointing), fits=False and a warning.

Offload comes last because it makes every step wait on PCIe; QLoRA comes before it because a 4-bit
base is usually faster than streaming a bf16 base from host memory. User overrides pin their fields.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf import json_format

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.common.errors import FieldViolation, InvalidArgument
from mlmesh.trainer.domain.model_shapes import BERT, GPT2, ModelShape, default_lora_targets, lora_parameters

GiB = 1 << 30
FULL, LORA, QLORA = job_pb2.TRAINING_METHOD_FULL, job_pb2.TRAINING_METHOD_LORA, job_pb2.TRAINING_METHOD_QLORA
BF16, FP16, FP32 = job_pb2.PRECISION_BF16, job_pb2.PRECISION_FP16, job_pb2.PRECISION_FP32

FULL_FT_MAX_PARAMETERS = 400_000_000
DEFAULT_GLOBAL_BATCH = 32
MAX_MICRO_BATCH = 64
DEFAULT_SEQ_CAUSAL, DEFAULT_SEQ_ENCODER = 512, 128
LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.0
# 4-bit NF4 weights plus one fp32 absmax constant per 64-weight block.
QLORA_BYTES_PER_PARAM = 0.5 + 4 / 64 * 0.5
GPU_OVERHEAD_BYTES, GPU_OVERHEAD_FRACTION = 3 * GiB // 2, 0.05
CPU_OVERHEAD_BYTES = GiB // 2
BUCKET_BYTES = 500_000_000

_PREFIX_O = "trainer.overrides."
_PREFIX_H = "trainer.hyperparameters."


@dataclass(frozen=True)
class Candidate:
    method: int
    zero_stage: int
    offload_optimizer: bool
    offload_parameters: bool
    gradient_checkpointing: bool


@dataclass(frozen=True)
class _Ctx:
    """Everything fixed before the search."""

    shape: ModelShape
    gpu: bool
    world_size: int
    ranks_on_node: int
    host_memory: int
    capacity: int
    overhead: int
    precision: int
    seq: int
    causal_lm: bool
    lora: job_pb2.LoraConfig | None  # None when LoRA is impossible (unknown module layout)
    lora_trainable: int
    from_scratch: bool


# --- memory --------------------------------------------------------------------------------------


def _state_bytes(ctx: _Ctx, c: Candidate) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per parameter set, before sharding and offload."""
    half = ctx.precision in (BF16, FP16)
    # Mixed precision AdamW: half weights + half grads + fp32 master, m, v. fp32: weights, grads, m, v.
    w, g, o = (2, 2, 12) if half else (4, 4, 8)
    total = ctx.shape.total_parameters
    if c.method == FULL:
        return total * w, total * g, total * o
    base = QLORA_BYTES_PER_PARAM if c.method == QLORA else (2 if half else 4)
    t = ctx.lora_trainable
    return total * base + t * w, t * g, t * o


def activation_bytes(
    shape: ModelShape, micro: int, seq: int, *, half: bool, checkpointing: bool, causal_lm: bool
) -> int:
    """Korthikanti et al.: s·b·h·(34 + 5·a·s/h) bytes per layer in half precision; checkpointing keeps
    each layer's input (s·b·h values) plus one layer's full activations for the recompute."""
    elt = 2 if half else 4
    s, b, h = seq, micro, shape.hidden
    per_layer = s * b * (34 * h + 5 * shape.n_heads * s) * (elt // 2)
    acts = elt * s * b * h * shape.n_layers + per_layer if checkpointing else per_layer * shape.n_layers
    if causal_lm:
        acts += b * s * shape.vocab_size * 4 * 2  # fp32 logits and their gradient
    return acts


def estimate(ctx: _Ctx, c: Candidate, micro: int) -> run_pb2.MemoryEstimate:
    weights, grads, optim = _state_bytes(ctx, c)
    dp = ctx.world_size
    if c.zero_stage >= 1:
        optim /= dp
    if c.zero_stage >= 2:
        grads /= dp
    if c.zero_stage >= 3:
        weights /= dp
    host = 0.0
    if c.offload_optimizer:
        host += optim
        optim = 0
    if c.offload_parameters:
        host += weights
        # ZeRO-3 fetches parameters layer by layer: about two layers (in use + prefetched) stay resident.
        weights = min(weights, 2 * weights / max(1, ctx.shape.n_layers))
    acts = activation_bytes(
        ctx.shape,
        micro,
        ctx.seq,
        half=ctx.precision != FP32,
        checkpointing=c.gradient_checkpointing,
        causal_lm=ctx.causal_lm,
    )
    parts = [math.ceil(x) for x in (weights, grads, optim)]
    total = sum(parts) + acts + ctx.overhead
    return run_pb2.MemoryEstimate(
        parameters_bytes=parts[0],
        gradients_bytes=parts[1],
        optimizer_bytes=parts[2],
        activations_bytes=acts,
        overhead_bytes=ctx.overhead,
        total_bytes=total,
        device_capacity_bytes=ctx.capacity,
        host_offload_bytes=math.ceil(host * ctx.ranks_on_node),
        fits=total <= ctx.capacity,
    )


def _feasible(ctx: _Ctx, mem: run_pb2.MemoryEstimate) -> bool:
    host_ok = ctx.host_memory <= 0 or mem.host_offload_bytes <= ctx.host_memory
    return mem.fits and host_ok


# --- validation ----------------------------------------------------------------------------------


def _validate(
    shape: ModelShape, trainer: job_pb2.TrainerConfig, gpu: bool, device_host_memory: int, world_size: int
) -> None:
    o, hp = trainer.overrides, trainer.hyperparameters
    bad: dict[str, str] = {}
    if world_size < 1:
        bad["workers.count"] = f"must be >= 1, got {world_size}"
    if trainer.method == QLORA and not gpu:
        bad["trainer.method"] = "QLoRA needs a GPU (bitsandbytes 4-bit kernels); use LORA or FULL on CPU"
    if o.HasField("zero_stage") and not 0 <= o.zero_stage <= 3:
        bad[_PREFIX_O + "zero_stage"] = f"must be 0-3, got {o.zero_stage}"
    if o.offload_parameters and o.HasField("zero_stage") and o.zero_stage != 3:
        bad[_PREFIX_O + "offload_parameters"] = f"parameter offload needs ZeRO stage 3, got stage {o.zero_stage}"
    elif o.offload_parameters and trainer.method == QLORA:
        bad[_PREFIX_O + "offload_parameters"] = "QLoRA's 4-bit weights cannot be offloaded"
    if o.offload_optimizer and o.HasField("zero_stage") and o.zero_stage == 0:
        bad[_PREFIX_O + "offload_optimizer"] = "optimizer offload needs ZeRO stage >= 1"
    if not gpu:
        for name in ("offload_optimizer", "offload_parameters"):
            if getattr(o, name):
                bad.setdefault(_PREFIX_O + name, "offload moves state from GPU to host memory; the device is a CPU")
    for name in ("micro_batch_size", "gradient_accumulation_steps"):
        if o.HasField(name) and getattr(o, name) <= 0:
            bad[_PREFIX_O + name] = f"must be > 0, got {getattr(o, name)}"
    if o.HasField("precision") and o.precision in (BF16, FP16) and not gpu:
        bad[_PREFIX_O + "precision"] = "on CPU only fp32 is supported"
    if not gpu and device_host_memory <= 0:
        bad["device.host_memory_bytes"] = "must be > 0 for a CPU device"
    if hp.global_batch_size < 0:
        bad[_PREFIX_H + "global_batch_size"] = f"must be >= 0, got {hp.global_batch_size}"
    if hp.max_seq_length < 0:
        bad[_PREFIX_H + "max_seq_length"] = f"must be >= 0, got {hp.max_seq_length}"
    elif shape.model_type in (GPT2, BERT) and shape.max_positions and hp.max_seq_length > shape.max_positions:
        # Learned absolute position embeddings: longer inputs index past the table.
        bad[_PREFIX_H + "max_seq_length"] = f"the model has {shape.max_positions} positions, got {hp.max_seq_length}"
    if hp.max_grad_norm < 0:
        bad[_PREFIX_H + "max_grad_norm"] = f"must be >= 0, got {hp.max_grad_norm}"
    lora = hp.lora
    if lora.rank < 0:
        bad[_PREFIX_H + "lora.rank"] = f"must be >= 0, got {lora.rank}"
    if lora.alpha < 0:
        bad[_PREFIX_H + "lora.alpha"] = f"must be >= 0, got {lora.alpha}"
    if not 0 <= lora.dropout < 1:
        bad[_PREFIX_H + "lora.dropout"] = f"must be in [0, 1), got {lora.dropout}"
    if lora.target_modules:
        try:
            lora_parameters(shape, 1, lora.target_modules)
        except ValueError as exc:
            bad[_PREFIX_H + "lora.target_modules"] = str(exc)
    elif trainer.method in (LORA, QLORA):
        try:
            default_lora_targets(shape.model_type)
        except ValueError as exc:
            bad[_PREFIX_H + "lora.target_modules"] = str(exc)
    if bad:
        raise InvalidArgument(
            "invalid training plan: " + ", ".join(bad), [FieldViolation(f, d) for f, d in bad.items()]
        )


# --- choices before the search -------------------------------------------------------------------


def _decision(field: str, value: Any, reason: str, overridden: bool = False) -> run_pb2.PlanDecision:
    return run_pb2.PlanDecision(field=field, value=_text(value), reason=reason, overridden=overridden)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(value)
    return str(value)


def _precision(trainer: job_pb2.TrainerConfig, device: api.DeviceProfile, gpu: bool, plan: run_pb2.Plan) -> int:
    o = trainer.overrides
    if o.HasField("precision") and o.precision:
        if o.precision == BF16 and gpu and not device.supports_bf16:
            plan.warnings.append(f"bf16 requested but {device.gpu_model or 'the GPU'} lacks bf16 support")
        plan.decisions.append(_decision("precision", _precision_name(o.precision), "set in overrides", True))
        return o.precision
    if not gpu:
        reason = "CPU: mixed precision there is slow or unsupported by DeepSpeed"
        plan.decisions.append(_decision("precision", "FP32", reason))
        return FP32
    if device.supports_bf16:
        reason = "the GPU has bf16: fp32's range without loss scaling, half the memory"
        plan.decisions.append(_decision("precision", "BF16", reason))
        return BF16
    plan.warnings.append(f"fp16 chosen: {device.gpu_model or 'the device'} lacks bf16 (dynamic loss scaling on)")
    plan.decisions.append(_decision("precision", "FP16", "the GPU lacks bf16; fp16 with dynamic loss scaling"))
    return FP16


def _precision_name(p: int) -> str:
    return job_pb2.Precision.Name(p).removeprefix("PRECISION_")


def _method_name(m: int) -> str:
    return job_pb2.TrainingMethod.Name(m).removeprefix("TRAINING_METHOD_")


def _lora_config(shape: ModelShape, trainer: job_pb2.TrainerConfig) -> job_pb2.LoraConfig | None:
    user = trainer.hyperparameters.lora
    try:
        targets = list(user.target_modules) or default_lora_targets(shape.model_type)
    except ValueError:
        return None
    rank = user.rank or LORA_RANK
    # alpha = 2r keeps the adapter's scale (alpha / r) at the common 2 when only the rank is given.
    alpha = user.alpha or (2 * user.rank if user.rank else LORA_ALPHA)
    return job_pb2.LoraConfig(rank=rank, alpha=alpha, dropout=user.dropout or LORA_DROPOUT, target_modules=targets)


def _lora_decisions(lora: job_pb2.LoraConfig, user: job_pb2.LoraConfig) -> list[run_pb2.PlanDecision]:
    return [
        _decision("lora.rank", lora.rank, "set in hyperparameters" if user.rank else "common default", bool(user.rank)),
        _decision(
            "lora.alpha",
            lora.alpha,
            "set in hyperparameters" if user.alpha else "2 x rank: adapter scale alpha/r = 2",
            bool(user.alpha),
        ),
        _decision(
            "lora.dropout",
            lora.dropout,
            "set in hyperparameters"
            if user.dropout
            else "0 lets the adapter skip a dropout kernel and allows fusion under torch.compile",
            bool(user.dropout),
        ),
        _decision(
            "lora.target_modules",
            list(lora.target_modules),
            "set in hyperparameters" if user.target_modules else "attention projections: the usual LoRA default",
            bool(user.target_modules),
        ),
    ]


# --- the search ----------------------------------------------------------------------------------


def _strategies(ctx: _Ctx, offload: bool) -> list[tuple[int, bool, bool]]:
    """(zero_stage, offload_optimizer, offload_parameters), most preferred first."""
    if not offload:
        return [(0, False, False)] if ctx.world_size == 1 else [(2, False, False), (3, False, False)]
    if not ctx.gpu:
        return []
    # DeepSpeed offloads nothing at stage 0, so one rank offloads at stage 2 (optimizer) or 3 (+ weights).
    first = 2 if ctx.world_size == 1 else 3
    return [(first, True, False), (3, True, True)]


def _apply_overrides(c: Candidate, o: job_pb2.PlanOverrides) -> Candidate:
    if o.HasField("gradient_checkpointing"):
        c = replace(c, gradient_checkpointing=o.gradient_checkpointing)
    if o.HasField("offload_optimizer"):
        c = replace(c, offload_optimizer=o.offload_optimizer)
    if o.HasField("offload_parameters"):
        c = replace(c, offload_parameters=o.offload_parameters)
    if o.HasField("zero_stage"):
        c = replace(c, zero_stage=o.zero_stage)
    elif c.offload_parameters:
        c = replace(c, zero_stage=3)
    elif c.offload_optimizer and c.zero_stage == 0:
        c = replace(c, zero_stage=2)
    if c.zero_stage < 3 and c.offload_parameters:
        c = replace(c, offload_parameters=False)
    return c


def _methods(ctx: _Ctx, trainer: job_pb2.TrainerConfig) -> list[int]:
    if trainer.method:
        return [trainer.method]
    if ctx.from_scratch:
        return [FULL]
    small = ctx.shape.total_parameters <= FULL_FT_MAX_PARAMETERS
    methods = [FULL] if small or ctx.lora is None else []
    if ctx.lora is not None:
        methods += [LORA, QLORA] if ctx.gpu else [LORA]
    if ctx.lora is not None and trainer.overrides.offload_parameters:
        methods = [m for m in methods if m != QLORA]
    return methods


def _candidates(ctx: _Ctx, trainer: job_pb2.TrainerConfig, methods: list[int]) -> Iterator[Candidate]:
    o = trainer.overrides
    seen: set[Candidate] = set()
    for offload in (False, True):
        for method in methods:
            for ckpt in (False, True):
                for stage, oo, op in _strategies(ctx, offload):
                    if method == QLORA and op:
                        continue
                    c = _apply_overrides(Candidate(method, stage, oo, op, ckpt), o)
                    if ctx.world_size == 1 and not (
                        c.offload_optimizer or c.offload_parameters or o.HasField("zero_stage")
                    ):
                        c = replace(c, zero_stage=0)  # one rank without offload: a ZeRO stage only adds overhead
                    if c not in seen:
                        seen.add(c)
                        yield c


def _fallback(ctx: _Ctx, trainer: job_pb2.TrainerConfig, methods: list[int]) -> Candidate:
    """The smallest plan, for when nothing fits: LoRA (unless the method is fixed) with the most offload."""
    method = methods[0] if trainer.method or LORA not in methods else LORA
    strategies = _strategies(ctx, True) or _strategies(ctx, False)
    stage, oo, op = strategies[-1]
    if method == QLORA:
        op = False
    return _apply_overrides(Candidate(method, stage, oo, op, True), trainer.overrides)


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def _micro_batch(ctx: _Ctx, c: Candidate, o: job_pb2.PlanOverrides, global_batch: int) -> int:
    if o.HasField("micro_batch_size"):
        return o.micro_batch_size
    accum = o.gradient_accumulation_steps if o.HasField("gradient_accumulation_steps") else 1
    micro = _pow2_floor(min(MAX_MICRO_BATCH, global_batch // (ctx.world_size * accum)))
    while micro > 1 and not _feasible(ctx, estimate(ctx, c, micro)):
        micro //= 2
    return micro


# --- plan ----------------------------------------------------------------------------------------


def plan_run(
    shape: ModelShape,
    trainer: job_pb2.TrainerConfig,
    device: api.DeviceProfile,
    world_size: int,
    gpus_per_node: int = 0,
    *,
    from_scratch: bool = False,
) -> run_pb2.Plan:
    """Plan a run of `world_size` ranks on devices like `device`. Raises InvalidArgument naming each bad field.

    `from_scratch` (JOB_KIND_TRAIN, random weights): the method defaults to FULL, since adapters over an
    untrained base learn nothing useful."""
    gpu = device.gpu_memory_bytes > 0
    _validate(shape, trainer, gpu, device.host_memory_bytes, world_size)
    o, hp = trainer.overrides, trainer.hyperparameters
    plan = run_pb2.Plan(total_parameters=shape.total_parameters, data_parallel_size=world_size)

    ranks_on_node = min(world_size, gpus_per_node) if gpus_per_node > 0 else world_size
    if gpu:
        capacity = device.gpu_memory_bytes
        overhead = GPU_OVERHEAD_BYTES + int(GPU_OVERHEAD_FRACTION * capacity)
    else:
        capacity, overhead = device.host_memory_bytes // max(1, ranks_on_node), CPU_OVERHEAD_BYTES
    precision = _precision(trainer, device, gpu, plan)
    causal_lm = _is_causal_lm(shape, trainer)
    seq = hp.max_seq_length or _default_seq(shape, causal_lm)
    if not hp.max_seq_length:
        plan.decisions.append(
            _decision("max_seq_length", seq, "default for " + ("causal LM" if causal_lm else "encoder"))
        )
    lora = _lora_config(shape, trainer)
    ctx = _Ctx(
        shape=shape,
        gpu=gpu,
        world_size=world_size,
        ranks_on_node=ranks_on_node,
        host_memory=device.host_memory_bytes,
        capacity=capacity,
        overhead=overhead,
        precision=precision,
        seq=seq,
        causal_lm=causal_lm,
        lora=lora,
        lora_trainable=lora_parameters(shape, lora.rank, lora.target_modules) if lora else 0,
        from_scratch=from_scratch,
    )

    methods = _methods(ctx, trainer)
    micro_floor = o.micro_batch_size if o.HasField("micro_batch_size") else 1
    smallest: dict[int, int] = {}  # method -> smallest total seen, for the reasons
    chosen = None
    for c in _candidates(ctx, trainer, methods):
        mem = estimate(ctx, c, micro_floor)
        smallest[c.method] = min(smallest.get(c.method, mem.total_bytes), mem.total_bytes)
        if _feasible(ctx, mem):
            chosen = c
            break
    if chosen is None:
        chosen = _fallback(ctx, trainer, methods)
    requested = hp.global_batch_size or DEFAULT_GLOBAL_BATCH
    micro = _micro_batch(ctx, chosen, o, requested)
    accum = o.gradient_accumulation_steps or math.ceil(requested / (micro * world_size))
    memory = estimate(ctx, chosen, micro)

    plan.method = chosen.method
    plan.zero_stage = chosen.zero_stage
    plan.offload_optimizer = run_pb2.OFFLOAD_TARGET_CPU if chosen.offload_optimizer else run_pb2.OFFLOAD_TARGET_NONE
    plan.offload_parameters = run_pb2.OFFLOAD_TARGET_CPU if chosen.offload_parameters else run_pb2.OFFLOAD_TARGET_NONE
    plan.precision = precision
    plan.micro_batch_size = micro
    plan.gradient_accumulation_steps = accum
    plan.global_batch_size = micro * accum * world_size
    plan.gradient_checkpointing = chosen.gradient_checkpointing
    plan.torch_compile = o.torch_compile if o.HasField("torch_compile") else gpu
    plan.distributed_backend = "nccl" if gpu else "gloo"
    plan.trainable_parameters = shape.total_parameters if chosen.method == FULL else ctx.lora_trainable
    if chosen.method in (LORA, QLORA) and lora is not None:
        plan.lora.CopyFrom(lora)
    plan.memory.CopyFrom(memory)

    _explain(plan, ctx, trainer, smallest, requested)
    if not memory.fits:
        plan.warnings.append(
            f"no strategy fits: about {_gib(memory.total_bytes)} needed per device, {_gib(capacity)} available; "
            "expect out-of-memory (use more or larger devices, a shorter max_seq_length, or a smaller model)"
        )
    if device.host_memory_bytes and memory.host_offload_bytes > device.host_memory_bytes:
        plan.warnings.append(
            f"offloaded state needs {_gib(memory.host_offload_bytes)} of host memory per node, "
            f"{_gib(device.host_memory_bytes)} available"
        )
    _model_dropout(plan, trainer)
    _order_decisions(plan)
    plan.deepspeed_config.update(deepspeed_config(plan, hp.max_grad_norm))
    return plan


def _model_dropout(plan: run_pb2.Plan, trainer: job_pb2.TrainerConfig) -> None:
    """Under LoRA the base is frozen: its dropout (a pretraining regularizer; GPT-2 ships 0.1) costs
    a mask kernel per layer and slower attention, and adapter fine-tunes converge without it.
    `trainer.extra.model_dropout` keeps or sets it; full fine-tuning keeps the model's own."""
    extra = trainer.extra.fields.get("model_dropout") if trainer.HasField("extra") else None
    if extra is not None and extra.WhichOneof("kind") == "number_value":
        plan.decisions.append(
            _decision("model_dropout", extra.number_value, "set in trainer.extra.model_dropout", overridden=True)
        )
    elif plan.method in (job_pb2.TRAINING_METHOD_LORA, job_pb2.TRAINING_METHOD_QLORA):
        plan.decisions.append(
            _decision(
                "model_dropout",
                0.0,
                "the frozen base's dropout is off: it costs a kernel per layer and slows attention, and LoRA "
                "fine-tunes converge without it (set trainer.extra.model_dropout to keep it)",
            )
        )


_DECISION_ORDER = (
    "method",
    "precision",
    "zero_stage",
    "offload_optimizer",
    "offload_parameters",
    "gradient_checkpointing",
    "max_seq_length",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "global_batch_size",
    "torch_compile",
    "model_dropout",
)


def _order_decisions(plan: run_pb2.Plan) -> None:
    rank = {f: i for i, f in enumerate(_DECISION_ORDER)}
    copies = [
        run_pb2.PlanDecision(field=d.field, value=d.value, reason=d.reason, overridden=d.overridden)
        for d in plan.decisions
    ]
    ordered = sorted(copies, key=lambda d: rank.get(d.field, len(rank)))
    del plan.decisions[:]
    plan.decisions.extend(ordered)


def _is_causal_lm(shape: ModelShape, trainer: job_pb2.TrainerConfig) -> bool:
    if trainer.task == common_pb2.MODEL_TASK_TEXT_GENERATION:
        return True
    if trainer.task in (common_pb2.MODEL_TASK_TEXT_CLASSIFICATION, common_pb2.MODEL_TASK_EMBEDDING):
        return False
    return shape.is_causal_lm


def _default_seq(shape: ModelShape, causal_lm: bool) -> int:
    seq = DEFAULT_SEQ_CAUSAL if causal_lm else DEFAULT_SEQ_ENCODER
    return min(seq, shape.max_positions) if shape.max_positions else seq


def _count(n: int) -> str:
    return f"{n / 1e9:.3g}B" if n >= 10**9 else f"{n / 1e6:.3g}M"


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


# --- reasons -------------------------------------------------------------------------------------


def _explain(
    plan: run_pb2.Plan,
    ctx: _Ctx,
    trainer: job_pb2.TrainerConfig,
    smallest: dict[int, int],
    requested: int,
) -> None:
    o, add = trainer.overrides, plan.decisions.append
    add(
        _decision(
            "method",
            _method_name(plan.method),
            _method_reason(plan, ctx, trainer, smallest),
            bool(trainer.method),
        )
    )

    if o.HasField("zero_stage"):
        add(_decision("zero_stage", plan.zero_stage, "set in overrides", True))
    else:
        add(_decision("zero_stage", plan.zero_stage, _stage_reason(plan, ctx)))
    for name in ("offload_optimizer", "offload_parameters"):
        on = getattr(plan, name) == run_pb2.OFFLOAD_TARGET_CPU
        if o.HasField(name):
            reason = "set in overrides"
        elif on:
            reason = "the plan does not fit in device memory without it (costs PCIe traffic every step)"
        elif not ctx.gpu:
            reason = "the device is a CPU: nothing to offload to"
        else:
            reason = "fits without it"
        add(_decision(name, "cpu" if on else "none", reason, o.HasField(name)))
    if o.HasField("gradient_checkpointing"):
        add(_decision("gradient_checkpointing", plan.gradient_checkpointing, "set in overrides", True))
    elif plan.gradient_checkpointing:
        add(_decision("gradient_checkpointing", True, "activations do not fit otherwise; costs ~1/3 more compute"))
    else:
        add(_decision("gradient_checkpointing", False, "fits without recomputing activations"))

    world = ctx.world_size
    if o.HasField("micro_batch_size"):
        add(_decision("micro_batch_size", plan.micro_batch_size, "set in overrides", True))
    else:
        reason = (
            f"largest power of two <= min({MAX_MICRO_BATCH}, global {requested} / {world} ranks) "
            f"that fits ({_gib(plan.memory.total_bytes)} of {_gib(ctx.capacity)})"
        )
        add(_decision("micro_batch_size", plan.micro_batch_size, reason))
    if o.HasField("gradient_accumulation_steps"):
        add(_decision("gradient_accumulation_steps", plan.gradient_accumulation_steps, "set in overrides", True))
    else:
        reason = f"ceil({requested} / ({plan.micro_batch_size} micro x {world} ranks))"
        add(_decision("gradient_accumulation_steps", plan.gradient_accumulation_steps, reason))
    source = "set in hyperparameters" if trainer.hyperparameters.global_batch_size else "default"
    add(
        _decision(
            "global_batch_size", plan.global_batch_size, f"micro x accumulation x data parallel ({source}: {requested})"
        )
    )
    if plan.global_batch_size != requested:
        plan.warnings.append(
            f"global batch size {plan.global_batch_size} instead of {requested}: "
            f"{plan.micro_batch_size} micro x {plan.gradient_accumulation_steps} accumulation x {world} ranks"
        )

    if o.HasField("torch_compile"):
        add(_decision("torch_compile", plan.torch_compile, "set in overrides", True))
    elif ctx.gpu:
        add(_decision("torch_compile", True, "fused kernels on GPU; compile time is amortized over the run"))
    else:
        add(_decision("torch_compile", False, "CPU: compile time outweighs the gain"))
    if plan.method in (LORA, QLORA):
        plan.decisions.extend(_lora_decisions(plan.lora, trainer.hyperparameters.lora))
    backend_reason = "GPU collectives" if ctx.gpu else "CPU collectives (no NCCL without GPUs)"
    add(_decision("distributed_backend", plan.distributed_backend, backend_reason))


def _method_reason(plan: run_pb2.Plan, ctx: _Ctx, trainer: job_pb2.TrainerConfig, smallest: dict[int, int]) -> str:
    if trainer.method:
        return "set in trainer.method"
    total, cap = ctx.shape.total_parameters, _gib(ctx.capacity)
    if not plan.memory.fits:
        return f"nothing fits; {_method_name(plan.method)} with the most offload is the smallest plan"

    def too_big(m: int) -> str:
        return f"{_method_name(m).lower()} needs >= {_gib(smallest[m])} per device ({cap} available)"

    if plan.method == FULL:
        if ctx.from_scratch:
            return "training from scratch: every weight must learn"
        if ctx.lora is None and total > FULL_FT_MAX_PARAMETERS:
            return f"LoRA module layout unknown for {ctx.shape.model_type}: full fine-tuning"
        return f"{_count(total)} parameters <= {FULL_FT_MAX_PARAMETERS // 1_000_000}M and full fine-tuning fits"
    share = f"trains {ctx.lora_trainable / total:.2%} of the parameters"
    if plan.method == LORA:
        if FULL in smallest:
            return f"{too_big(FULL)}; LoRA {share}"
        return f"{_count(total)} parameters > {FULL_FT_MAX_PARAMETERS // 1_000_000}M; LoRA {share}"
    return f"{too_big(LORA)} with a 16-bit base; a 4-bit base fits (QLoRA {share})"


def _stage_reason(plan: run_pb2.Plan, ctx: _Ctx) -> str:
    offload = plan.offload_optimizer == run_pb2.OFFLOAD_TARGET_CPU
    if ctx.world_size == 1:
        if plan.zero_stage == 0:
            return "one rank: nothing to shard"
        return f"one rank: DeepSpeed offloads only at ZeRO >= 1, so stage {plan.zero_stage} with CPU offload"
    if plan.zero_stage == 2:
        return f"shards optimizer states and gradients over {ctx.world_size} ranks; weights stay whole"
    if offload:
        return "stage 3 alone does not fit: stage 3 with CPU offload"
    return "stage 2 does not fit: stage 3 also shards the weights (more all-gathers)"


# --- DeepSpeed -----------------------------------------------------------------------------------


def deepspeed_config(plan: run_pb2.Plan, max_grad_norm: float = 0.0) -> dict[str, Any]:
    """The DeepSpeed JSON config matching a plan's fields."""
    stage = plan.zero_stage
    zero: dict[str, Any] = {"stage": stage}
    if stage >= 1:
        zero |= {"overlap_comm": True, "reduce_bucket_size": BUCKET_BYTES, "reduce_scatter": True}
    if stage >= 2:
        zero["contiguous_gradients"] = True
    if stage in (1, 2):
        zero["allgather_bucket_size"] = BUCKET_BYTES
    if stage == 3:
        zero |= {
            "stage3_prefetch_bucket_size": 50_000_000,
            "stage3_param_persistence_threshold": 100_000,
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    if plan.offload_optimizer == run_pb2.OFFLOAD_TARGET_CPU:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if plan.offload_parameters == run_pb2.OFFLOAD_TARGET_CPU:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    fp16: dict[str, Any] = {"enabled": plan.precision == FP16}
    if plan.precision == FP16:
        fp16 |= {
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        }
    # bf16 adapters (LoRA / QLoRA) train in fp32 over a base the worker already loads in bf16: the
    # compute runs in bf16 without DeepSpeed's mixed-precision wrapper, which would only add master
    # copies of fp32 weights and a host-synchronising overflow check per parameter. (fp16 keeps the
    # wrapper: its loss scaling is what keeps fp16 gradients from underflowing.)
    adapters = plan.precision == BF16 and plan.method in (job_pb2.TRAINING_METHOD_LORA, job_pb2.TRAINING_METHOD_QLORA)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "train_batch_size": plan.global_batch_size,
        "zero_optimization": zero,
        "bf16": {"enabled": plan.precision == BF16 and not adapters},
        "fp16": fp16,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000_000,  # the trainer reports progress itself
        "wall_clock_breakdown": False,
    }
    if plan.precision == BF16 and not adapters:
        # bf16 weights with fp32 gradient accumulation: DeepSpeed's BF16 optimizer (fp32 master
        # weights), not its fp16-style unfused wrapper.
        config["data_types"] = {"grad_accum_dtype": "fp32"}
    # Explicit even when off: DeepSpeed's default clips at 1.0, and its clipping synchronises the
    # host with the GPU every step.
    config["gradient_clipping"] = max(0.0, max_grad_norm)
    return config


def deepspeed_config_dict(plan: run_pb2.Plan) -> dict[str, Any]:
    """`plan.deepspeed_config` as a dict for `deepspeed.initialize`: a Struct holds every number as a
    double, and DeepSpeed's config models want ints for sizes and counts, so whole floats become ints."""
    return _ints(json_format.MessageToDict(plan.deepspeed_config))


def _ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
