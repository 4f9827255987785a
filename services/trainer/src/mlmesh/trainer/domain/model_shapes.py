"""Model shapes from Hugging Face config.json dicts, with analytic parameter counts.

The planner sizes memory from these counts without loading any weights, so they must match what
transformers builds: exact for GPT-2, BERT (BertModel, with pooler) and Llama / Mistral / Qwen2;
an estimate for other architectures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GPT2 = "gpt2"
BERT = "bert"
LLAMA_LIKE = frozenset({"llama", "mistral", "qwen2"})


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    n_layers: int
    hidden: int
    n_heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    tie_embeddings: bool
    total_parameters: int
    # Llama-style only: grouped-query attention and explicit head size.
    n_kv_heads: int = 0
    head_dim: int = 0

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden // self.n_heads

    @property
    def is_causal_lm(self) -> bool:
        return self.model_type != BERT


def _req(cfg: dict[str, Any], key: str) -> int:
    if cfg.get(key) is None:
        raise ValueError(f"model config lacks {key!r}")
    return int(cfg[key])


def shape_from_hf_config(cfg: dict[str, Any]) -> ModelShape:
    """A ModelShape from a config.json dict; ValueError names a missing required key."""
    model_type = str(cfg.get("model_type") or "")
    if model_type == GPT2:
        return _gpt2(cfg)
    if model_type == BERT:
        return _bert(cfg)
    if model_type in LLAMA_LIKE:
        return _llama(cfg, model_type)
    return _generic(cfg, model_type or "unknown")


def _gpt2(cfg: dict[str, Any]) -> ModelShape:
    L, h, a, V = _req(cfg, "n_layer"), _req(cfg, "n_embd"), _req(cfg, "n_head"), _req(cfg, "vocab_size")
    i = int(cfg.get("n_inner") or 4 * h)
    P = int(cfg.get("n_positions") or 1024)
    tie = bool(cfg.get("tie_word_embeddings", True))
    # Per block: ln_1, c_attn (h->3h), attn c_proj, ln_2, c_fc (h->i), mlp c_proj (i->h); Conv1D has biases.
    block = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * i + i) + (i * h + h)
    total = V * h + P * h + L * block + 2 * h + (0 if tie else V * h)
    return ModelShape(GPT2, L, h, a, i, V, P, tie, total)


def _bert(cfg: dict[str, Any]) -> ModelShape:
    L, h = _req(cfg, "num_hidden_layers"), _req(cfg, "hidden_size")
    a, V = _req(cfg, "num_attention_heads"), _req(cfg, "vocab_size")
    i = int(cfg.get("intermediate_size") or 4 * h)
    P = int(cfg.get("max_position_embeddings") or 512)
    T = int(cfg.get("type_vocab_size", 2))
    embeddings = (V + P + T) * h + 2 * h
    block = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    pooler = h * h + h  # BertModel's default; task heads on top are not counted
    total = embeddings + L * block + pooler
    return ModelShape(BERT, L, h, a, i, V, P, True, total)


def _llama(cfg: dict[str, Any], model_type: str) -> ModelShape:
    L, h = _req(cfg, "num_hidden_layers"), _req(cfg, "hidden_size")
    a, V, i = _req(cfg, "num_attention_heads"), _req(cfg, "vocab_size"), _req(cfg, "intermediate_size")
    kv = int(cfg.get("num_key_value_heads") or a)
    d = int(cfg.get("head_dim") or h // a)
    tie = bool(cfg.get("tie_word_embeddings", False))
    qkv_bias = model_type == "qwen2" or bool(cfg.get("attention_bias", False))
    o_bias = bool(cfg.get("attention_bias", False))
    mlp_bias = bool(cfg.get("mlp_bias", False))
    attn = h * a * d + 2 * h * kv * d + a * d * h
    attn += (a * d + 2 * kv * d if qkv_bias else 0) + (h if o_bias else 0)
    mlp = 3 * h * i + ((2 * i + h) if mlp_bias else 0)  # gated: gate, up, down
    block = attn + mlp + 2 * h  # two RMSNorm weights
    total = V * h + L * block + h + (0 if tie else V * h)
    P = int(cfg.get("max_position_embeddings") or 0)
    return ModelShape(model_type, L, h, a, i, V, P, tie, total, n_kv_heads=kv, head_dim=d)


def _generic(cfg: dict[str, Any], model_type: str) -> ModelShape:
    """Estimate: embeddings + L x (4 h^2 attention + 2 h i MLP + small vectors), untied head if stated."""
    L, h = _req(cfg, "num_hidden_layers"), _req(cfg, "hidden_size")
    a, V = _req(cfg, "num_attention_heads"), _req(cfg, "vocab_size")
    i = int(cfg.get("intermediate_size") or 4 * h)
    tie = bool(cfg.get("tie_word_embeddings", True))
    total = V * h + L * (4 * h * h + 2 * h * i + 9 * h + i) + 2 * h + (0 if tie else V * h)
    P = int(cfg.get("max_position_embeddings") or 0)
    return ModelShape(model_type, L, h, a, i, V, P, tie, total)


# --- LoRA ----------------------------------------------------------------------------------------


def _module_dims(shape: ModelShape) -> dict[str, list[tuple[int, int]]]:
    """(in, out) of each linear matching a peft target name, per layer. peft matches by name suffix,
    so one name can hit several matrices (GPT-2's "c_proj" is in attention and MLP)."""
    h, i = shape.hidden, shape.intermediate
    if shape.model_type == GPT2:
        return {"c_attn": [(h, 3 * h)], "c_proj": [(h, h), (i, h)], "c_fc": [(h, i)]}
    if shape.model_type == BERT:
        return {
            "query": [(h, h)],
            "key": [(h, h)],
            "value": [(h, h)],
            # attention.output.dense, intermediate.dense, output.dense
            "dense": [(h, h), (h, i), (i, h)],
        }
    if shape.model_type in LLAMA_LIKE:
        q, kv = shape.n_heads * shape.head_size, shape.kv_heads * shape.head_size
        return {
            "q_proj": [(h, q)],
            "k_proj": [(h, kv)],
            "v_proj": [(h, kv)],
            "o_proj": [(q, h)],
            "gate_proj": [(h, i)],
            "up_proj": [(h, i)],
            "down_proj": [(i, h)],
        }
    raise ValueError(f"LoRA module sizes are unknown for model type {shape.model_type!r}")


def lora_target_names(model_type: str) -> list[str]:
    """Module names LoRA can target for an architecture (for validation messages)."""
    probe = ModelShape(model_type, 1, 1, 1, 1, 1, 1, True, 0)
    return list(_module_dims(probe))


def lora_parameters(shape: ModelShape, rank: int, target_modules: Iterable[str]) -> int:
    """Trainable LoRA parameters: A (in x r) + B (r x out) for each adapted matrix of each layer."""
    dims = _module_dims(shape)
    per_layer = 0
    extra = 0
    for name in dict.fromkeys(target_modules):
        if name not in dims:
            raise ValueError(f"unknown LoRA target {name!r} for {shape.model_type}; known: {', '.join(dims)}")
        per_layer += sum(rank * (fan_in + fan_out) for fan_in, fan_out in dims[name])
        if shape.model_type == BERT and name == "dense":
            extra += rank * 2 * shape.hidden  # BertModel's pooler.dense matches too
    return shape.n_layers * per_layer + extra


def default_lora_targets(model_type: str) -> list[str]:
    if model_type == GPT2:
        return ["c_attn"]
    if model_type == BERT:
        return ["query", "value"]
    if model_type in LLAMA_LIKE:
        return ["q_proj", "v_proj"]
    raise ValueError(f"no default LoRA targets for model type {model_type!r}; set hyperparameters.lora.target_modules")
