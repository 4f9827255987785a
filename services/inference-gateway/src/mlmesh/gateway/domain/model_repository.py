"""The Triton model-repository entry of a deployment, as text: `config.pbtxt`.

One Triton model per deployment (`<team>--<deployment>`) whose version directories are registry
versions, so a canary is a second loaded version of the same model and the cache key's version is
the registry's. Every version directory holds the same python-backend `model.py` (shipped in
`mlmesh.gateway.triton_model`) and the model's files under `model/` (plus `base/` for an adapter).

The tensors each task speaks are fixed here; the python backend, the OpenAI front and the docs
follow them:

| task | inputs | outputs |
|---|---|---|
| text classification | TEXT (BYTES [1]) | LABEL (BYTES [1]), SCORES (FP32 [-1]) |
| embedding | TEXT (BYTES [1]) | EMBEDDING (FP32 [-1]), TOKENS (INT32 [1]) |
| text generation | PROMPT (BYTES [1]); optional MAX_TOKENS (INT32 [1]), | TEXT (BYTES [1]) per chunk, |
|  (decoupled)    | TEMPERATURE (FP32 [1])                             | FINISH_REASON (BYTES [1]),   |
|                 |                                                     | PROMPT_TOKENS, COMPLETION_TOKENS (INT32 [1]) |

Classification and embedding batch (dynamic batching, batch dimension first); generation streams one
request at a time per instance (decoupled transaction policy, no batch dimension).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mlmesh.api.common.v1 import common_pb2

GENERATION = common_pb2.MODEL_TASK_TEXT_GENERATION
CLASSIFICATION = common_pb2.MODEL_TASK_TEXT_CLASSIFICATION
EMBEDDING = common_pb2.MODEL_TASK_EMBEDDING

TASK_NAMES = {GENERATION: "text_generation", CLASSIFICATION: "text_classification", EMBEDDING: "embedding"}


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # Triton's TYPE_*
    dims: tuple[int, ...]
    optional: bool = False


CONTRACT: dict[int, tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] = {
    CLASSIFICATION: (
        (Tensor("TEXT", "TYPE_STRING", (1,)),),
        (Tensor("LABEL", "TYPE_STRING", (1,)), Tensor("SCORES", "TYPE_FP32", (-1,))),
    ),
    EMBEDDING: (
        (Tensor("TEXT", "TYPE_STRING", (1,)),),
        (Tensor("EMBEDDING", "TYPE_FP32", (-1,)), Tensor("TOKENS", "TYPE_INT32", (1,))),
    ),
    GENERATION: (
        (
            Tensor("PROMPT", "TYPE_STRING", (1,)),
            Tensor("MAX_TOKENS", "TYPE_INT32", (1,), optional=True),
            Tensor("TEMPERATURE", "TYPE_FP32", (1,), optional=True),
        ),
        (
            Tensor("TEXT", "TYPE_STRING", (1,)),
            Tensor("FINISH_REASON", "TYPE_STRING", (1,)),
            Tensor("PROMPT_TOKENS", "TYPE_INT32", (1,)),
            Tensor("COMPLETION_TOKENS", "TYPE_INT32", (1,)),
        ),
    ),
}


@dataclass(frozen=True)
class EntryConfig:
    """What config.pbtxt says of a deployment's Triton model."""

    triton_name: str
    task: int
    versions: Sequence[int]
    instance_count: int = 1
    gpu: bool = False
    max_batch_size: int = 8
    dynamic_batching: bool = True
    max_queue_delay_us: int = 2000
    preferred_batch_sizes: Sequence[int] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)


def _quote(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid protobuf text-format string


def _tensor(t: Tensor) -> str:
    dims = ", ".join(str(d) for d in t.dims)
    optional = " optional: true" if t.optional else ""
    return f"  {{ name: {_quote(t.name)} data_type: {t.data_type} dims: [ {dims} ]{optional} }}"


def render_config(entry: EntryConfig) -> str:
    """config.pbtxt of a deployment's Triton model."""
    if entry.task not in CONTRACT:
        raise ValueError(f"no Triton model for task {entry.task}")
    inputs, outputs = CONTRACT[entry.task]
    generation = entry.task == GENERATION
    batch = 0 if generation else max(0, entry.max_batch_size)
    kind = "KIND_GPU" if entry.gpu else "KIND_CPU"
    versions = " ".join(str(v) for v in sorted(set(entry.versions)))
    lines = [
        f"name: {_quote(entry.triton_name)}",
        'backend: "python"',
        f"max_batch_size: {batch}",
        f"version_policy: {{ specific: {{ versions: [ {versions.replace(' ', ', ')} ] }} }}",
        "input [",
        ",\n".join(_tensor(t) for t in inputs),
        "]",
        "output [",
        ",\n".join(_tensor(t) for t in outputs),
        "]",
        f"instance_group [ {{ kind: {kind} count: {max(1, entry.instance_count)} }} ]",
    ]
    if generation:
        lines.append("model_transaction_policy { decoupled: true }")
    elif batch and entry.dynamic_batching:
        preferred = ", ".join(str(b) for b in entry.preferred_batch_sizes if 0 < b <= batch)
        body = f"max_queue_delay_microseconds: {max(0, entry.max_queue_delay_us)}"
        if preferred:
            body = f"preferred_batch_size: [ {preferred} ] " + body
        lines.append(f"dynamic_batching {{ {body} }}")
    params = {"task": TASK_NAMES[entry.task], **entry.parameters}
    for key in sorted(params):
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(str(params[key]))} }} }}")
    return "\n".join(lines) + "\n"
