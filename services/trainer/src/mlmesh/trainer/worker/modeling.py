"""Model and tokenizer loading for workers: Hugging Face directories or built-in configs, with
LoRA / QLoRA adapters from peft."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mlmesh.common.builtin_models import builtin_config, minilm_path

CLASSIFICATION = "text_classification"
GENERATION = "text_generation"


def _builtin_name(ref: str) -> str | None:
    return ref.removeprefix("builtin:") if ref.startswith("builtin:") else None


def model_dir(ref: str) -> Path | None:
    """The Hugging Face directory behind a model reference; None for config-only built-ins."""
    name = _builtin_name(ref)
    if name == "minilm":
        return minilm_path()
    if name is not None:
        return None
    path = Path(ref)
    if not (path / "config.json").is_file():
        raise ValueError(f"model {ref!r}: no config.json there; expected a Hugging Face model directory")
    return path


def load_tokenizer(ref: str):
    from transformers import AutoTokenizer

    directory = model_dir(ref)
    source = directory if directory is not None and _has_tokenizer(directory) else minilm_path()
    tok = AutoTokenizer.from_pretrained(str(source))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.sep_token
    return tok


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))


_DROPOUT_KEYS = ("dropout", "pdrop", "dropout_prob", "dropout_rate")


def set_dropout(config, p: float) -> None:
    """Every dropout probability of a Hugging Face config (GPT-2's *_pdrop, BERT's *_dropout_prob,
    Llama's attention_dropout ...), except a classifier head's own."""
    for key, value in list(vars(config).items()):
        if isinstance(value, float) and key.endswith(_DROPOUT_KEYS) and not key.startswith("classifier"):
            setattr(config, key, p)


def load_model(
    ref: str,
    task: str,
    *,
    num_labels: int,
    dtype: torch.dtype,
    quantize_4bit: bool,
    seed: int,
    device: torch.device,
    dropout: float | None = None,
):
    """The base model. Built-in configs get a seeded random init, so every restart of a run starts
    from the same weights before the checkpoint is loaded over them; they are built directly on
    the device (a 1B model initializes in seconds there, minutes on a CPU)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    auto = AutoModelForSequenceClassification if task == CLASSIFICATION else AutoModelForCausalLM
    kwargs: dict = {"dtype": dtype}
    if task == CLASSIFICATION:
        kwargs["num_labels"] = num_labels
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["device_map"] = {"": device}  # 4-bit weights are quantized as they land on the GPU
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    directory = model_dir(ref)
    if directory is not None:
        config = AutoConfig.from_pretrained(
            str(directory), **({"num_labels": num_labels} if "num_labels" in kwargs else {})
        )
        kwargs.pop("num_labels", None)
        if dropout is not None:
            set_dropout(config, dropout)
        return auto.from_pretrained(str(directory), config=config, attn_implementation="sdpa", **kwargs)
    cfg = dict(builtin_config(_builtin_name(ref)))
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    if task == CLASSIFICATION:
        config.num_labels = num_labels
    if dropout is not None:
        set_dropout(config, dropout)
    with torch.device(device):
        return auto.from_config(config, attn_implementation="sdpa", dtype=dtype)


def apply_lora(model, task: str, lora: dict, quantized: bool, gradient_checkpointing: bool):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(
        r=int(lora.get("rank") or 16),
        lora_alpha=int(lora.get("alpha") or 32),
        lora_dropout=float(lora.get("dropout") or 0.0),
        target_modules=list(lora.get("targetModules") or lora.get("target_modules") or []) or None,
        task_type="SEQ_CLS" if task == CLASSIFICATION else "CAUSAL_LM",
    )
    return get_peft_model(model, config)


def save_output(model, tokenizer, out: Path, *, task: str, base_ref: str, label_names: list[str], method: str) -> Path:
    """save_pretrained: the adapter for LoRA/QLoRA, full weights otherwise; plus the tokenizer and
    a small card the gateway's model loader reads."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    card = {"task": task, "base_model": base_ref, "method": method, "labels": label_names, "format": "huggingface"}
    directory = model_dir(base_ref)
    if directory is not None and (directory / "modules.json").is_file():
        card["sentence_transformers"] = True  # mean pooling for embeddings, as the base model does
    (out / "mlmesh_model.json").write_text(json.dumps(card, indent=1))
    return out
