"""LoRA fine-tuning throughput on GPUs: the platform's planner + worker against two hand-written
loops on the same model, batch and sequence length, in the same process tree and run.

- plain:    transformers + peft, fp32 weights under bf16 autocast, LoRA dropout 0.05 (a typical script)
- compiled: the same loop with LoRA dropout 0 and torch.compile (the best quick hand-tuned loop)
- platform: `python -m mlmesh.trainer.worker` ranks launched by the local executor, with the plan
            `plan_run` makes for the model on this GPU (bf16 frozen base, DeepSpeed, compile ...)

Model: builtin:gpt-1b (GPT-2 style, 24 layers, 2048 hidden, ~1.3B parameters, random weights).
MFU counts 4 FLOPs per parameter per token (LoRA: no weight gradients for the frozen base).

    python benchmarks/bench_trainer_gpu.py all --out results.json          # 1 GPU
    python benchmarks/bench_trainer_gpu.py platform --ranks 2 --out r.json   # ZeRO-2 data parallel
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("libs/common/src", "libs/sdk/src", "services/trainer/src"):
    sys.path.insert(0, str(ROOT / sub))

MODEL = "builtin:gpt-1b"
SEQ = 1024
MICRO = 8
WARMUP = 6


def _gpu() -> tuple[str, int]:
    import torch

    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory


def _shape_and_params():
    from mlmesh.common.builtin_models import builtin_config
    from mlmesh.trainer.domain.model_shapes import shape_from_hf_config

    return shape_from_hf_config(builtin_config(MODEL))


def _mfu(tps: float, params: int, peak: float, ranks: int = 1) -> float:
    return tps * 4 * params / (peak * ranks) if peak else 0.0


# --- hand-written loops ----------------------------------------------------------------------------


def hand_loop(compiled: bool, steps: int, bf16_base: bool = False) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from mlmesh.common.builtin_models import builtin_config

    torch.manual_seed(0)
    cfg = dict(builtin_config(MODEL))
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    if bf16_base:  # diagnostic only: the platform's own choices (bf16 frozen base, no base dropout)
        config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    else:
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").cuda()  # fp32, as scripts do
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0 if compiled else 0.05, target_modules=["c_attn"])
    model = get_peft_model(model, lora)
    if compiled:
        model = torch.compile(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    ids = torch.randint(0, 30522, (MICRO, SEQ), device="cuda")
    times = []
    for _ in range(WARMUP + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[WARMUP:])
    mem = torch.cuda.max_memory_allocated()
    del model, opt
    torch.cuda.empty_cache()
    return {"median_step_s": step, "tokens_per_second": MICRO * SEQ / step, "max_memory_gib": mem / 2**30}


# --- the platform ------------------------------------------------------------------------------------


def _dataset(path: Path, tokens_needed: int) -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)] + [
        "the",
        "a",
        "of",
        "and",
        "to",
        "in",
        "is",
        "was",
        "for",
        "on",
        "with",
        "as",
        "by",
        "at",
    ]
    n = 0
    with path.open("w") as f:
        while n < tokens_needed * 1.3:
            text = " ".join(rng.choice(words) for _ in range(200))
            f.write(json.dumps({"text": text}) + "\n")
            n += 400  # "w123" is about two WordPiece tokens


def platform_run(ranks: int, steps: int, work: Path) -> dict:
    from google.protobuf import json_format

    from mlmesh.api.scheduler.v1 import job_pb2
    from mlmesh.trainer.domain import device_profiles
    from mlmesh.trainer.domain.planner import plan_run
    from mlmesh.trainer.executors.base import LaunchSpec, RankLaunch
    from mlmesh.trainer.executors.local import LocalExecutor
    from mlmesh.trainer.worker.config import WorkerConfig

    name, memory = _gpu()
    device = device_profiles.gpu_profile(name, memory, 128 << 30)
    trainer = job_pb2.TrainerConfig(model=MODEL, method=job_pb2.TRAINING_METHOD_LORA)
    hp = trainer.hyperparameters
    hp.max_steps, hp.max_seq_length, hp.global_batch_size, hp.seed = WARMUP + steps, SEQ, MICRO * ranks, 0
    trainer.overrides.micro_batch_size = MICRO  # the baselines' batch
    plan = plan_run(_shape_and_params(), trainer, device, ranks, ranks)
    data = work / "data.jsonl"
    if not data.exists():
        _dataset(data, MICRO * ranks * SEQ * (WARMUP + steps))
    progress = work / f"progress-{ranks}.jsonl"
    progress.unlink(missing_ok=True)
    cfg = WorkerConfig(
        run_id=f"bench-{ranks}",
        job_id="bench",
        team="bench",
        model=MODEL,
        dataset=str(data),
        task="text_generation",
        plan=json_format.MessageToDict(plan),
        hyperparameters=json_format.MessageToDict(hp),
        output_dir=str(work / f"out-{ranks}"),
        progress_file=str(progress),
        peak_flops_per_device=device.peak_flops_per_second,
        upload_model=False,
    )
    cfg_path = work / f"worker-{ranks}.json"
    cfg_path.write_text(cfg.to_json())
    spec = LaunchSpec(
        run_id=cfg.run_id,
        job_id="bench",
        launch_id=0,
        world_size=ranks,
        argv=[sys.executable, "-m", "mlmesh.trainer.worker", "--config", str(cfg_path)],
        env={"PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"},
        ranks=[RankLaunch(r, r, device_ids=(str(r),)) for r in range(ranks)],
        log_dir=work / "logs",
        master_port=29511 + ranks,
    )

    async def go() -> list:
        group = await LocalExecutor().launch(spec)
        return [await group.next_exit() for _ in range(ranks)]

    t0 = time.perf_counter()
    exits = asyncio.run(go())
    wall = time.perf_counter() - t0
    if not all(e.ok for e in exits):
        raise SystemExit(f"worker failed: {[(e.rank, e.exit_code, e.signal) for e in exits]}\n{exits[0].log_tail}")
    lines = [json.loads(x) for x in progress.read_text().splitlines()]
    measured = [p["tokens_per_second"] for p in lines if p["step"] > WARMUP]
    tps = statistics.median(measured)
    return {
        "ranks": ranks,
        "tokens_per_second": tps,
        "median_step_s": MICRO * SEQ * ranks / tps,
        "steps_measured": len(measured),
        "wall_s": wall,
        "plan": {
            "method": job_pb2.TrainingMethod.Name(plan.method),
            "zero_stage": plan.zero_stage,
            "precision": job_pb2.Precision.Name(plan.precision),
            "micro_batch_size": plan.micro_batch_size,
            "gradient_accumulation_steps": plan.gradient_accumulation_steps,
            "gradient_checkpointing": plan.gradient_checkpointing,
            "torch_compile": plan.torch_compile,
            "lora": json_format.MessageToDict(plan.lora),
            "estimated_gib": plan.memory.total_bytes / 2**30,
        },
        "final_loss": lines[-1]["loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["all", "baselines", "platform", "diagnose"])
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    from mlmesh.trainer.domain import device_profiles

    name, memory = _gpu()
    peak = device_profiles.peak_flops(name)
    params = _shape_and_params().total_parameters
    work = args.work or Path(tempfile.mkdtemp(prefix="mlmesh-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"gpu": name, "gpu_memory_gib": memory / 2**30, "peak_flops": peak, "parameters": params}
    result.update({"model": MODEL, "seq": SEQ, "micro_batch": MICRO, "warmup_steps": WARMUP, "steps": args.steps})
    rows = {}
    if args.what in ("all", "baselines"):
        rows["plain"] = hand_loop(False, args.steps)
        rows["compiled"] = hand_loop(True, args.steps)
    if args.what == "diagnose":
        rows["diagnostic_bf16_base_compiled"] = hand_loop(True, args.steps, bf16_base=True)
    if args.what in ("all", "platform", "diagnose"):
        if args.ranks > 1:
            rows["platform_1"] = platform_run(1, args.steps, work)
        rows[f"platform_{args.ranks}"] = platform_run(args.ranks, args.steps, work)
    for row in rows.values():
        row["mfu"] = _mfu(row["tokens_per_second"], params, peak, row.get("ranks", 1))
    if "plain" in rows and "platform_1" in rows:
        for base in ("plain", "compiled"):
            rows["platform_1"][f"vs_{base}"] = rows["platform_1"]["tokens_per_second"] / rows[base]["tokens_per_second"]
    if "platform_1" in rows and args.ranks > 1:
        many = rows[f"platform_{args.ranks}"]
        many["scaling_efficiency"] = many["tokens_per_second"] / (args.ranks * rows["platform_1"]["tokens_per_second"])
    result["rows"] = rows
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
