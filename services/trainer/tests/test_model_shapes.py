"""Analytic parameter counts against models transformers actually builds, LoRA counts against peft,
and the built-in model catalog (MiniLM's real packaged weights and tokenizer)."""

from __future__ import annotations

import json
import math
import struct

import peft
import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaModel,
)

from mlmesh.common import builtin_models
from mlmesh.trainer.domain.model_shapes import (
    default_lora_targets,
    lora_parameters,
    shape_from_hf_config,
)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False:UserWarning"),
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def peft_count(model: torch.nn.Module, rank: int, targets: list[str]) -> int:
    return trainable(peft.get_peft_model(model, peft.LoraConfig(r=rank, target_modules=targets)))


GPT2_SMALL = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 1000, "bos_token_id": 0, "eos_token_id": 0}
BERT_SMALL = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "vocab_size": 1000,
    "max_position_embeddings": 128,
    "type_vocab_size": 3,
}
LLAMA_SMALL = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 160,
    "vocab_size": 1000,
}


def hf_dict(config) -> dict:
    """What a config.json written by save_pretrained holds."""
    return json.loads(config.to_json_string(use_diff=False))


# --- base model counts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{}, {"n_inner": 200}, {"tie_word_embeddings": False}, {"n_positions": 64}],
    ids=["default", "n_inner", "untied", "positions"],
)
def test_gpt2_count_is_exact(extra):
    config = GPT2Config(**GPT2_SMALL, **extra)
    shape = shape_from_hf_config(hf_dict(config))
    # GPT2LMHeadModel ties lm_head to wte unless told not to; parameters() lists a tied tensor once.
    assert shape.total_parameters == count(GPT2LMHeadModel(config))
    assert (shape.model_type, shape.n_layers, shape.hidden, shape.n_heads) == ("gpt2", 2, 64, 4)
    assert shape.intermediate == extra.get("n_inner", 256)
    assert shape.tie_embeddings == extra.get("tie_word_embeddings", True)


def test_gpt2_from_a_minimal_dict():
    minimal = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 1000}
    assert shape_from_hf_config(minimal).total_parameters == count(GPT2LMHeadModel(GPT2Config(**GPT2_SMALL)))


def test_bert_count_is_exact_and_a_classifier_adds_its_head():
    config = BertConfig(**BERT_SMALL)
    shape = shape_from_hf_config(hf_dict(config))
    assert shape.total_parameters == count(BertModel(config))
    assert shape.max_positions == 128 and not shape.is_causal_lm
    classifier = BertForSequenceClassification(BertConfig(**BERT_SMALL, num_labels=3))
    assert count(classifier) == shape.total_parameters + 64 * 3 + 3


@pytest.mark.parametrize(
    "extra",
    [{}, {"tie_word_embeddings": True}, {"num_key_value_heads": 8}, {"attention_bias": True, "mlp_bias": True}],
    ids=["gqa-untied", "tied", "mha", "biases"],
)
def test_llama_count_is_exact(extra):
    config = LlamaConfig(**{**LLAMA_SMALL, **extra})
    shape = shape_from_hf_config(hf_dict(config))
    assert shape.total_parameters == count(LlamaForCausalLM(config))
    assert shape.kv_heads == extra.get("num_key_value_heads", 2)


def test_mistral_with_explicit_head_dim_and_qwen2_qkv_biases():
    mistral = MistralConfig(**LLAMA_SMALL, head_dim=16)  # head_dim != hidden / heads (8)
    assert shape_from_hf_config(hf_dict(mistral)).total_parameters == count(MistralForCausalLM(mistral))
    qwen = Qwen2Config(**LLAMA_SMALL)
    assert shape_from_hf_config(hf_dict(qwen)).total_parameters == count(Qwen2ForCausalLM(qwen))


def test_unknown_architecture_is_estimated_from_common_keys():
    config = RobertaConfig(**BERT_SMALL)
    shape = shape_from_hf_config(hf_dict(config))
    assert shape.model_type == "roberta"
    assert shape.total_parameters == pytest.approx(count(RobertaModel(config)), rel=0.1)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"model_type": "gpt2", "n_layer": 2, "n_head": 4, "vocab_size": 10}, "n_embd"),
        ({"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4, "vocab_size": 10}, "num_hidden_layers"),
        ({**LLAMA_SMALL, "model_type": "llama", "intermediate_size": None}, "intermediate_size"),
        ({"model_type": "t5", "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10}, "hidden_size"),
    ],
)
def test_missing_required_key_is_named(cfg, key):
    with pytest.raises(ValueError, match=repr(key)):
        shape_from_hf_config(cfg)


# --- LoRA ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [["c_attn"], ["c_proj"], ["c_attn", "c_proj", "c_fc"]])
def test_gpt2_lora_count_matches_peft(targets):
    config = GPT2Config(**GPT2_SMALL, n_inner=200)
    shape = shape_from_hf_config(hf_dict(config))
    assert lora_parameters(shape, 8, targets) == peft_count(GPT2LMHeadModel(config), 8, targets)


@pytest.mark.parametrize("targets", [["query", "value"], ["key"], ["query", "dense"]])
def test_bert_lora_count_matches_peft(targets):
    config = BertConfig(**BERT_SMALL)
    shape = shape_from_hf_config(hf_dict(config))
    assert lora_parameters(shape, 4, targets) == peft_count(BertModel(config), 4, targets)


@pytest.mark.parametrize(
    "targets", [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]]
)
def test_llama_lora_count_honours_kv_heads(targets):
    config = LlamaConfig(**LLAMA_SMALL)
    shape = shape_from_hf_config(hf_dict(config))
    assert lora_parameters(shape, 16, targets) == peft_count(LlamaForCausalLM(config), 16, targets)


def test_default_targets_match_peft_defaults_by_count():
    for config, model_cls in ((GPT2Config(**GPT2_SMALL), GPT2LMHeadModel), (BertConfig(**BERT_SMALL), BertModel)):
        shape = shape_from_hf_config(hf_dict(config))
        targets = default_lora_targets(shape.model_type)
        assert lora_parameters(shape, 16, targets) == peft_count(model_cls(config), 16, targets)
    assert default_lora_targets("gpt2") == ["c_attn"]
    assert default_lora_targets("bert") == ["query", "value"]
    assert default_lora_targets("mistral") == default_lora_targets("qwen2") == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="t5"):
        default_lora_targets("t5")


def test_unknown_lora_target_is_named():
    shape = shape_from_hf_config({**LLAMA_SMALL, "model_type": "llama"})
    with pytest.raises(ValueError, match="'c_attn'"):
        lora_parameters(shape, 8, ["q_proj", "c_attn"])


# --- built-in models -----------------------------------------------------------------------------


def test_minilm_is_the_packaged_pretrained_model():
    path = builtin_models.minilm_path()
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    config = builtin_models.builtin_config("builtin:minilm")
    assert config["model_type"] == "bert" and config["hidden_size"] == 384
    shape = shape_from_hf_config(config)
    with open(path / "model.safetensors", "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    stored = sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    buffers = math.prod(header["embeddings.position_ids"]["shape"])  # a saved buffer, not a parameter
    assert shape.total_parameters == stored - buffers == 22_713_216
    assert builtin_models.has_pretrained_weights("builtin:minilm")


@pytest.mark.parametrize("name", ["gpt2-tiny", "gpt2-small", "gpt-1b"])
def test_gpt_builtins_share_minilms_tokenizer(name):
    from tokenizers import Tokenizer

    config = builtin_models.builtin_config(f"builtin:{name}")
    tokenizer = Tokenizer.from_file(str(builtin_models.tokenizer_path(name) / "tokenizer.json"))
    ids = tokenizer.encode("Planning memory for a small causal language model.").ids
    assert ids and max(ids) < config["vocab_size"]
    assert tokenizer.get_vocab_size() <= config["vocab_size"]
    assert max(config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) < tokenizer.get_vocab_size()
    assert not builtin_models.has_pretrained_weights(name)


def test_gpt_builtin_sizes():
    tiny = builtin_models.builtin_config("gpt2-tiny")
    assert shape_from_hf_config(tiny).total_parameters == count(GPT2LMHeadModel(GPT2Config(**tiny)))
    small = shape_from_hf_config(builtin_models.builtin_config("gpt2-small"))
    assert (small.n_layers, small.hidden, small.max_positions) == (12, 768, 1024)
    assert 1.25e9 < shape_from_hf_config(builtin_models.builtin_config("gpt-1b")).total_parameters < 1.35e9


def test_builtin_names_and_errors():
    assert builtin_models.BUILTIN_NAMES == ("minilm", "gpt2-tiny", "gpt2-small", "gpt-1b")
    assert builtin_models.is_builtin("builtin:gpt2-tiny") and not builtin_models.is_builtin("file:///m")
    with pytest.raises(ValueError, match="gpt2-tiny") as info:
        builtin_models.builtin_config("builtin:gpt5")
    assert "gpt5" in str(info.value) and "minilm" in str(info.value)
