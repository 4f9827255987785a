"""The deployments' python-backend model (`mlmesh.gateway.triton_model/model.py`) on a GPU instance
against a CPU instance of the same weights, in one process: outputs must agree, and the medians of
each task's latency are compared.

The GPU machine has torch, transformers and peft but no tritonserver, so this drives model.py the
way Triton's python backend does (initialize(args) with `model_instance_kind`, execute(requests),
a response sender for the decoupled generation) through a minimal stand-in for Triton's
`triton_python_backend_utils`. In CI and the integration tests the same file runs inside a real
tritonserver (CPU); this script exists for the GPU path alone. Weights are random (no hub access
there), built from configs: a MiniLM-sized BERT (embedding, classification, and a LoRA
classification adapter merged at load) and a small GPT-2.

    python benchmarks/bench_triton_model_gpu.py [--out results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

MODEL_PY = Path(__file__).parents[1] / "services/inference-gateway/src/mlmesh/gateway/triton_model/model.py"
FINAL = 1
CARD = "mlmesh_model.json"  # model.py reads an adapter's labels from it
WORDS = ["the", "a", "gateway", "routes", "requests", "to", "triton", "model", "server", "batches", "texts"]
TEXTS = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(4 + i % 12)) for i in range(32)]


# ---- a minimal stand-in for triton_python_backend_utils (only what model.py calls) ----------


class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _TritonError(Exception):
    INVALID_ARG, INTERNAL = 3, 13

    def __init__(self, message, code=13):
        super().__init__(message)
        self.code = code


class _Response:
    def __init__(self, output_tensors=(), error=None):
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class _Sender:
    def __init__(self):
        self.responses, self.flags, self.times = [], [], []

    def send(self, response=None, flags=0):
        self.responses.append(response)
        self.flags.append(flags)
        self.times.append(time.perf_counter())

    def is_cancelled(self):
        return False


class _Request:
    def __init__(self, **inputs):
        self.inputs = {k: _Tensor(k, v) for k, v in inputs.items()}
        self.sender = _Sender()

    def get_response_sender(self):
        return self.sender


def _load_model_py():
    shim = types.ModuleType("triton_python_backend_utils")
    shim.Tensor, shim.TritonError, shim.InferenceResponse = _Tensor, _TritonError, _Response
    shim.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    shim.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    sys.modules["triton_python_backend_utils"] = shim
    spec = importlib.util.spec_from_file_location("deployment_model", MODEL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- test weights ---------------------------------------------------------------------------


def _tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += [c for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'"] + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    (directory / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(directory), model_max_length=256)
    tok.save_pretrained(str(directory))
    return tok


def _bert_config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        **extra,
    )


def build_models(root: Path) -> dict[str, Path]:
    """Version directories (`<root>/<task>/1/model[, base]`) for each case."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertForSequenceClassification, BertModel, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    out = {}

    def version_dir(case: str, sub: str = "model") -> Path:
        path = root / case / "1" / sub
        path.mkdir(parents=True)
        return path

    d = version_dir("embedding")
    tok = _tokenizer(d)
    BertModel(_bert_config(len(tok))).save_pretrained(str(d))
    out["embedding"] = root / "embedding"

    labels = {0: "negative", 1: "neutral", 2: "positive"}
    d = version_dir("classification")
    _tokenizer(d)
    config = _bert_config(len(tok), num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    BertForSequenceClassification(config).save_pretrained(str(d))
    out["classification"] = root / "classification"

    base, adapter = version_dir("adapter", "base"), version_dir("adapter", "model")
    _tokenizer(base)
    base_model = BertForSequenceClassification(config)
    base_model.save_pretrained(str(base))
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, target_modules=["query", "value"])
    peft_model = get_peft_model(base_model, lora)
    with torch.no_grad():  # a trained-looking adapter: nonzero B, so the merge changes the outputs
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "classifier" in name:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(str(adapter))
    # The trainer's card names the labels of an adapter (its own dir holds no model config).
    (adapter / CARD).write_text(json.dumps({"labels": list(labels.values())}))
    out["adapter"] = root / "adapter"

    d = version_dir("generation")
    _tokenizer(d)
    gpt = GPT2Config(
        vocab_size=len(tok), n_embd=512, n_layer=6, n_head=8, n_positions=256, bos_token_id=2, eos_token_id=3
    )
    generator = GPT2LMHeadModel(gpt)
    with torch.no_grad():  # zero logits for the special tokens, so the greedy text is visible words
        generator.transformer.wte.weight[:5] = 0
    generator.save_pretrained(str(d))
    out["generation"] = root / "generation"
    return out


# ---- driving model.py ---------------------------------------------------------------------


def instance(module, repo: Path, task: str, kind: str, **params):
    parameters = {"task": {"string_value": task}, **{k: {"string_value": str(v)} for k, v in params.items()}}
    config = {"name": repo.name, "max_batch_size": 64, "parameters": parameters, "instance_group": [{"count": 1}]}
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(repo),
            "model_version": "1",
            "model_instance_kind": kind,
            "model_instance_device_id": "0",
        }
    )
    return model


def run_batched(model, texts):
    request = _Request(TEXT=np.array([t.encode() for t in texts], dtype=np.object_).reshape(-1, 1))
    (response,) = model.execute([request])
    assert response.error is None, response.error
    return response.outputs


def run_generation(model, prompt: str, max_tokens: int, temperature: float = 0.0):
    request = _Request(
        PROMPT=np.array([prompt.encode()], dtype=np.object_),
        MAX_TOKENS=np.array([max_tokens], dtype=np.int32),
        TEMPERATURE=np.array([temperature], dtype=np.float32),
    )
    start = time.perf_counter()
    assert model.execute([request]) is None
    sender = request.sender
    assert sender.flags[-1] == FINAL and all(f == 0 for f in sender.flags[:-1]), sender.flags
    errors = [r.error for r in sender.responses if r is not None and r.error is not None]
    assert not errors, errors
    text = "".join(r.outputs["TEXT"][0].decode() for r in sender.responses)
    last = sender.responses[-1].outputs
    tokens = int(last["COMPLETION_TOKENS"][0])
    return {
        "text": text,
        "finish": last["FINISH_REASON"][0].decode(),
        "tokens": tokens,
        "first_s": sender.times[0] - start,
        "total_s": sender.times[-1] - start,
    }


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up (CUDA kernels, allocator)
    samples = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    module = _load_model_py()
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "checks": {}, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        repos = build_models(Path(tmp))
        for case, task, output in (
            ("embedding", "embedding", "EMBEDDING"),
            ("classification", "text_classification", "SCORES"),
            ("adapter", "text_classification", "SCORES"),
        ):
            cpu = instance(module, repos[case], task, "CPU")
            gpu = instance(module, repos[case], task, "GPU")  # bf16 by default on a GPU
            gpu32 = instance(module, repos[case], task, "GPU", dtype="float32")
            assert next(gpu.model.parameters()).is_cuda and gpu.dtype == torch.bfloat16
            ref, got, got32 = (run_batched(m, TEXTS)[output] for m in (cpu, gpu, gpu32))
            results["checks"][case] = {
                "max_abs_diff_bf16": float(np.abs(ref - got).max()),
                "max_abs_diff_fp32": float(np.abs(ref - got32).max()),
            }
            assert np.abs(ref - got32).max() < 1e-3, results["checks"][case]
            assert np.abs(ref - got).max() < 5e-2, results["checks"][case]
            if task == "text_classification":
                labels = run_batched(gpu32, TEXTS)["LABEL"].reshape(-1)
                assert [x.decode() for x in labels] == [cpu.labels[i] for i in ref.argmax(axis=1)]
            for name, model in (("cpu fp32", cpu), ("gpu bf16", gpu), ("gpu fp32", gpu32)):
                seconds = median_s(lambda m=model: run_batched(m, TEXTS), args.repeats)
                row = {"case": f"{case} batch of {len(TEXTS)}", "path": name, "median_ms": seconds * 1e3}
                results["rows"].append(row)
            for m in (cpu, gpu, gpu32):
                m.finalize()

        cpu = instance(module, repos["generation"], "text_generation", "CPU")
        gpu32 = instance(module, repos["generation"], "text_generation", "GPU", dtype="float32")
        gpu = instance(module, repos["generation"], "text_generation", "GPU")
        prompt = "the gateway routes requests to"
        ref, got32, got = (run_generation(m, prompt, 64) for m in (cpu, gpu32, gpu))
        results["checks"]["generation"] = {
            "cpu": ref["text"][:80],
            "gpu_fp32": got32["text"][:80],
            "same_greedy_text_fp32": ref["text"] == got32["text"],
            "gpu_bf16_tokens": got["tokens"],
        }
        assert got["finish"] in ("stop", "length") and got["tokens"] <= 64
        sampled = run_generation(gpu, prompt, 32, temperature=0.8)
        assert sampled["finish"] in ("stop", "length")
        for name, model in (("cpu fp32", cpu), ("gpu bf16", gpu), ("gpu fp32", gpu32)):
            runs = [run_generation(model, prompt, 64) for _ in range(max(3, args.repeats // 4))]
            tps = statistics.median(r["tokens"] / r["total_s"] for r in runs)
            first = statistics.median(r["first_s"] for r in runs)
            results["rows"].append(
                {"case": "generation, 64 tokens", "path": name, "tokens_per_s": tps, "first_token_ms": first * 1e3}
            )
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
