"""The strategy planner's choices across model sizes and devices, its memory model, overrides,
validation and DeepSpeed config; and the device profiles it plans for."""

from __future__ import annotations

import math

import pytest

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.common.builtin_models import builtin_config
from mlmesh.common.errors import InvalidArgument
from mlmesh.trainer.domain import device_profiles, planner
from mlmesh.trainer.domain.model_shapes import ModelShape, lora_parameters, shape_from_hf_config

pytestmark = pytest.mark.timeout(60)

GiB = 1 << 30
FULL, LORA, QLORA = job_pb2.TRAINING_METHOD_FULL, job_pb2.TRAINING_METHOD_LORA, job_pb2.TRAINING_METHOD_QLORA
BF16, FP16, FP32 = job_pb2.PRECISION_BF16, job_pb2.PRECISION_FP16, job_pb2.PRECISION_FP32
CPU_OFFLOAD, NO_OFFLOAD = run_pb2.OFFLOAD_TARGET_CPU, run_pb2.OFFLOAD_TARGET_NONE

H100 = device_profiles.gpu_profile("NVIDIA H100 80GB HBM3", 80 * GiB, 1024 * GiB)
V100 = device_profiles.gpu_profile("Tesla V100-SXM2-32GB", 32 * GiB, 256 * GiB)
CPU16 = device_profiles.cpu_profile(16 * GiB)


def llama(layers: int, hidden: int, heads: int, kv: int, inter: int, vocab: int = 32000) -> ModelShape:
    return shape_from_hf_config(
        {
            "model_type": "llama",
            "num_hidden_layers": layers,
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "intermediate_size": inter,
            "vocab_size": vocab,
            "max_position_embeddings": 4096,
        }
    )


GPT_125M = shape_from_hf_config({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257})
GPT_1B = shape_from_hf_config(builtin_config("gpt-1b"))
GPT_TINY = shape_from_hf_config(builtin_config("gpt2-tiny"))
MINILM = shape_from_hf_config(builtin_config("minilm"))
LLAMA_7B = llama(32, 4096, 32, 32, 11008)
LLAMA_70B = llama(80, 8192, 64, 8, 28672)


def trainer(**kw) -> job_pb2.TrainerConfig:
    return job_pb2.TrainerConfig(model="builtin:x", **kw)


def overrides(**kw) -> job_pb2.TrainerConfig:
    return trainer(overrides=job_pb2.PlanOverrides(**kw))


def decision(plan: run_pb2.Plan, field: str) -> run_pb2.PlanDecision:
    found = [d for d in plan.decisions if d.field == field]
    assert len(found) == 1, f"{field}: {found}"
    return found[0]


def check_consistent(plan: run_pb2.Plan) -> None:
    """Invariants every plan keeps, whatever was chosen."""
    m = plan.memory
    assert plan.micro_batch_size * plan.gradient_accumulation_steps * plan.data_parallel_size == plan.global_batch_size
    parts = m.parameters_bytes + m.gradients_bytes + m.optimizer_bytes + m.activations_bytes + m.overhead_bytes
    assert m.total_bytes == parts
    assert m.fits == (m.total_bytes <= m.device_capacity_bytes)
    assert (plan.offload_parameters == CPU_OFFLOAD) <= (plan.zero_stage == 3)
    ds = planner.deepspeed_config_dict(plan)
    assert ds["train_micro_batch_size_per_gpu"] == plan.micro_batch_size
    assert ds["gradient_accumulation_steps"] == plan.gradient_accumulation_steps
    assert ds["train_batch_size"] == plan.global_batch_size
    zero = ds["zero_optimization"]
    assert zero["stage"] == plan.zero_stage and isinstance(zero["stage"], int)
    assert ("offload_optimizer" in zero) == (plan.offload_optimizer == CPU_OFFLOAD)
    assert ("offload_param" in zero) == (plan.offload_parameters == CPU_OFFLOAD)
    assert zero.get("contiguous_gradients", False) == (plan.zero_stage >= 2)
    # bf16 adapters train in fp32 over a bf16 base, outside DeepSpeed's mixed-precision wrapper.
    bf16_adapters = plan.precision == BF16 and plan.method in (LORA, QLORA)
    assert ds["bf16"]["enabled"] == (plan.precision == BF16 and not bf16_adapters)
    assert ds.get("data_types") == ({"grad_accum_dtype": "fp32"} if ds["bf16"]["enabled"] else None)
    assert ds["fp16"]["enabled"] == (plan.precision == FP16)
    assert ds["zero_allow_untested_optimizer"] is True and ds["wall_clock_breakdown"] is False
    assert ds["steps_per_print"] == 10**9 and isinstance(ds["steps_per_print"], int)
    assert plan.distributed_backend in ("nccl", "gloo")
    assert plan.HasField("lora") == (plan.method in (LORA, QLORA))
    names = [d.field for d in plan.decisions]
    assert names[0] == "method" and len(names) == len(set(names))
    assert all(d.reason for d in plan.decisions)


# --- choices across model sizes ------------------------------------------------------------------


def test_125m_on_one_h100_is_full_finetuning_at_stage_0_bf16():
    plan = planner.plan_run(GPT_125M, trainer(), H100, 1)
    check_consistent(plan)
    assert 120e6 < GPT_125M.total_parameters < 130e6
    assert (plan.method, plan.zero_stage, plan.precision) == (FULL, 0, BF16)
    assert plan.offload_optimizer == plan.offload_parameters == NO_OFFLOAD
    assert plan.trainable_parameters == plan.total_parameters == GPT_125M.total_parameters
    assert plan.torch_compile and plan.distributed_backend == "nccl" and not plan.gradient_checkpointing
    assert plan.memory.fits and plan.memory.device_capacity_bytes == 80 * GiB
    assert plan.global_batch_size == 32 and not plan.warnings
    assert not any(d.overridden for d in plan.decisions)


def test_1b_on_one_h100_is_lora_with_defaults():
    plan = planner.plan_run(GPT_1B, trainer(), H100, 1)
    check_consistent(plan)
    assert plan.method == LORA and plan.zero_stage == 0 and plan.memory.fits
    assert (plan.lora.rank, plan.lora.alpha, plan.lora.dropout) == (16, 32, 0.0)
    assert list(plan.lora.target_modules) == ["c_attn"]
    assert plan.trainable_parameters == lora_parameters(GPT_1B, 16, ["c_attn"])
    assert "400M" in decision(plan, "method").reason
    assert "fusion under torch.compile" in decision(plan, "lora.dropout").reason


def test_7b_on_one_h100_is_lora():
    plan = planner.plan_run(LLAMA_7B, trainer(), H100, 1)
    check_consistent(plan)
    assert plan.method == LORA and plan.memory.fits and plan.precision == BF16
    assert list(plan.lora.target_modules) == ["q_proj", "v_proj"]


def test_70b_on_one_h100_is_qlora_because_a_bf16_base_does_not_fit():
    plan = planner.plan_run(LLAMA_70B, trainer(), H100, 1)
    check_consistent(plan)
    assert plan.method == QLORA and plan.memory.fits and plan.offload_optimizer == NO_OFFLOAD
    lora = decision(plan, "method").reason
    assert "lora needs" in lora and "4-bit" in lora
    # The 4-bit base: 0.5 B/param plus one fp32 constant per 64 weights, plus the bf16 adapters.
    adapters = lora_parameters(LLAMA_70B, 16, ["q_proj", "v_proj"])
    assert plan.memory.parameters_bytes == math.ceil(LLAMA_70B.total_parameters * (0.5 + 4 / 64 * 0.5) + 2 * adapters)
    assert plan.memory.optimizer_bytes == 12 * adapters


def test_gpt2_tiny_on_cpu_with_two_ranks_is_full_fp32_gloo_stage_2():
    plan = planner.plan_run(GPT_TINY, trainer(), CPU16, 2)
    check_consistent(plan)
    assert (plan.method, plan.precision, plan.zero_stage, plan.distributed_backend) == (FULL, FP32, 2, "gloo")
    assert not plan.torch_compile and plan.data_parallel_size == 2
    # Two ranks share the host: each gets half. fp32 AdamW: 4 + 4 + 8 B/param, grads and optimizer sharded.
    p = GPT_TINY.total_parameters
    m = plan.memory
    assert m.device_capacity_bytes == 8 * GiB and m.overhead_bytes == GiB // 2
    assert (m.parameters_bytes, m.gradients_bytes, m.optimizer_bytes) == (4 * p, 4 * p // 2, 8 * p // 2)
    # Activations: fp32 doubles s·b·h·(34 + 5·a·s/h) per layer; plus fp32 logits and their gradient.
    b, s = plan.micro_batch_size, 512
    per_layer = 2 * s * b * (34 * 128 + 5 * 4 * s)
    assert m.activations_bytes == 2 * per_layer + b * s * GPT_TINY.vocab_size * 8
    assert decision(plan, "max_seq_length").value == "512"


def test_minilm_encoder_defaults_to_128_tokens_and_no_lm_logits():
    plan = planner.plan_run(MINILM, trainer(task=common_pb2.MODEL_TASK_EMBEDDING), CPU16, 1)
    check_consistent(plan)
    assert decision(plan, "max_seq_length").value == "128" and plan.method == FULL and plan.zero_stage == 0
    b = plan.micro_batch_size
    assert plan.memory.activations_bytes == 6 * 2 * 128 * b * (34 * 384 + 5 * 12 * 128)


def test_gpus_per_node_sets_the_cpu_share_and_the_offload_per_node():
    assert planner.plan_run(GPT_TINY, trainer(), CPU16, 8, gpus_per_node=4).memory.device_capacity_bytes == 4 * GiB
    plan = planner.plan_run(GPT_1B, overrides(offload_optimizer=True), H100, 8, gpus_per_node=4)
    check_consistent(plan)
    assert plan.offload_optimizer == CPU_OFFLOAD and plan.zero_stage == 2
    per_rank = 12 * plan.trainable_parameters / 8  # ZeRO >= 1 shards the optimizer over 8 ranks
    assert plan.memory.optimizer_bytes == 0
    assert plan.memory.host_offload_bytes == math.ceil(per_rank * 4)


# --- the fallbacks, derived from the memory model itself ------------------------------------------


def _base(plan: run_pb2.Plan) -> int:
    """Bytes of a plan that do not depend on device capacity (the overhead does)."""
    return plan.memory.total_bytes - plan.memory.overhead_bytes


def _capacity_between(fits: int, does_not_fit: int) -> int:
    """A GPU size where `fits` bytes fit and `does_not_fit` do not: total = base + 1.5 GiB + 5% of capacity."""
    assert fits < does_not_fit
    return math.ceil(((fits + does_not_fit) / 2 + 1.5 * GiB) / 0.95)


def gpu(capacity: int, bf16: bool = True) -> api.DeviceProfile:
    return api.DeviceProfile(
        gpu_model="test", gpu_memory_bytes=capacity, host_memory_bytes=4096 * GiB, supports_bf16=bf16
    )


def _probe(shape: ModelShape, world: int, **kw) -> int:
    pinned = {"micro_batch_size": 1, **kw}
    return _base(planner.plan_run(shape, trainer(method=FULL, overrides=job_pb2.PlanOverrides(**pinned)), H100, world))


def test_several_ranks_use_stage_2_then_3_then_checkpointing_then_offload():
    model, world = GPT_1B, 4

    def probe(**kw) -> int:
        return _probe(model, world, **kw)

    s2 = probe(zero_stage=2, gradient_checkpointing=False)
    s3 = probe(zero_stage=3, gradient_checkpointing=False)
    s3_ckpt = probe(zero_stage=3, gradient_checkpointing=True)
    s3_off = probe(zero_stage=3, gradient_checkpointing=True, offload_optimizer=True)
    assert s3_off < s3_ckpt < s3 < s2

    def plan_for(capacity: int) -> run_pb2.Plan:
        plan = planner.plan_run(
            model, trainer(method=FULL, overrides=job_pb2.PlanOverrides(micro_batch_size=1)), gpu(capacity), world
        )
        check_consistent(plan)
        return plan

    wide = plan_for(_capacity_between(s2, s2 + GiB))
    assert (wide.zero_stage, wide.gradient_checkpointing, wide.offload_optimizer) == (2, False, NO_OFFLOAD)
    mid = plan_for(_capacity_between(s3, s2))
    assert (mid.zero_stage, mid.gradient_checkpointing) == (3, False) and mid.memory.fits
    assert "stage 2 does not fit" in decision(mid, "zero_stage").reason
    tight = plan_for(_capacity_between(s3_ckpt, s3))
    assert (tight.zero_stage, tight.gradient_checkpointing, tight.offload_optimizer) == (3, True, NO_OFFLOAD)
    assert "do not fit otherwise" in decision(tight, "gradient_checkpointing").reason
    offload = plan_for(_capacity_between(s3_off, s3_ckpt))
    assert (offload.zero_stage, offload.offload_optimizer, offload.memory.fits) == (3, CPU_OFFLOAD, True)
    assert offload.memory.host_offload_bytes > 0
    hopeless = plan_for(2 * GiB)
    assert not hopeless.memory.fits and any("no strategy fits" in w for w in hopeless.warnings)
    assert (hopeless.zero_stage, hopeless.offload_parameters, hopeless.gradient_checkpointing) == (3, CPU_OFFLOAD, True)


def test_one_rank_offloads_the_optimizer_at_stage_2():
    s0 = _probe(GPT_125M, 1, zero_stage=0, gradient_checkpointing=True)
    s2_off = _probe(GPT_125M, 1, zero_stage=2, gradient_checkpointing=True, offload_optimizer=True)
    pinned = job_pb2.PlanOverrides(micro_batch_size=1)
    plan = planner.plan_run(GPT_125M, trainer(method=FULL, overrides=pinned), gpu(_capacity_between(s2_off, s0)), 1)
    check_consistent(plan)
    assert (plan.zero_stage, plan.offload_optimizer, plan.offload_parameters) == (2, CPU_OFFLOAD, NO_OFFLOAD)
    assert "offloads only at ZeRO >= 1" in decision(plan, "zero_stage").reason


def test_a_small_model_goes_to_lora_when_full_finetuning_does_not_fit():
    full = _probe(GPT_125M, 1, zero_stage=0, gradient_checkpointing=True)
    lora = _base(
        planner.plan_run(GPT_125M, trainer(method=LORA, overrides=job_pb2.PlanOverrides(micro_batch_size=1)), H100, 1)
    )
    assert lora < full
    plan = planner.plan_run(GPT_125M, overrides(micro_batch_size=1), gpu(_capacity_between(lora, full)), 1)
    check_consistent(plan)
    assert plan.method == LORA and plan.offload_optimizer == NO_OFFLOAD
    assert decision(plan, "method").reason.startswith("full needs")


def test_nothing_fits_is_lora_with_offload_and_a_warning():
    plan = planner.plan_run(LLAMA_70B, trainer(), gpu(4 * GiB), 1)
    check_consistent(plan)
    assert plan.method == LORA and not plan.memory.fits
    assert plan.offload_optimizer == plan.offload_parameters == CPU_OFFLOAD and plan.gradient_checkpointing
    assert any("no strategy fits" in w for w in plan.warnings)


def test_plans_only_get_less_aggressive_as_the_device_grows():
    """More memory never leads to a plan later in the search order."""

    def order(plan: run_pb2.Plan) -> tuple:
        offload = plan.offload_optimizer == CPU_OFFLOAD or plan.offload_parameters == CPU_OFFLOAD
        return (not plan.memory.fits, offload, plan.method, plan.gradient_checkpointing, plan.zero_stage)

    for world in (1, 4):
        previous = None
        for gib in (4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 141, 192):
            plan = planner.plan_run(LLAMA_7B, trainer(), gpu(gib * GiB), world)
            check_consistent(plan)
            if previous is not None:
                assert order(plan) <= order(previous), (world, gib)
            previous = plan


# --- precision -----------------------------------------------------------------------------------


def test_gpu_without_bf16_gets_fp16_with_a_warning_and_loss_scaling():
    plan = planner.plan_run(GPT_125M, trainer(), V100, 1)
    check_consistent(plan)
    assert plan.precision == FP16 and any(w.startswith("fp16 chosen") for w in plan.warnings)
    fp16 = planner.deepspeed_config_dict(plan)["fp16"]
    assert fp16 == {**fp16, "enabled": True, "loss_scale": 0, "initial_scale_power": 16}


def test_fp32_on_gpu_uses_fp32_state_sizes():
    plan = planner.plan_run(GPT_125M, overrides(precision=FP32), H100, 1)
    check_consistent(plan)
    p = GPT_125M.total_parameters
    assert (plan.memory.parameters_bytes, plan.memory.gradients_bytes, plan.memory.optimizer_bytes) == (
        4 * p,
        4 * p,
        8 * p,
    )
    full = planner.plan_run(GPT_125M, trainer(), H100, 1)
    assert (full.memory.parameters_bytes, full.memory.gradients_bytes, full.memory.optimizer_bytes) == (
        2 * p,
        2 * p,
        12 * p,
    )


# --- overrides -----------------------------------------------------------------------------------


def test_every_override_is_honoured_and_marked():
    user = job_pb2.TrainerConfig(
        method=LORA,
        hyperparameters=job_pb2.Hyperparameters(
            global_batch_size=48,
            max_seq_length=256,
            max_grad_norm=1.0,
            lora=job_pb2.LoraConfig(rank=8, alpha=4, dropout=0.1, target_modules=["c_attn", "c_proj"]),
        ),
        overrides=job_pb2.PlanOverrides(
            zero_stage=3,
            offload_optimizer=True,
            offload_parameters=True,
            precision=FP16,
            micro_batch_size=3,
            gradient_accumulation_steps=4,
            gradient_checkpointing=True,
            torch_compile=False,
        ),
    )
    plan = planner.plan_run(GPT_125M, user, H100, 4)
    check_consistent(plan)
    assert (plan.method, plan.zero_stage, plan.precision) == (LORA, 3, FP16)
    assert plan.offload_optimizer == plan.offload_parameters == CPU_OFFLOAD
    assert (plan.micro_batch_size, plan.gradient_accumulation_steps, plan.global_batch_size) == (3, 4, 48)
    assert plan.gradient_checkpointing and not plan.torch_compile
    assert (plan.lora.rank, plan.lora.alpha, list(plan.lora.target_modules)) == (8, 4, ["c_attn", "c_proj"])
    assert plan.lora.dropout == pytest.approx(0.1)
    assert plan.trainable_parameters == lora_parameters(GPT_125M, 8, ["c_attn", "c_proj"])
    overridden = {d.field for d in plan.decisions if d.overridden}
    assert overridden == {
        "method",
        "zero_stage",
        "offload_optimizer",
        "offload_parameters",
        "precision",
        "micro_batch_size",
        "gradient_accumulation_steps",
        "gradient_checkpointing",
        "torch_compile",
        "lora.rank",
        "lora.alpha",
        "lora.dropout",
        "lora.target_modules",
    }
    assert "max_seq_length" not in {d.field for d in plan.decisions}  # set by the user: not a decision
    ds = planner.deepspeed_config_dict(plan)
    assert ds["gradient_clipping"] == 1
    assert ds["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}


def test_rank_alone_scales_alpha_and_offload_parameters_alone_implies_stage_3():
    user = trainer(
        method=LORA,
        hyperparameters=job_pb2.Hyperparameters(lora=job_pb2.LoraConfig(rank=64)),
        overrides=job_pb2.PlanOverrides(offload_parameters=True),
    )
    plan = planner.plan_run(LLAMA_7B, user, H100, 2)
    check_consistent(plan)
    assert (plan.lora.rank, plan.lora.alpha) == (64, 128)
    assert plan.zero_stage == 3 and plan.offload_parameters == CPU_OFFLOAD
    assert not decision(plan, "zero_stage").overridden


def test_overridden_accumulation_shapes_the_micro_batch_and_odd_batches_warn():
    plan = planner.plan_run(GPT_TINY, overrides(gradient_accumulation_steps=2), CPU16, 2)
    check_consistent(plan)
    assert (plan.micro_batch_size, plan.gradient_accumulation_steps, plan.global_batch_size) == (8, 2, 32)
    odd = planner.plan_run(GPT_TINY, trainer(hyperparameters=job_pb2.Hyperparameters(global_batch_size=30)), CPU16, 4)
    check_consistent(odd)
    assert odd.global_batch_size != 30 and any("instead of 30" in w for w in odd.warnings)
    tiny = planner.plan_run(GPT_TINY, trainer(hyperparameters=job_pb2.Hyperparameters(global_batch_size=2)), CPU16, 4)
    check_consistent(tiny)
    assert (tiny.micro_batch_size, tiny.gradient_accumulation_steps, tiny.global_batch_size) == (1, 1, 4)


def test_micro_batch_is_capped_at_64():
    plan = planner.plan_run(
        GPT_TINY, trainer(hyperparameters=job_pb2.Hyperparameters(global_batch_size=1024, max_seq_length=16)), H100, 1
    )
    check_consistent(plan)
    assert (plan.micro_batch_size, plan.gradient_accumulation_steps) == (64, 16)


# --- validation ----------------------------------------------------------------------------------


def test_qlora_on_cpu_names_trainer_method():
    with pytest.raises(InvalidArgument) as info:
        planner.plan_run(LLAMA_7B, trainer(method=QLORA), CPU16, 1)
    [violation] = info.value.violations
    assert (
        violation.field == "trainer.method"
        and "GPU" in violation.description
        and "bitsandbytes" in violation.description
    )


@pytest.mark.parametrize(
    ("config", "device", "world", "field"),
    [
        (overrides(zero_stage=4), H100, 1, "trainer.overrides.zero_stage"),
        (overrides(zero_stage=-1), H100, 1, "trainer.overrides.zero_stage"),
        (overrides(zero_stage=2, offload_parameters=True), H100, 2, "trainer.overrides.offload_parameters"),
        (overrides(zero_stage=0, offload_optimizer=True), H100, 1, "trainer.overrides.offload_optimizer"),
        (overrides(offload_optimizer=True), CPU16, 1, "trainer.overrides.offload_optimizer"),
        (overrides(micro_batch_size=0), H100, 1, "trainer.overrides.micro_batch_size"),
        (overrides(gradient_accumulation_steps=-2), H100, 1, "trainer.overrides.gradient_accumulation_steps"),
        (overrides(precision=BF16), CPU16, 1, "trainer.overrides.precision"),
        (overrides(precision=FP16), CPU16, 2, "trainer.overrides.precision"),
        (trainer(), H100, 0, "workers.count"),
        (
            trainer(hyperparameters=job_pb2.Hyperparameters(max_seq_length=2048)),
            H100,
            1,
            "trainer.hyperparameters.max_seq_length",
        ),
        (
            trainer(hyperparameters=job_pb2.Hyperparameters(global_batch_size=-1)),
            H100,
            1,
            "trainer.hyperparameters.global_batch_size",
        ),
        (
            trainer(hyperparameters=job_pb2.Hyperparameters(lora=job_pb2.LoraConfig(target_modules=["q_proj"]))),
            H100,
            1,
            "trainer.hyperparameters.lora.target_modules",
        ),
        (
            trainer(hyperparameters=job_pb2.Hyperparameters(lora=job_pb2.LoraConfig(dropout=1.0))),
            H100,
            1,
            "trainer.hyperparameters.lora.dropout",
        ),
        (
            trainer(method=QLORA, overrides=job_pb2.PlanOverrides(offload_parameters=True)),
            H100,
            1,
            "trainer.overrides.offload_parameters",
        ),
        (trainer(), api.DeviceProfile(), 1, "device.host_memory_bytes"),
    ],
)
def test_invalid_requests_name_the_field(config, device, world, field):
    with pytest.raises(InvalidArgument) as info:
        planner.plan_run(GPT_125M, config, device, world)
    assert [v.field for v in info.value.violations] == [field]
    assert field in info.value.message


def test_all_violations_are_reported_together():
    bad = overrides(zero_stage=7, micro_batch_size=-1, precision=FP16)
    with pytest.raises(InvalidArgument) as info:
        planner.plan_run(GPT_TINY, bad, CPU16, 0)
    assert {v.field for v in info.value.violations} == {
        "workers.count",
        "trainer.overrides.zero_stage",
        "trainer.overrides.micro_batch_size",
        "trainer.overrides.precision",
    }


def test_unknown_architecture_without_lora_layout_is_full_finetuned():
    shape = ModelShape("t5", 24, 4096, 32, 16384, 32128, 0, True, 3_000_000_000)
    plan = planner.plan_run(shape, trainer(), H100, 8)
    check_consistent(plan)
    assert plan.method == FULL and "LoRA module layout unknown" in decision(plan, "method").reason
    with pytest.raises(InvalidArgument, match=r"lora\.target_modules"):
        planner.plan_run(shape, trainer(method=LORA), H100, 8)


# --- device profiles -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "flops"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("nvidia l40s", 362e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA A10", 125e12),
        ("Tesla V100-SXM2-32GB", 0.0),
        ("", 0.0),
    ],
)
def test_peak_flops_by_model_name(name, flops):
    assert device_profiles.peak_flops(name) == flops


def test_bf16_support_and_profiles():
    assert not device_profiles.supports_bf16("Tesla V100-SXM2-16GB")
    assert not device_profiles.supports_bf16("Tesla T4")
    assert device_profiles.supports_bf16("NVIDIA A100-SXM4-40GB") and device_profiles.supports_bf16("Mystery GPU")
    assert H100.supports_bf16 and H100.peak_flops_per_second == 989e12 and H100.gpu_memory_bytes == 80 * GiB
    assert CPU16.gpu_memory_bytes == 0 and CPU16.host_memory_bytes == 16 * GiB and not CPU16.gpu_model
    sparse = api.DeviceProfile(gpu_model="NVIDIA L4", gpu_memory_bytes=24 * GiB)
    done = device_profiles.complete_profile(sparse)
    assert done.supports_bf16 and done.peak_flops_per_second == 121e12 and not sparse.supports_bf16


def test_local_host_profile_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:         1000 kB\n")
    assert device_profiles.host_memory_bytes(meminfo) == 16384000 * 1024
    local = device_profiles.local_host_profile()
    assert local.host_memory_bytes > 0 and local.gpu_memory_bytes == 0


def test_training_from_scratch_is_full_even_for_large_models():
    plan = planner.plan_run(LLAMA_7B, trainer(), H100, 8, from_scratch=True)
    check_consistent(plan)
    assert plan.method == FULL and plan.memory.fits and plan.zero_stage in (2, 3)
    assert "from scratch" in decision(plan, "method").reason
    assert plan.trainable_parameters == LLAMA_7B.total_parameters
