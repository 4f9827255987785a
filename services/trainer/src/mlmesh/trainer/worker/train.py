"""The training loop of one rank: DeepSpeed engine over a (peft) model, deterministic data order,
periodic and on-demand checkpoints, progress reports and the final model."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from mlmesh.trainer.domain import schedule
from mlmesh.trainer.worker import checkpoint, data, modeling
from mlmesh.trainer.worker.config import TOKEN_ENV, WorkerConfig
from mlmesh.trainer.worker.reporter import Reporter
from mlmesh.trainer.worker.tracing import phase

DEFAULT_LR = {"FULL": 5e-5, "LORA": 2e-4, "QLORA": 2e-4}
DEFAULT_SEQ = {modeling.CLASSIFICATION: 128, modeling.GENERATION: 512}


class StopRequested:
    """SIGTERM asks for a checkpoint and a clean exit at the next step boundary (all ranks agree
    through the per-step all-reduce); a second SIGTERM falls back to the default: exit now."""

    def __init__(self) -> None:
        self.flag = False
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum, frame) -> None:
        self.flag = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _method(plan: dict) -> str:
    return str(plan.get("method", "TRAINING_METHOD_FULL")).removeprefix("TRAINING_METHOD_")


def _dtype(plan: dict) -> torch.dtype:
    p = str(plan.get("precision", "PRECISION_FP32"))
    return {"PRECISION_BF16": torch.bfloat16, "PRECISION_FP16": torch.float16}.get(p, torch.float32)


def _train_in_fp32(model) -> None:
    """Adapters over a half-precision base, outside DeepSpeed's mixed-precision wrapper: trainable
    weights (and so their optimizer states) are fp32 while the frozen base computes in bf16. peft's
    LoRA layers cast their input to the adapter's dtype themselves; a fully trained module (e.g. a
    classification head kept by modules_to_save) gets its floating inputs cast here. No autocast:
    it would run LayerNorm and friends in fp32 and add a cast around every op of the base."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()

    def to_fp32(module, args, kwargs):
        cast = lambda v: v.float() if torch.is_tensor(v) and v.is_floating_point() else v  # noqa: E731
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    for module in model.modules():
        if type(module).__name__ == "ModulesToSaveWrapper":
            module.register_forward_pre_hook(to_fp32, with_kwargs=True)


def _wrapped(ds_config: dict) -> bool:
    """Whether DeepSpeed wraps the optimizer for mixed precision (then it owns the gradients)."""
    return bool((ds_config.get("bf16") or {}).get("enabled") or (ds_config.get("fp16") or {}).get("enabled"))


def _plan_dropout(plan: dict) -> float | None:
    for d in plan.get("decisions") or []:
        if d.get("field") == "model_dropout":
            return float(d.get("value", "0"))
    return None


def _whole_numbers(value):
    """The plan's DeepSpeed config went through a protobuf Struct, where every number is a float;
    DeepSpeed wants its counts and sizes as ints."""
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _sync_debug(on: bool) -> None:
    """MLMESH_WORKER_SYNC_DEBUG=<step>: print the Python stack of every host-synchronising CUDA call
    made during that step (they stall the GPU pipeline)."""
    import traceback
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"SYNC: {message}\n{''.join(traceback.format_stack(limit=14)[:-2])}", flush=True)

    warnings.simplefilter("always")
    warnings.showwarning = show
    torch.cuda.set_sync_debug_mode("warn" if on else "default")


class StepProfiler:
    """MLMESH_WORKER_PROFILE=first:count:path profiles rank 0's steps [first, first+count) with the
    torch profiler and writes the top kernels and ops to `path` (a text table)."""

    def __init__(self, first: int = -1, count: int = 0, path: str = ""):
        self.first, self.count, self.path = first, count, path
        self._prof = None

    @classmethod
    def from_env(cls, rank: int) -> StepProfiler:
        spec = os.environ.get("MLMESH_WORKER_PROFILE", "")
        if rank != 0 or not spec:
            return cls()
        first, count, path = spec.split(":", 2)
        return cls(int(first), int(count), path)

    def at(self, step: int) -> None:
        sync_step = int(os.environ.get("MLMESH_WORKER_SYNC_DEBUG", "-1"))
        if torch.cuda.is_available() and step in (sync_step, sync_step + 1):
            _sync_debug(step == sync_step)
        if step == self.first:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self._prof = profile(activities=acts)
            self._prof.__enter__()
            self._t0 = time.monotonic()
        elif self._prof is not None and step == self.first + self.count:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall = time.monotonic() - self._t0
            self._prof.__exit__(None, None, None)
            avg = self._prof.key_averages()
            with open(self.path, "w") as f:
                f.write(f"{self.count} steps in {wall:.4f}s wall\n")
                f.write(
                    avg.table(
                        sort_by="self_cuda_time_total" if torch.cuda.is_available() else "cpu_time_total", row_limit=45
                    )
                )
                f.write("\n\nby CPU time\n")
                f.write(avg.table(sort_by="cpu_time_total", row_limit=30))
            self._prof = None


class ControlChannel:
    """The per-step all-reduce of [loss, tokens, stop, checkpoint-due]. On CUDA its result is read
    one step late, through a pinned buffer and an event, so reading it never waits for the step
    just queued; on CPUs (gloo, synchronous anyway) it is read at once. Every rank reads the same
    values at the same step, so decisions stay collective."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.pending: list[tuple[int, torch.Tensor, object]] = []

    def submit(self, step: int, values: list) -> None:
        # torch.full is a kernel; torch.tensor(x, device=cuda) would be a host copy that waits for the GPU.
        t = torch.stack([v if torch.is_tensor(v) else torch.full((), v, device=self.device) for v in values]).float()
        dist.all_reduce(t)
        if self.cuda:
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.pending.append((step, host, event))
        else:
            self.pending.append((step, t, None))

    def collect(self, final: bool = False) -> tuple[int, list[float]] | None:
        """The oldest result that may be read now: on CUDA all but the newest (all when `final`)."""
        if not self.pending or (self.cuda and len(self.pending) < 2 and not final):
            return None
        step, t, event = self.pending.pop(0)
        if event is not None:
            event.synchronize()
        return step, t.tolist()

    def drain(self) -> None:
        """Before a checkpoint: wait for everything queued (its decisions are taken at the next reads)."""
        if self.cuda:
            torch.cuda.synchronize()


class Worker:
    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.plan = cfg.plan
        self.hp = cfg.hyperparameters
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.method = _method(self.plan)
        self.task = cfg.task
        self.seed = int(self.hp.get("seed") or 42)
        self.stop = StopRequested()
        self.output = Path(cfg.output_dir)
        self.output.mkdir(parents=True, exist_ok=True)

    # --- setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        import deepspeed

        backend = self.plan.get("distributedBackend") or "gloo"
        if backend == "nccl":
            # An executor that sets CUDA_VISIBLE_DEVICES per rank leaves each rank one device, 0;
            # DeepSpeed picks its device from LOCAL_RANK, so that must say 0 too.
            index = self.local_rank if torch.cuda.device_count() > self.local_rank else 0
            os.environ["LOCAL_RANK"] = str(index)
            torch.cuda.set_device(index)
            self.device = torch.device("cuda", index)
        else:
            self.device = torch.device("cpu")
        deepspeed.init_distributed(dist_backend=backend, timeout=timedelta(seconds=self.cfg.collective_timeout_s))
        self.reporter = Reporter(
            self.cfg.nats_url, self.cfg.run_id, self.rank, self.cfg.heartbeat_interval_s, self.cfg.progress_file
        )
        self.link = None
        if self.cfg.storage_address:
            from mlmesh.trainer.worker.storage_link import StorageLink

            token = os.environ.get(TOKEN_ENV, "")
            self.link = StorageLink(self.cfg.storage_address, token, self.cfg.team, self.cfg.job_id, self.cfg.run_id)
        self.committer = checkpoint.Committer(self.link, self.reporter, self.cfg.async_checkpoint)
        with phase("load_data"):
            self._load_data()
        with phase("load_model", model=self.cfg.model, method=self.method):
            self._build_engine()

    def _load_data(self) -> None:
        self.tokenizer = modeling.load_tokenizer(self.cfg.model)
        rows = data.read_jsonl(self.cfg.dataset)
        train_rows, eval_rows = data.split_rows(rows)
        cols = self.cfg.column_mapping
        text_col = cols.get("text", "text")
        self.seq_len = int(self.hp.get("maxSeqLength") or DEFAULT_SEQ.get(self.task, 512))
        if self.task == modeling.CLASSIFICATION:
            label_col = cols.get("label", "label")
            names = sorted({str(r.get(label_col)) for r in train_rows if label_col in r})
            self.train = data.classification_examples(
                train_rows, self.tokenizer, self.seq_len, text_col, label_col, names, self.cfg.dataset
            )
            self.eval = (
                data.classification_examples(
                    eval_rows, self.tokenizer, self.seq_len, text_col, label_col, names, self.cfg.dataset
                )
                if eval_rows
                else None
            )
        else:
            self.train = data.causal_lm_examples(train_rows, self.tokenizer, self.seq_len, text_col, self.cfg.dataset)
            self.eval = (
                data.causal_lm_examples(eval_rows, self.tokenizer, self.seq_len, text_col, self.cfg.dataset)
                if eval_rows
                else None
            )
        self.micro = int(self.plan.get("microBatchSize") or 1)
        self.accum = int(self.plan.get("gradientAccumulationSteps") or 1)
        self.global_batch = self.micro * self.accum * self.world
        self.total_steps = schedule.total_steps(
            len(self.train), self.global_batch, float(self.hp.get("epochs") or 1.0), int(self.hp.get("maxSteps") or 0)
        )

    def _build_engine(self) -> None:
        import deepspeed

        quantized = self.method == "QLORA"
        dtype = _dtype(self.plan)
        # Frozen base weights need no fp32 copy: under LoRA they load in the compute dtype.
        load_dtype = dtype if self.method in ("LORA", "QLORA") else torch.float32
        model = modeling.load_model(
            self.cfg.model,
            self.task,
            num_labels=max(2, len(self.train.label_names)),
            dtype=load_dtype,
            quantize_4bit=quantized,
            seed=self.seed,
            device=self.device,
            dropout=_plan_dropout(self.plan),
        )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        ckpt = bool(self.plan.get("gradientCheckpointing"))
        if ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.method in ("LORA", "QLORA"):
            model = modeling.apply_lora(model, self.task, self.plan.get("lora") or {}, quantized, ckpt)
        ds_config = _whole_numbers(dict(self.plan.get("deepspeedConfig") or {}))
        half = dtype != torch.float32 and not (ds_config.get("bf16") or {}).get("enabled")
        half = half and not (ds_config.get("fp16") or {}).get("enabled")
        if half:
            _train_in_fp32(model)
        # Dropout and LoRA init draw from here on; each rank its own stream, restored on resume.
        random.seed(self.seed + self.rank)
        np.random.seed(self.seed + self.rank)
        torch.manual_seed(self.seed + self.rank)
        params = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.total_params = sum(p.numel() for p in model.parameters())
        lr = float(self.hp.get("learningRate") or DEFAULT_LR.get(self.method, 1e-4))
        fused = self.device.type == "cuda"
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=float(self.hp.get("weightDecay") or 0.0), fused=fused)
        warmup = int(self.hp.get("warmupSteps") or 0)
        kind = self.hp.get("lrScheduler") or "linear"
        lr_sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: schedule.lr_multiplier(s, self.total_steps, warmup, kind)
        )
        ds_config.setdefault("gradient_clipping", 0.0)  # DeepSpeed's own default is 1.0
        # Without ZeRO or a precision wrapper the gradients are plain .grad tensors: clip them with
        # torch's foreach clipping, which (unlike DeepSpeed's) never waits for the GPU.
        stage = int((ds_config.get("zero_optimization") or {}).get("stage", 0))
        self.clip_norm = 0.0
        if stage == 0 and not _wrapped(ds_config) and ds_config["gradient_clipping"] > 0:
            self.clip_norm, ds_config["gradient_clipping"] = float(ds_config["gradient_clipping"]), 0.0
        self.trainable_params = params
        ds_config.setdefault("train_micro_batch_size_per_gpu", self.micro)
        ds_config.setdefault("gradient_accumulation_steps", self.accum)
        ds_config["train_batch_size"] = self.global_batch
        ds_config.setdefault("zero_allow_untested_optimizer", True)
        ds_config.setdefault("steps_per_print", 10**9)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=lr_sched, config=ds_config
        )
        if self.plan.get("torchCompile"):
            self.engine.compile()

    # --- loop ------------------------------------------------------------------------------------

    def resume(self) -> int:
        directory = None
        if self.cfg.resume_dir:
            directory = Path(self.cfg.resume_dir)
        elif self.cfg.resume_artifact_id:
            if self.link is None:
                raise ValueError("resume_artifact_id needs storage_address")
            directory = self.link.fetch(
                self.cfg.resume_artifact_id, self.output / f"resume-{self.cfg.resume_artifact_id}-rank{self.rank}"
            )
        if directory is None:
            return 0
        state = checkpoint.restore(self.engine, directory, self.rank, self.world)
        return int(state["step"])

    def run(self) -> int:
        with phase("resume"):
            start = self.resume()
        with phase("train", start_step=start, total_steps=self.total_steps):
            step, metrics = self._train(start)
        if metrics is None:  # stopped on request, after a checkpoint
            return 0
        with phase("finish", step=step):
            self.finish(step, metrics)
        return 0

    def _train(self, start: int) -> tuple[int, dict[str, float] | None]:
        """The training loop from `start`: the last step, and the metrics for `finish` (None when
        it stopped on request)."""
        flops_per_token = (4 if self.method in ("LORA", "QLORA") else 6) * self.total_params
        ck_every = self.cfg.checkpoint_every_n_steps
        ck_secs = self.cfg.checkpoint_every_s
        last_ck = time.monotonic()
        metrics: dict[str, float] = {}
        if start == 0 and self.eval is not None and self.task == modeling.CLASSIFICATION:
            metrics["eval_accuracy_before"] = self.evaluate()["eval_accuracy"]
        window = {"t": time.monotonic(), "tokens": 0.0, "samples": 0}
        step_times: list[float] = []
        # saved_at: the step of the latest save. A due flag raised at or before it (read a step late
        # on CUDA, when rank 0 may already have raised it again) asked for that same checkpoint.
        last = {"loss": float("nan"), "stop": False, "due": False, "saved_at": start}

        def absorb(at: int, values: list[float]) -> None:
            """Book one step's all-reduced figures: loss, throughput, and the control flags."""
            loss_v, tokens_v, stop_v, due_v = values
            last["loss"] = loss_v / (self.accum * self.world)
            last["stop"] = last["stop"] or stop_v > 0
            last["due"] = last["due"] or (due_v > 0 and at > last["saved_at"])
            window["tokens"] += tokens_v
            window["samples"] += self.global_batch
            if at % max(1, self.cfg.log_every_n_steps) == 0 or at == self.total_steps:
                elapsed = time.monotonic() - window["t"]
                if at - start > self.cfg.warmup_report_steps:
                    tps, sps = window["tokens"] / elapsed, window["samples"] / elapsed
                    self._progress(at, last["loss"], tps, sps, flops_per_token, step_times)
                window.update(t=time.monotonic(), tokens=0.0, samples=0)

        self.engine.train()
        step = start
        control = ControlChannel(self.device)
        batches = self._batches(start) if start < self.total_steps else []
        profiler = StepProfiler.from_env(self.rank)
        while step < self.total_steps:
            profiler.at(step)
            t0 = time.monotonic()
            loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
            tokens = 0
            for i, (batch, n_tokens) in enumerate(batches):
                out = self.engine(**batch)
                self.engine.backward(out.loss)
                if self.clip_norm and i == len(batches) - 1:
                    torch.nn.utils.clip_grad_norm_(self.trainable_params, self.clip_norm, foreach=True)
                self.engine.step()
                loss_sum += out.loss.detach().float()
                tokens += n_tokens
            step += 1
            self.reporter.step = step
            time_due = bool(ck_secs) and time.monotonic() - last_ck >= ck_secs and self.rank == 0
            # One small all-reduce per step carries the loss, the tokens and both control flags, so
            # every rank takes the same checkpoint/stop decision at the same step.
            control.submit(step, [loss_sum, float(tokens), float(self.stop.flag), float(time_due)])
            # The next step's batches are built while the GPU works on this one.
            batches = self._batches(step) if step < self.total_steps else []
            final = step >= self.total_steps
            while (done := control.collect(final=final)) is not None:
                absorb(*done)
            step_times.append(time.monotonic() - t0)
            if (ck_every and step % ck_every == 0) or last["due"] or last["stop"]:
                control.drain()
                self.save(step, last["loss"])
                last_ck, last["due"], last["saved_at"] = time.monotonic(), False, step
            if last["stop"]:
                self.committer.wait()
                if self.rank == 0:
                    self.reporter.send("stopped", {"step": step, "checkpoint": self._latest()})
                return step, None
        loss = last["loss"]
        metrics["loss"] = loss
        if self.eval is not None:
            metrics.update(self.evaluate())
        self.committer.wait()
        return step, metrics

    def _batches(self, step: int) -> list[tuple[dict[str, torch.Tensor], int]]:
        """This rank's micro-batches of optimizer step `step` (0-based), already on the device."""
        indices = schedule.global_batch_indices(len(self.train), self.seed, step, self.global_batch)
        mine = schedule.rank_micro_batches(indices, self.rank, self.world, self.micro, self.accum)
        pad = self.tokenizer.pad_token_id
        return [data.collate(self.train, mb, pad, self.device) for mb in mine]

    def _latest(self) -> dict:
        if self.committer.latest is None:
            return {}
        step, artifact = self.committer.latest
        return {"step": step, "artifact_id": artifact}

    def _progress(self, step, loss, tps, sps, flops_per_token, step_times) -> None:
        if self.rank != 0:
            return
        recent = step_times[-20:]
        eta = (self.total_steps - step) * (sum(recent) / len(recent)) if recent else 0.0
        peak = self.cfg.peak_flops_per_device
        mfu = tps * flops_per_token / (peak * self.world) if peak > 0 else 0.0
        lr = self.engine.get_lr()[0] if hasattr(self.engine, "get_lr") else 0.0
        self.reporter.send(
            "progress",
            {
                "step": step,
                "total_steps": self.total_steps,
                "epoch": step * self.global_batch / max(1, len(self.train)),
                "loss": loss,
                "learning_rate": lr,
                "tokens_per_second": tps,
                "samples_per_second": sps,
                "eta_s": eta,
                "mfu": mfu,
                "latest_checkpoint": self._latest(),
                "time": time.time(),
            },
        )

    def save(self, step: int, loss: float) -> None:
        with phase("checkpoint", step=step):
            self._save(step, loss)

    def _save(self, step: int, loss: float) -> None:
        self.committer.wait()  # one commit in flight; also surfaces a failed background commit
        state = {
            "step": step,
            "epoch": step * self.global_batch / max(1, len(self.train)),
            "world_size": self.world,
            "seed": self.seed,
            "loss": loss,
        }
        upload = [None, None, False]
        if self.rank == 0:
            if self.link is not None:
                upload_id, path = self.link.open_checkpoint(step, state["epoch"], {"loss": loss}, self.cfg.retention)
                staged = path is None
                path = path or self.output / "checkpoints" / f"step-{step}"
                upload = [upload_id, str(path), staged]
            else:
                upload = [None, str(self.output / "checkpoints" / f"step-{step}"), False]
        dist.broadcast_object_list(upload, src=0)
        directory = Path(upload[1])
        directory.mkdir(parents=True, exist_ok=True)
        exclude_frozen = self.method in ("LORA", "QLORA")
        checkpoint.write(self.engine, directory, self.rank, state, exclude_frozen)
        if self.rank == 0 and upload[0] is not None:
            self.committer.commit(upload[0], directory, upload[2], step)
        elif self.rank == 0:
            self.committer.latest = (step, str(directory))

    # --- evaluation and output ---------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Each rank evaluates every world-th example (padded to equal batch counts, since ZeRO-3
        forwards are collective); sums are all-reduced."""
        self.engine.eval()
        n = len(self.eval)
        mine = list(range(self.rank, n, self.world))
        batches = math.ceil(math.ceil(n / self.world) / self.micro)
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # correct/loss, count, tokens
        for b in range(batches):
            idx = mine[b * self.micro : (b + 1) * self.micro]
            real = len(idx)
            idx = idx or [0]
            batch, _ = data.collate(self.eval, idx, self.tokenizer.pad_token_id, self.device)
            out = self.engine(**batch)
            if real == 0:
                continue
            if self.task == modeling.CLASSIFICATION:
                pred = out.logits.argmax(-1)
                sums[0] += (pred[:real] == batch["labels"][:real]).sum()
                sums[1] += real
            else:
                ntok = (batch["labels"][:real, 1:] != -100).sum()
                sums[0] += out.loss.double() * ntok
                sums[2] += ntok
        dist.all_reduce(sums)
        self.engine.train()
        if self.task == modeling.CLASSIFICATION:
            return {"eval_accuracy": float(sums[0] / max(1.0, float(sums[1])))}
        eval_loss = float(sums[0] / max(1.0, float(sums[2])))
        return {"eval_loss": eval_loss, "eval_perplexity": math.exp(min(eval_loss, 50.0))}

    def finish(self, step: int, metrics: dict[str, float]) -> None:
        out = self.output / "model"
        module = self.engine.module
        if int((self.plan.get("deepspeedConfig") or {}).get("zero_optimization", {}).get("stage", 0)) == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=0):
                if self.rank == 0:
                    self._save_model(module, out)
        elif self.rank == 0:
            self._save_model(module, out)
        dist.barrier()
        if self.rank != 0:
            return
        result = {"step": step, "metrics": metrics, "model_dir": str(out), "model_artifact_id": ""}
        if self.link is not None and self.cfg.upload_model:
            result["model_artifact_id"] = self.link.upload_model(
                out, f"{self.cfg.job_id}-model", {"job_id": self.cfg.job_id, "run_id": self.cfg.run_id}
            )
        latest = self._latest()
        result["checkpoint"] = latest
        (self.output / "result.json").write_text(json.dumps(result, indent=1))
        self.reporter.send("result", result)

    def _save_model(self, module, out: Path) -> None:
        modeling.save_output(
            module,
            self.tokenizer,
            out,
            task=self.task,
            base_ref=self.cfg.model,
            label_names=self.train.label_names,
            method=self.method,
        )

    def close(self) -> None:
        self.reporter.close()
        if self.link is not None:
            self.link.close()
        if dist.is_initialized():
            dist.destroy_process_group()
