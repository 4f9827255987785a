"""Pure and CPU-only pieces of the trainer: failure classes, the deterministic data and LR schedule,
dataset reading and batching, the worker config, the training loop's helpers and its checkpoint
decisions, the local executor's process handling, and request validation. No servers."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.common.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from mlmesh.trainer.controller import ActiveRun, _user_failure
from mlmesh.trainer.domain import failures, schedule
from mlmesh.trainer.executors.base import LaunchSpec, RankLaunch, WorkerExit, rank_env
from mlmesh.trainer.executors.local import LocalExecutor
from mlmesh.trainer.servicer import validate_start
from mlmesh.trainer.worker import data, modeling, train
from mlmesh.trainer.worker.config import WorkerConfig

pytestmark = pytest.mark.timeout(60)

FC = job_pb2
CPU = torch.device("cpu")


# --- failures.classify ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 2, 3, 42, 85, 89, 126, 127])
def test_plain_exit_codes_are_user_errors(code):
    f = failures.classify(code, None, "Traceback ...\nValueError: bad column\n")
    assert f.failure_class == FC.FAILURE_CLASS_USER_ERROR and not f.retryable
    assert f.message.startswith(f"exit code {code}:") and "ValueError: bad column" in f.message


def test_user_error_without_output():
    f = failures.classify(1, None, "")
    assert f.failure_class == FC.FAILURE_CLASS_USER_ERROR and "no output" in f.message


@pytest.mark.parametrize(
    ("code", "tail"),
    [
        (failures.EXIT_OUT_OF_MEMORY, ""),
        (
            failures.EXIT_OUT_OF_MEMORY,
            "step 3\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n",
        ),
    ],
)
def test_out_of_memory_is_not_retried(code, tail):
    f = failures.classify(code, None, tail)
    assert f.failure_class == FC.FAILURE_CLASS_OUT_OF_MEMORY and f.reason == "OutOfMemory" and not f.retryable
    if tail:
        assert "CUDA out of memory" in f.message


def test_out_of_memory_from_the_log_alone():
    f = failures.classify(1, None, "RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB")
    assert f.failure_class == FC.FAILURE_CLASS_OUT_OF_MEMORY and "CUDA out of memory" in f.message


@pytest.mark.parametrize(
    ("code", "tail", "needle"),
    [
        (failures.EXIT_COLLECTIVE_TIMEOUT, "", "collective"),
        (
            1,
            "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error "
            "[127.0.0.1]:4242: Connection reset by peer",
            "Connection reset by peer",
        ),
        (1, "torch.distributed.DistBackendError: [Rank 1] ProcessGroupNCCL watchdog: operation timed out", "timed out"),
        (failures.EXIT_COLLECTIVE_TIMEOUT, "INFO step 4\nRuntimeError: Gloo allreduce timed out\n", "timed out"),
    ],
)
def test_collective_failures_are_retried(code, tail, needle):
    f = failures.classify(code, None, tail)
    assert f.failure_class == FC.FAILURE_CLASS_COLLECTIVE_TIMEOUT and f.retryable
    assert needle in f.message


@pytest.mark.parametrize(("code", "sig"), [(None, 9), (137, None)])
def test_death_by_sigkill_is_retried(code, sig):
    f = failures.classify(code, sig, "CUDA out of memory")  # a signal wins over the log
    assert f.failure_class == FC.FAILURE_CLASS_SIGNAL and f.retryable
    assert "SIGKILL" in f.message


def test_other_signals_are_named():
    assert "SIGTERM" in failures.classify(None, 15).message
    assert "SIGSEGV" in failures.classify(139, None).message
    assert "signal 99" in failures.classify(None, 99).message


def test_infrastructure_exit_is_retried():
    f = failures.classify(failures.EXIT_INFRASTRUCTURE, None, "x\nConnectionError: storage unreachable\nbye\n")
    assert f.failure_class == FC.FAILURE_CLASS_INFRASTRUCTURE and f.retryable
    assert f.message == "ConnectionError: storage unreachable"


def test_missed_heartbeat():
    f = failures.missed_heartbeat(3, 21.4)
    assert f.failure_class == FC.FAILURE_CLASS_INFRASTRUCTURE and f.retryable and f.reason == "HeartbeatMissed"
    assert f.message == "rank 3 sent no heartbeat for 21s"


# --- schedule ---------------------------------------------------------------------------------------


def test_epoch_order_is_a_seeded_permutation():
    a = schedule.epoch_order(50, seed=7, epoch=2)
    assert sorted(a) == list(range(50))
    assert a == schedule.epoch_order(50, seed=7, epoch=2)
    assert a != schedule.epoch_order(50, seed=7, epoch=3)
    assert a != schedule.epoch_order(50, seed=8, epoch=2)


@pytest.mark.parametrize(("n", "batch"), [(24, 8), (23, 8), (10, 3), (5, 8)])
def test_global_batches_cover_each_epoch_once_and_wrap(n, batch):
    seed = 3
    steps = math.ceil(3 * n / batch) + 1
    stream = [i for s in range(steps) for i in schedule.global_batch_indices(n, seed, s, batch)]
    assert all(len(schedule.global_batch_indices(n, seed, s, batch)) == batch for s in range(steps))
    # Concatenated, the batches are the epoch orders back to back.
    for epoch in range(3):
        assert stream[epoch * n : (epoch + 1) * n] == schedule.epoch_order(n, seed, epoch)
    # A resumed run's batch at step k is computed, not remembered.
    assert schedule.global_batch_indices(n, seed, 2, batch) == stream[2 * batch : 3 * batch]


def test_rank_micro_batches_partition_the_global_batch():
    world, micro, accum = 3, 2, 4
    indices = list(range(100, 100 + world * micro * accum))
    parts = [schedule.rank_micro_batches(indices, r, world, micro, accum) for r in range(world)]
    flat = [i for rank in parts for mb in rank for i in mb]
    assert sorted(flat) == indices  # every sample once, none twice
    for rank in parts:
        assert len(rank) == accum and all(len(mb) == micro for mb in rank)
    assert parts[1][0] == [102, 103] and parts[0][1] == [106, 107]


def test_lr_multiplier_endpoints():
    lr = schedule.lr_multiplier
    assert [lr(s, 100, 4, "linear") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr(4, 100, 4, "linear") == 1.0 and lr(100, 100, 4, "linear") == 0.0
    assert lr(52, 100, 4, "linear") == pytest.approx(0.5)
    assert lr(4, 100, 4, "cosine") == 1.0 and lr(100, 100, 4, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr(52, 100, 4, "cosine") == pytest.approx(0.5)
    assert lr(0, 100, 0, "constant") == lr(99, 100, 0, "constant") == 1.0
    assert lr(1, 100, 4, "constant") == 0.5  # warmup applies to constant too
    assert lr(150, 100, 0, "linear") == 0.0 and lr(150, 100, 0, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_total_steps():
    assert schedule.total_steps(1000, 8, 3.0, max_steps=7) == 7
    assert schedule.total_steps(100, 8, 1.0, max_steps=0) == 13
    assert schedule.total_steps(100, 8, 2.5, max_steps=0) == 32
    assert schedule.total_steps(100, 8, 0.0, max_steps=0) == 1


# --- worker.data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return modeling.load_tokenizer("builtin:gpt2-tiny")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_jsonl_skips_blank_lines(tmp_path):
    p = _write(tmp_path / "d.jsonl", '{"text": "a"}\n\n  \n{"text": "b"}\n')
    assert data.read_jsonl(p) == [{"text": "a"}, {"text": "b"}]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"text": "a"}\n{"text": oops}\n', ":2: not JSON"),
        ('{"text": "a"}\n\n[1, 2]\n', ":3: each line must be a JSON object"),
        ("\n\n", "the dataset is empty"),
        ("", "the dataset is empty"),
    ],
)
def test_read_jsonl_errors_name_file_and_line(tmp_path, text, needle):
    p = _write(tmp_path / "bad.jsonl", text)
    with pytest.raises(ValueError) as err:
        data.read_jsonl(p)
    assert str(p) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize("mark", ["eval", "test", "validation", "VALID", "Eval"])
def test_split_rows_honours_marked_splits(mark):
    rows = [{"i": i, "split": mark if i in (3, 5) else "train"} for i in range(8)]
    train_rows, eval_rows = data.split_rows(rows)
    assert [r["i"] for r in eval_rows] == [3, 5]
    assert [r["i"] for r in train_rows] == [0, 1, 2, 4, 6, 7]


def test_split_rows_holds_out_every_tenth_row():
    rows = [{"i": i} for i in range(25)]
    train_rows, eval_rows = data.split_rows(rows)
    assert [r["i"] for r in eval_rows] == [9, 19]
    assert len(train_rows) == 23 and not {9, 19} & {r["i"] for r in train_rows}
    few = [{"i": i} for i in range(19)]
    assert data.split_rows(few) == (few, [])


def test_classification_examples(tok):
    rows = [{"s": "good film", "y": "pos"}, {"s": "bad film", "y": "neg"}, {"s": "fine", "y": "pos"}]
    ex = data.classification_examples(rows, tok, 16, "s", "y", ["neg", "pos"], "d.jsonl")
    assert ex.labels == [1, 0, 1] and ex.label_names == ["neg", "pos"] and len(ex) == 3
    assert ex.input_ids[0][0] == tok.cls_token_id and ex.input_ids[0][-1] == tok.sep_token_id
    long = data.classification_examples([{"s": "word " * 50, "y": "pos"}], tok, 8, "s", "y", ["pos"], "d")
    assert len(long.input_ids[0]) == 8


def test_classification_errors_name_column_and_labels(tok):
    rows = [{"s": "a", "y": "pos"}, {"s": "b"}, {"s": "c"}]
    with pytest.raises(ValueError, match=r"^d\.jsonl:2: column 'y' is missing \(here first; 2 row\(s\) lack it\)"):
        data.classification_examples(rows, tok, 8, "s", "y", ["pos"], "d.jsonl")
    with pytest.raises(ValueError, match=r"^d\.jsonl:1: column 's' is missing"):
        data.classification_examples([{"y": "neg"}], tok, 8, "s", "y", ["neg"], "d.jsonl")
    with pytest.raises(ValueError, match=r"labels \['meh'\] do not occur in the training rows"):
        data.classification_examples([{"s": "a", "y": "meh"}], tok, 8, "s", "y", ["neg", "pos"], "d.jsonl")


def test_missing_column_names_the_file_line_after_the_split(tmp_path, tok):
    """Rows are counted in the file, not in the training split (blank lines and held-out rows
    would shift a position in the split)."""
    lines = [json.dumps({"text": f"row {i}"} if i != 37 else {"body": "x"}) for i in range(40)]
    path = _write(tmp_path / "d.jsonl", "\n\n" + "\n".join(lines) + "\n")
    train_rows, eval_rows = data.split_rows(data.read_jsonl(path))
    assert len(eval_rows) == 4
    with pytest.raises(ValueError, match=rf"^{path}:40: column 'text' is missing"):
        data.causal_lm_examples(train_rows, tok, 4, "text", str(path))


def test_causal_lm_examples_pack_full_blocks(tok):
    rows = [{"text": "the model learns fast while data flows"} for _ in range(10)]
    per_row = len(tok(rows[0]["text"], add_special_tokens=False)["input_ids"]) + 1  # + separator
    ex = data.causal_lm_examples(rows, tok, 8, "text", "d.jsonl")
    assert ex.labels is None
    assert len(ex) == (10 * per_row) // 8 and all(len(b) == 8 for b in ex.input_ids)
    stream = [t for b in ex.input_ids for t in b]
    assert stream.count(tok.sep_token_id) == (len(stream) // per_row)  # rows are joined by [SEP]
    assert stream[per_row - 1] == tok.sep_token_id


def test_causal_lm_errors(tok):
    with pytest.raises(ValueError, match=r"d\.jsonl: fewer than 64 tokens in the dataset; lower max_seq_length"):
        data.causal_lm_examples([{"text": "too short"}], tok, 64, "text", "d.jsonl")
    with pytest.raises(ValueError, match="column 'body' is missing"):
        data.causal_lm_examples([{"text": "x"}], tok, 4, "body", "d.jsonl")


def test_collate_packed_causal_lm_has_no_mask():
    ex = data.Examples(input_ids=[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], labels=None)
    batch, n = data.collate(ex, [2, 0], pad_id=0, device=CPU)
    assert set(batch) == {"input_ids", "labels"} and n == 8
    assert batch["input_ids"].tolist() == [[9, 10, 11, 12], [1, 2, 3, 4]]
    assert torch.equal(batch["labels"], batch["input_ids"])
    assert batch["labels"].data_ptr() != batch["input_ids"].data_ptr()  # a copy, not an alias


def test_collate_padded_causal_lm_masks_pads():
    ex = data.Examples(input_ids=[[1, 2, 3], [4]], labels=None)
    batch, n = data.collate(ex, [0, 1], pad_id=0, device=CPU)
    assert n == 4
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[1, 2, 3], [4, -100, -100]]


def test_collate_classification():
    ex = data.Examples(input_ids=[[101, 7, 102], [101, 8, 9, 102]], labels=[1, 0], label_names=["a", "b"])
    batch, n = data.collate(ex, [1, 0], pad_id=0, device=CPU)
    assert n == 7 and batch["labels"].tolist() == [0, 1] and batch["labels"].dtype == torch.long
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    same, _ = data.collate(ex, [0, 0], pad_id=0, device=CPU)
    assert "attention_mask" in same  # classification always carries a mask


# --- worker.config ----------------------------------------------------------------------------------


def test_worker_config_round_trip(tmp_path):
    cfg = WorkerConfig(
        run_id="j-a1",
        job_id="j",
        team="team-a",
        model="builtin:gpt2-tiny",
        dataset="/d.jsonl",
        task="text_generation",
        plan={"microBatchSize": 2, "decisions": [{"field": "model_dropout", "value": "0"}]},
        hyperparameters={"maxSteps": "12"},
        checkpoint_every_s=1.5,
        async_checkpoint=True,
        retention={"keepLatest": 2},
        extra={"a": [1, 2]},
    )
    path = tmp_path / "cfg.json"
    path.write_text(cfg.to_json())
    assert WorkerConfig.load(path) == cfg
    assert "token" not in path.read_text().lower()


def test_worker_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "cfg.json"
    raw = json.loads(WorkerConfig("r", "j", "t", "m", "d", "text_generation", {}).to_json())
    raw["checkpoint_every_minutes"] = 3
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="checkpoint_every_minutes") as err:
        WorkerConfig.load(path)
    assert str(path) in str(err.value)


# --- worker.train helpers ---------------------------------------------------------------------------


def test_whole_numbers():
    cfg = {"a": 1.0, "b": [2.0, 0.5, {"c": 3.0}], "d": {"e": 1e-5, "f": True, "g": "x", "h": 2**60 * 1.0}}
    out = train._whole_numbers(cfg)
    assert out == {"a": 1, "b": [2, 0.5, {"c": 3}], "d": {"e": 1e-5, "f": True, "g": "x", "h": 2.0**60}}
    assert type(out["a"]) is int and type(out["b"][2]["c"]) is int and type(out["d"]["h"]) is float


def test_plan_dropout():
    assert train._plan_dropout({}) is None
    assert train._plan_dropout({"decisions": [{"field": "method", "value": "LORA"}]}) is None
    plan = {"decisions": [{"field": "method", "value": "x"}, {"field": "model_dropout", "value": "0.1"}]}
    assert train._plan_dropout(plan) == 0.1
    assert train._plan_dropout({"decisions": [{"field": "model_dropout", "value": "0"}]}) == 0.0


@pytest.fixture
def gloo_world_1():
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_control_channel_on_cpu_reads_at_once(gloo_world_1):
    ch = train.ControlChannel(CPU)
    assert not ch.cuda and ch.collect() is None
    ch.submit(1, [torch.tensor(2.5), 16.0, 0.0, 1.0])
    step, values = ch.collect()
    assert step == 1 and values == [2.5, 16.0, 0.0, 1.0]
    ch.submit(2, [torch.tensor(1.0), 8.0, 1.0, 0.0])
    ch.submit(3, [torch.tensor(0.5), 8.0, 0.0, 0.0])
    assert ch.collect() == (2, [1.0, 8.0, 1.0, 0.0])
    assert ch.collect(final=True) == (3, [0.5, 8.0, 0.0, 0.0])
    assert ch.collect(final=True) is None
    ch.drain()  # nothing to wait for on CPU


class _LaggedChannel(train.ControlChannel):
    """The CUDA channel's timing on a CPU: a step's result is read one step late."""

    def __init__(self, device):
        super().__init__(device)
        self.cuda = True

    def submit(self, step, values):
        t = torch.stack([v if torch.is_tensor(v) else torch.full((), v) for v in values]).float()
        dist.all_reduce(t)
        self.pending.append((step, t, None))

    def drain(self):
        pass


def _loop_worker(monkeypatch, *, total: int, every_s: float, every_n: int = 0):
    """A Worker whose run() loop drives a stub engine; each optimizer step takes 1 s of fake time."""
    clock = {"now": 0.0}

    def monotonic() -> float:
        clock["now"] += 1e-6  # a little time passes between any two reads
        return clock["now"]

    monkeypatch.setattr(train, "time", SimpleNamespace(monotonic=monotonic, time=time.time))

    class Engine:
        def __call__(self, **batch):
            return SimpleNamespace(loss=torch.tensor(1.0))

        def backward(self, loss):
            pass

        def step(self):
            clock["now"] += 1.0

        def train(self):
            pass

        def get_lr(self):
            return [1e-3]

    w = train.Worker.__new__(train.Worker)
    w.cfg = WorkerConfig(
        "r", "j", "t", "m", "d", modeling.GENERATION, {}, checkpoint_every_s=every_s, checkpoint_every_n_steps=every_n
    )
    w.rank, w.world, w.accum, w.micro, w.global_batch = 0, 1, 1, 1, 1
    w.method, w.task, w.total_params, w.total_steps = "LORA", modeling.GENERATION, 10, total
    w.device, w.eval, w.train, w.clip_norm = CPU, None, [0] * 100, 0.0
    w.engine = Engine()
    w.stop = SimpleNamespace(flag=False)
    w.reporter = SimpleNamespace(step=0, send=lambda kind, payload: None)
    w.committer = SimpleNamespace(wait=lambda: None, latest=None)
    saves: list[int] = []
    w.resume = lambda: 0
    w._batches = lambda step: [({}, 4)]
    w.save = lambda step, loss: saves.append(step)
    w.finish = lambda step, metrics: saves.append(-step)
    return w, saves


def test_time_based_checkpoints_on_cpu(gloo_world_1, monkeypatch):
    w, saves = _loop_worker(monkeypatch, total=12, every_s=2.5)
    assert w.run() == 0
    assert saves == [3, 6, 9, 12, -12]


def test_time_based_checkpoints_read_one_step_late_are_taken_once(gloo_world_1, monkeypatch):
    """On CUDA the due flag is read a step late; rank 0 must not raise it again meanwhile, or every
    interval costs two checkpoints back to back."""
    monkeypatch.setattr(train, "ControlChannel", _LaggedChannel)
    w, saves = _loop_worker(monkeypatch, total=12, every_s=2.5)
    assert w.run() == 0
    assert saves == [4, 8, 12, -12]


def test_step_checkpoints_with_lagged_reads_are_exact(gloo_world_1, monkeypatch):
    monkeypatch.setattr(train, "ControlChannel", _LaggedChannel)
    w, saves = _loop_worker(monkeypatch, total=10, every_s=0.0, every_n=4)
    assert w.run() == 0
    assert saves == [4, 8, -10]


# --- worker.modeling.set_dropout --------------------------------------------------------------------


def test_set_dropout_gpt2():
    from transformers import GPT2Config

    cfg = GPT2Config()
    modeling.set_dropout(cfg, 0.0)
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    assert cfg.n_layer == 12 and cfg.layer_norm_epsilon == 1e-5  # other floats untouched


def test_set_dropout_bert_keeps_the_classifier_head():
    from transformers import BertConfig

    cfg = BertConfig(classifier_dropout=0.3)
    modeling.set_dropout(cfg, 0.05)
    assert cfg.hidden_dropout_prob == cfg.attention_probs_dropout_prob == 0.05
    assert cfg.classifier_dropout == 0.3
    unset = BertConfig()
    modeling.set_dropout(unset, 0.0)
    assert unset.classifier_dropout is None and unset.hidden_dropout_prob == 0.0


# --- executors --------------------------------------------------------------------------------------


def _spec(tmp_path: Path, argv: list[str], world: int, **kw) -> LaunchSpec:
    return LaunchSpec(
        run_id="job-a1",
        job_id="job",
        launch_id=kw.pop("launch_id", 0),
        world_size=world,
        argv=argv,
        env={"FROM_SPEC": "1"},
        ranks=[RankLaunch(r, r) for r in range(world)],
        log_dir=tmp_path / "logs",
        **kw,
    )


def test_rank_env(tmp_path):
    spec = _spec(tmp_path, ["true"], 4, master_addr="10.0.0.5", master_port=31337)
    env = rank_env(spec, RankLaunch(rank=3, local_rank=1, node_id="n2"))
    assert env == {
        "RANK": "3",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "4",
        "MASTER_ADDR": "10.0.0.5",
        "MASTER_PORT": "31337",
        "MLMESH_RANK": "3",
        "MLMESH_WORLD_SIZE": "4",
        "MLMESH_RUN_ID": "job-a1",
        "MLMESH_JOB_ID": "job",
    }


async def test_local_executor_reports_exits_with_log_tails(tmp_path):
    code = "import os,sys; print('rank', os.environ['RANK'], os.environ['FROM_SPEC'], os.environ['S']); "
    code += "sys.exit(int(os.environ['RANK']))"
    spec = _spec(tmp_path, [sys.executable, "-c", code], 2, secret_env={"S": "hidden"}, launch_id=3)
    group = await LocalExecutor().launch(spec)
    exits = [await asyncio.wait_for(group.next_exit(), 30) for _ in range(2)]
    by_rank = {e.rank: e for e in exits}
    assert by_rank[0].exit_code == 0 and by_rank[0].signal is None and by_rank[0].ok
    assert by_rank[1].exit_code == 1 and by_rank[1].signal is None and not by_rank[1].ok
    assert "rank 1 1 hidden" in by_rank[1].log_tail
    assert (tmp_path / "logs" / "rank-1.3.log").is_file()
    assert group.alive() == set()
    statuses = {s.rank: s for s in group.statuses()}
    assert statuses[0].exit_code == 0 and statuses[1].exit_code == 1
    assert not statuses[0].alive and statuses[1].log_path.endswith("rank-1.3.log") and statuses[1].pid > 0
    # Every rank is reported once; then next_exit waits for ever.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(group.next_exit(), 0.3)


async def test_local_executor_terminate_sends_sigterm(tmp_path):
    group = await LocalExecutor().launch(_spec(tmp_path, ["sleep", "30"], 2))
    assert group.alive() == {0, 1}
    assert all(s.alive for s in group.statuses())
    t0 = time.monotonic()
    await group.terminate(10.0)
    assert time.monotonic() - t0 < 5
    assert group.alive() == set()
    assert [(s.signal, s.exit_code, s.alive) for s in group.statuses()] == [(signal.SIGTERM, 0, False)] * 2
    ex = await asyncio.wait_for(group.next_exit(), 5)
    assert ex.signal == signal.SIGTERM and ex.exit_code is None and not ex.ok


async def test_local_executor_sigkills_after_the_grace(tmp_path):
    code = (
        "import signal,sys,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    spec = _spec(tmp_path, [sys.executable, "-c", code], 1)
    group = await LocalExecutor().launch(spec)
    log = tmp_path / "logs" / "rank-0.0.log"
    deadline = time.monotonic() + 20
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the worker did not start"
        await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await group.terminate(1.0)
    waited = time.monotonic() - t0
    assert 0.9 <= waited < 5
    [status] = group.statuses()
    assert status.signal == signal.SIGKILL and not status.alive
    ex = await asyncio.wait_for(group.next_exit(), 5)
    assert ex.signal == signal.SIGKILL and "ready" in ex.log_tail
    assert failures.classify(ex.exit_code, ex.signal, ex.log_tail).failure_class == FC.FAILURE_CLASS_SIGNAL


async def test_local_executor_terminate_without_grace_kills_at_once(tmp_path):
    group = await LocalExecutor().launch(_spec(tmp_path, ["sleep", "30"], 1))
    await group.terminate(0)
    assert group.statuses()[0].signal == signal.SIGKILL


# --- controller._user_failure -----------------------------------------------------------------------


def test_user_failure_names_fields():
    exc = InvalidArgument("bad run", {"spec.trainer.model": "unknown built-in", "spec.trainer.dataset": "no such file"})
    f = _user_failure(exc)
    assert f.failure_class == FC.FAILURE_CLASS_USER_ERROR and not f.retryable and f.reason == "InvalidRun"
    assert "spec.trainer.model: unknown built-in" in f.message and "spec.trainer.dataset: no such file" in f.message
    plain = _user_failure(NotFound("dataset artifact x not found"))
    assert plain.failure_class == FC.FAILURE_CLASS_USER_ERROR and plain.message == "dataset artifact x not found"


@pytest.mark.parametrize("exc", [Unavailable("storage is down"), DeadlineExceeded("storage is slow")])
def test_unreachable_dependencies_are_infrastructure(exc):
    f = _user_failure(exc)
    assert f.failure_class == FC.FAILURE_CLASS_INFRASTRUCTURE and f.retryable and f.message == exc.message


class _Repo:
    def __init__(self):
        self.states: list[int] = []

    async def update(self, key, value, revision):
        self.states.append(value.state)
        return revision + 1


class _Publisher:
    async def publish(self, subject, event, **kwargs):
        pass


class _Group:
    """A worker group the test drives: exits are reported when the test puts them."""

    def __init__(self, ranks):
        self.ranks = set(ranks)
        self.exits: asyncio.Queue = asyncio.Queue()
        self.terminated: list[float] = []

    async def next_exit(self):
        ex = await self.exits.get()
        self.ranks.discard(ex.rank)
        return ex

    def alive(self):
        return set() if self.terminated else set(self.ranks)

    def statuses(self):
        return []

    async def terminate(self, grace_s):
        self.terminated.append(grace_s)


class _SilentGroup(_Group):
    reports_exits = False  # as the Kubernetes group: pods' exits are never reported


def _active_run(tmp_path, group):
    settings = SimpleNamespace(
        heartbeat_timeout_s=30.0, startup_timeout_s=60.0, progress_event_interval_s=1.0, default_max_restarts=3
    )
    controller = SimpleNamespace(
        settings=settings, repo=_Repo(), publisher=_Publisher(), nc=object(), storage=None, work_dir=tmp_path
    )
    run = run_pb2.Run(run_id="j-a1", job_id="j", team="t", attempt=1, state=run_pb2.RUN_STATE_RUNNING)
    run.spec.kind = job_pb2.JOB_KIND_FINETUNE
    active = ActiveRun(controller, run, resume="")
    active.group = group
    active.heartbeats = {0: time.monotonic(), 1: time.monotonic()}
    return active, _spec(tmp_path, ["true"], 2)


RESULT = {"step": 7, "metrics": {"loss": 1.25}, "model_artifact_id": "", "checkpoint": {}}


async def test_a_group_without_exit_reports_succeeds_on_the_result(tmp_path):
    active, spec = _active_run(tmp_path, _SilentGroup([0, 1]))
    monitor = asyncio.ensure_future(active.monitor(spec))
    await asyncio.sleep(0.1)
    assert not monitor.done()
    await active.on_report("result", RESULT)
    await asyncio.wait_for(monitor, 5)
    assert active.run.state == run_pb2.RUN_STATE_SUCCEEDED and active.run.restarts == 0
    assert active.run.outputs.metrics["loss"] == 1.25


async def test_a_group_with_exit_reports_succeeds_when_every_rank_exited(tmp_path):
    group = _Group([0, 1])
    active, spec = _active_run(tmp_path, group)
    monitor = asyncio.ensure_future(active.monitor(spec))
    await active.on_report("result", RESULT)
    await group.exits.put(WorkerExit(0, 0, None))
    await asyncio.sleep(1.2)
    assert not monitor.done() and active.run.state == run_pb2.RUN_STATE_RUNNING  # rank 1 still runs
    await group.exits.put(WorkerExit(1, 0, None))
    await asyncio.wait_for(monitor, 5)
    assert active.run.state == run_pb2.RUN_STATE_SUCCEEDED and active.run.outputs.metrics["loss"] == 1.25


# --- servicer.validate_start ------------------------------------------------------------------------


def _fields(request) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as err:
        validate_start(request)
    return {v.field: v.description for v in err.value.violations}


def test_validate_start_accepts_a_good_request():
    spec = job_pb2.JobSpec(kind=job_pb2.JOB_KIND_FINETUNE)
    spec.trainer.model, spec.trainer.dataset = "builtin:gpt2-tiny", "file:///d.jsonl"
    request = api.StartRunRequest(job_id="job-1", team="team-a", attempt=1, spec=spec)
    node = request.placement.nodes.add(node_id="n1")
    node.workers.add(rank=1)
    node.workers.add(rank=0)
    request.placement.world_size = 2
    validate_start(request)


def test_validate_start_names_every_bad_field():
    spec = job_pb2.JobSpec(kind=job_pb2.JOB_KIND_FINETUNE)
    spec.trainer.max_restarts = -1
    request = api.StartRunRequest(job_id="Bad Id", team="", attempt=0, spec=spec)
    node = request.placement.nodes.add(node_id="n1")
    node.workers.add(rank=0)
    node.workers.add(rank=2)
    bad = _fields(request)
    assert set(bad) == {
        "job_id",
        "team",
        "attempt",
        "spec.trainer.model",
        "spec.trainer.dataset",
        "spec.trainer.max_restarts",
        "placement.nodes",
    }


def test_validate_start_kinds_and_commands():
    unknown = api.StartRunRequest(job_id="j", team="t", attempt=1, spec=job_pb2.JobSpec())
    assert set(_fields(unknown)) == {"spec.kind"}
    command = api.StartRunRequest(job_id="j", team="t", attempt=1, spec=job_pb2.JobSpec(kind=job_pb2.JOB_KIND_COMMAND))
    assert set(_fields(command)) == {"spec.command.command"}
    command.spec.command.command.append("true")
    validate_start(command)


def test_validate_start_placement_ranks():
    spec = job_pb2.JobSpec(kind=job_pb2.JOB_KIND_COMMAND)
    spec.command.command.append("true")
    dup = api.StartRunRequest(job_id="j", team="t", attempt=1, spec=spec)
    dup.placement.nodes.add(node_id="a").workers.add(rank=0)
    dup.placement.nodes.add(node_id="b").workers.add(rank=0)
    assert set(_fields(dup)) == {"placement.nodes"}
    size = api.StartRunRequest(job_id="j", team="t", attempt=1, spec=spec)
    size.placement.nodes.add(node_id="a").workers.add(rank=0)
    size.placement.world_size = 3
    assert "the nodes hold 1 workers" in _fields(size)["placement.world_size"]


def test_a_bare_timeout_in_user_code_is_not_a_collective_failure():
    from mlmesh.trainer.domain.failures import classify

    http = classify(1, None, "urllib3.exceptions.ReadTimeoutError: HTTPSConnectionPool: Read timed out.")
    assert http.failure_class == job_pb2.FAILURE_CLASS_USER_ERROR and not http.retryable
    gloo = classify(1, None, "RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.2]:5")
    assert gloo.failure_class == job_pb2.FAILURE_CLASS_COLLECTIVE_TIMEOUT and gloo.retryable


def test_a_taken_rendezvous_port_is_retried_as_infrastructure():
    from mlmesh.trainer.domain.failures import classify

    f = classify(
        1,
        None,
        "torch.distributed.DistNetworkError: The server socket has failed to listen on any "
        "local network address. port: 29500, useIpv6: false, code: -98, name: EADDRINUSE, "
        "message: address already in use",
    )
    assert f.failure_class == job_pb2.FAILURE_CLASS_INFRASTRUCTURE and f.retryable
