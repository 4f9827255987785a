"""The gateway as users run it: a `python -m mlmesh.gateway` process on a real nats-server, in
front of a real tritonserver (python backend) holding `team-a--double`."""

from __future__ import annotations

import json
import queue
import shutil
import socket
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.local.process import ManagedProcess, start_service
from mlmesh.local.servers import NatsServer, TritonServer, ValkeyServer

TRITON_MODEL = "team-a--double"
TEAM_B_MODEL = "team-b--double"
VERSIONED_MODEL = "team-a--versioned"


@dataclass
class Gateway:
    grpc_address: str
    http_address: str
    alice: str
    bob: str
    proc: ManagedProcess
    metrics_url: str = ""  # the gateway's /metrics, when started with METRICS_PORT >= 0

    def headers(self, token: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"} if token else {}


def _write_doubling_model(repo: Path, name: str, versions: tuple[int, ...] = (1,)) -> None:
    policy = "version_policy: { all { } }" if len(versions) > 1 else ""
    (repo / name).mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(
        textwrap.dedent(f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        {policy}
        input [{{ name: "X", data_type: TYPE_FP32, dims: [ -1 ] }}]
        output [{{ name: "Y", data_type: TYPE_FP32, dims: [ -1 ] }}]
        instance_group [{{ kind: KIND_CPU, count: 1 }}]
        """)
    )
    for number in versions:
        _write_model_py(repo / name / str(number))


def _write_model_py(version: Path) -> None:
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(
        textwrap.dedent("""
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
                    if x.size and x.flat[0] == -999:  # a poisoned input: an error from the model
                        error = pb_utils.TritonError("poisoned input")
                        responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                        continue
                    y = pb_utils.Tensor("Y", (x * 2).astype(np.float32))
                    responses.append(pb_utils.InferenceResponse(output_tensors=[y]))
                return responses
        """)
    )


@pytest.fixture(scope="session")
def triton_with_double(triton_server: TritonServer) -> TritonServer:
    _write_doubling_model(triton_server.model_repository, TRITON_MODEL)
    client = triton_http.InferenceServerClient(triton_server.http_url.removeprefix("http://"))
    try:
        client.load_model(TRITON_MODEL)
        assert client.is_model_ready(TRITON_MODEL)
    finally:
        client.close()
    return triton_server


def _dead_port() -> int:
    """A port nobody listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_gateway(tmp: Path, nats: NatsServer, extra: dict[str, str]) -> Iterator[Gateway]:
    private, public = generate_signing_key()
    write_secret(tmp / "public.pem", public)
    settings = {
        **nats.service_settings("gateway"),
        "AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem"),
        "METRICS_PORT": "-1",
        "HTTP_PORT": "0",
        "SHUTDOWN_GRACE_S": "2",
        **extra,
    }
    proc, info = start_service("gateway", settings, tmp, prefix="MLMESH_GATEWAY_", timeout=60)
    try:
        grpc_port, http_port = info["grpc_port"], info["http_port"]
        yield Gateway(
            grpc_address=f"127.0.0.1:{grpc_port}",
            http_address=f"127.0.0.1:{http_port}",
            alice=mint_token(private, subject="alice", team="team-a", roles=["developer"]),
            bob=mint_token(private, subject="bob", team="team-b", roles=["developer"]),
            proc=proc,
            metrics_url=f"http://127.0.0.1:{info['metrics_port']}/metrics" if info.get("metrics_port", -1) > 0 else "",
        )
    finally:
        proc.stop(grace=5)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, nats_server: NatsServer, triton_with_double: TritonServer) -> Iterator[Gateway]:
    yield from _start_gateway(
        tmp_path_factory.mktemp("gateway"),
        nats_server,
        {
            "TRITON_GRPC_URLS": triton_with_double.grpc_url,
            "TRITON_HTTP_URLS": triton_with_double.http_url,
            "MAX_REQUEST_BYTES": str(1024 * 1024),
        },
    )


@pytest.fixture(scope="module")
def dead_gateway(tmp_path_factory, nats_server: NatsServer) -> Iterator[Gateway]:
    yield from _start_gateway(
        tmp_path_factory.mktemp("dead-gateway"),
        nats_server,
        {
            "TRITON_GRPC_URLS": f"127.0.0.1:{_dead_port()}",
            "TRITON_HTTP_URLS": f"http://127.0.0.1:{_dead_port()}",
            "BREAKER_FAILURE_THRESHOLD": "2",
            "BREAKER_OPEN_S": "60",
            "HEALTH_INTERVAL_S": "60",  # only the breaker decides in this test
        },
    )


def triton_env(triton: TritonServer) -> dict[str, str]:
    return {"TRITON_GRPC_URLS": triton.grpc_url, "TRITON_HTTP_URLS": triton.http_url}


@pytest.fixture(scope="module")
def cached_gateway(
    tmp_path_factory, nats_server: NatsServer, more_models: TritonServer, valkey_server: ValkeyServer
) -> Iterator[Gateway]:
    yield from _start_gateway(
        tmp_path_factory.mktemp("cached-gateway"),
        nats_server,
        {**triton_env(more_models), "VALKEY_URL": valkey_server.url, "CACHE_TTL_S": "60"},
    )


@pytest.fixture(scope="module")
def limited_gateway(
    tmp_path_factory, nats_server: NatsServer, more_models: TritonServer, valkey_server: ValkeyServer
) -> Iterator[Gateway]:
    yield from _start_gateway(
        tmp_path_factory.mktemp("limited-gateway"),
        nats_server,
        {
            **triton_env(more_models),
            "VALKEY_URL": valkey_server.url,
            "CACHE_TTL_S": "0",
            "RATE_LIMIT_PER_S": "0.2",
            "RATE_LIMIT_BURST": "3",
        },
    )


def start_gateway(tmp: Path, nats: NatsServer, extra: dict[str, str]) -> Iterator[Gateway]:
    """For a test that owns its gateway (and its valkey)."""
    return _start_gateway(tmp, nats, extra)


@pytest.fixture(scope="module")
def more_models(triton_with_double: TritonServer) -> Iterator[TritonServer]:
    """`team-b--double` and `team-a--versioned` (versions 1 and 2), unloaded afterwards: other
    modules expect team-b to have no `double`."""
    repo = triton_with_double.model_repository
    _write_doubling_model(repo, TEAM_B_MODEL)
    _write_doubling_model(repo, VERSIONED_MODEL, versions=(1, 2))
    client = triton_http.InferenceServerClient(triton_with_double.http_url.removeprefix("http://"))
    try:
        for model in (TEAM_B_MODEL, VERSIONED_MODEL):
            client.load_model(model)
            assert client.is_model_ready(model)
        yield triton_with_double
        for model in (TEAM_B_MODEL, VERSIONED_MODEL):
            client.unload_model(model, unload_dependents=False)
        deadline = time.monotonic() + 30
        while client.is_model_ready(TEAM_B_MODEL) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.close()


# Models of the three tasks, served by the deployments' python-backend model.py
# (mlmesh.gateway.triton_model). Built once per session; loads into Triton are few and shared.

CLASSIFIER_LABELS = ("a", "b", "c")


@dataclass(frozen=True)
class HfModels:
    """Hugging Face directories as the trainer saves them (save_pretrained + tokenizer + card)."""

    classifier_adapter_dir: Path  # peft LoRA (SEQ_CLS, trained head) over MiniLM; card labels a, b, c
    classifier_base_dir: Path  # the adapter's base model: MiniLM
    embedding_dir: Path  # MiniLM, full weights
    generator_dir: Path  # a tiny GPT-2 (seeded random weights) with MiniLM's tokenizer
    labels: tuple[str, ...] = CLASSIFIER_LABELS

    def for_task(self, task: int) -> tuple[Path, Path | None]:
        """(model dir, base dir or None) of the test model of a task (ModelTask)."""
        from mlmesh.gateway.domain.model_repository import CLASSIFICATION, EMBEDDING, GENERATION

        return {
            CLASSIFICATION: (self.classifier_adapter_dir, self.classifier_base_dir),
            EMBEDDING: (self.embedding_dir, None),
            GENERATION: (self.generator_dir, None),
        }[task]


def _card(directory: Path, task: str, base: str, method: str, labels: tuple[str, ...] = ()) -> None:
    card = {"task": task, "base_model": base, "method": method, "labels": list(labels), "format": "huggingface"}
    (directory / "mlmesh_model.json").write_text(json.dumps(card, indent=1))


def _build_classifier(out: Path, base: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(7)
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=len(CLASSIFIER_LABELS))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    model = get_peft_model(model, lora)
    with torch.no_grad():  # as if trained: LoRA B starts at zero, which would make the adapter a no-op
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
            elif "modules_to_save" in name and name.endswith("weight"):
                param.normal_(0.0, 0.5)  # a head that separates the labels
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    _card(out, "text_classification", "builtin:minilm", "lora", CLASSIFIER_LABELS)


def _build_generator(out: Path, tokenizer_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(11)
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=30522,
        bos_token_id=101, eos_token_id=102, pad_token_id=0, initializer_range=0.2,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        # Special tokens never win a greedy pick (their tied embedding rows are zero, others are
        # not): greedy runs reach the token limit, and every step adds text.
        for token in (0, 100, 101, 102, 103):
            model.transformer.wte.weight[token] = 0.0
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(out))
    _card(out, "text_generation", "builtin:gpt2-tiny", "full")


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> HfModels:
    from mlmesh.common.builtin_models import minilm_path

    root = tmp_path_factory.mktemp("hf-models")
    minilm = minilm_path()
    base = root / "minilm"
    shutil.copytree(minilm, base)
    embedding = root / "embedding"
    shutil.copytree(minilm, embedding)
    _card(embedding, "embedding", "builtin:minilm", "full")
    _build_classifier(root / "classifier", base)
    _build_generator(root / "generator", minilm)
    return HfModels(root / "classifier", base, embedding, root / "generator")


def write_entry(
    repo: Path,
    triton_name: str,
    task: int,
    versions: tuple[int, ...],
    model_dir: Path,
    base_dir: Path | None = None,
    parameters: dict[str, str] | None = None,
) -> Path:
    """A deployment's model-repository entry, as the controller lays it out: config.pbtxt and, per
    version, model.py, `model/` and (for an adapter) `base/` (symlinks to the directories)."""
    from mlmesh.gateway.domain.model_repository import EntryConfig, render_config
    from mlmesh.gateway.triton_model import MODEL_PY

    entry = repo / triton_name
    entry.mkdir(parents=True, exist_ok=True)
    config = EntryConfig(triton_name=triton_name, task=task, versions=versions, parameters=parameters or {})
    (entry / "config.pbtxt").write_text(render_config(config))
    for version in versions:
        directory = entry / str(version)
        directory.mkdir(exist_ok=True)
        shutil.copyfile(MODEL_PY, directory / "model.py")
        for name, target in (("model", model_dir), ("base", base_dir)):
            link = directory / name
            if target is not None and not link.exists():
                link.symlink_to(target, target_is_directory=True)
    return entry


class TritonModels:
    """Loads test models into the session's Triton (each name once) and unloads them at the end."""

    def __init__(self, triton: TritonServer, models: HfModels):
        self.triton = triton
        self.models = models
        self._loaded: set[str] = set()

    def load(
        self, triton_name: str, task: int, versions: tuple[int, ...] = (1,), parameters: dict[str, str] | None = None
    ) -> str:
        """Write the entry of the task's test model under `triton_name` and load it; once per name."""
        if triton_name in self._loaded:
            return triton_name
        model_dir, base_dir = self.models.for_task(task)
        write_entry(self.triton.model_repository, triton_name, task, versions, model_dir, base_dir, parameters)
        client = triton_http.InferenceServerClient(self.triton.http_url.removeprefix("http://"), network_timeout=300)
        try:
            client.load_model(triton_name)
            assert client.is_model_ready(triton_name)
        finally:
            client.close()
        self._loaded.add(triton_name)
        return triton_name

    def unload_all(self) -> None:
        client = triton_http.InferenceServerClient(self.triton.http_url.removeprefix("http://"))
        try:
            for name in sorted(self._loaded):
                client.unload_model(name)
        finally:
            client.close()
        self._loaded.clear()


@pytest.fixture(scope="session")
def triton_models(triton_server: TritonServer, hf_models: HfModels) -> Iterator[TritonModels]:
    models = TritonModels(triton_server, hf_models)
    yield models
    models.unload_all()


# The team-a models the task tests use (the caller's names; Triton's are `team-a--<name>`).
GENERATOR = "tiny-gpt"
EMBEDDER = "minilm-embed"
CLASSIFIER = "minilm-cls"


@pytest.fixture(scope="session")
def generator_model(triton_models: TritonModels) -> str:
    """Triton name of the tiny GPT-2 (text generation, decoupled), loaded."""
    from mlmesh.gateway.domain.model_repository import GENERATION

    return triton_models.load(f"team-a--{GENERATOR}", GENERATION)


@pytest.fixture(scope="session")
def embedding_model(triton_models: TritonModels) -> str:
    """Triton name of MiniLM as an embedding model, loaded."""
    from mlmesh.gateway.domain.model_repository import EMBEDDING

    return triton_models.load(f"team-a--{EMBEDDER}", EMBEDDING)


@pytest.fixture(scope="session")
def classification_model(triton_models: TritonModels) -> str:
    """Triton name of the MiniLM LoRA classifier (labels a, b, c), loaded."""
    from mlmesh.gateway.domain.model_repository import CLASSIFICATION

    return triton_models.load(f"team-a--{CLASSIFIER}", CLASSIFICATION)


def stream_generate(
    client, model: str, prompt: str, max_tokens: int | None, temperature: float | None, headers: dict | None = None
):
    """The responses of one generation streamed with a tritonclient.grpc client (to Triton or the
    gateway): [(text, finish_reason, prompt_tokens, completion_tokens)]; a stream error raises."""
    results: queue.Queue = queue.Queue()
    client.start_stream(lambda result, error: results.put((result, error)), stream_timeout=120, headers=headers)
    try:
        inputs = [tgrpc.InferInput("PROMPT", [1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
        if max_tokens is not None:
            m = tgrpc.InferInput("MAX_TOKENS", [1], "INT32")
            m.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
            inputs.append(m)
        if temperature is not None:
            t = tgrpc.InferInput("TEMPERATURE", [1], "FP32")
            t.set_data_from_numpy(np.array([temperature], dtype=np.float32))
            inputs.append(t)
        try:
            client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        except InferenceServerException:
            # The server may refuse the stream (no token) before the request is sent: the client
            # then reports "no longer in valid state" here and the real status to the callback.
            result, error = results.get(timeout=10)
            raise error or RuntimeError("the stream failed without an error") from None
        responses = []
        while True:
            result, error = results.get(timeout=120)
            if error is not None:
                raise error
            final = result.get_response().parameters["triton_final_response"].bool_param
            if result.as_numpy("TEXT") is not None:
                responses.append(
                    (
                        result.as_numpy("TEXT")[0].decode(),
                        result.as_numpy("FINISH_REASON")[0].decode(),
                        int(result.as_numpy("PROMPT_TOKENS")[0]),
                        int(result.as_numpy("COMPLETION_TOKENS")[0]),
                    )
                )
            if final:
                return responses
    finally:
        client.stop_stream()


@pytest.fixture(scope="module")
def llm_gateway(
    tmp_path_factory,
    nats_server: NatsServer,
    triton_server: TritonServer,
    valkey_server: ValkeyServer,
    generator_model: str,
    embedding_model: str,
) -> Iterator[Gateway]:
    """A gateway with /metrics and the result cache, in front of the Triton serving team-a's
    `tiny-gpt` (generation) and `minilm-embed` (embedding)."""
    yield from _start_gateway(
        tmp_path_factory.mktemp("llm-gateway"),
        nats_server,
        {
            **triton_env(triton_server),
            "METRICS_PORT": "0",
            "VALKEY_URL": valkey_server.url,
            "CACHE_TTL_S": "60",
            "MAX_REQUEST_BYTES": str(1024 * 1024),
        },
    )
