"""Datasets for the worker: jsonl rows -> token tensors, for classification or causal LM."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

EVAL_SPLITS = frozenset({"eval", "test", "validation", "valid"})


@dataclass
class Examples:
    """Tokenized examples; `labels` are class ids (classification) or None (causal LM: the
    inputs are their own labels)."""

    input_ids: list[list[int]]
    labels: list[int] | None
    label_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


class Row(dict):
    """A dataset row that remembers its line in the file, so errors found after the train/eval
    split (or after blank lines were skipped) still name the right line."""

    line: int = 0


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: each line must be a JSON object")
            row = Row(row)
            row.line = n
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: the dataset is empty")
    return rows


def split_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Rows marked split=eval/test/validation are held out; with none marked, every 10th row is
    (when there are at least 20), so accuracy is never measured on training rows."""
    marked = [r for r in rows if str(r.get("split", "")).lower() in EVAL_SPLITS]
    if marked:
        return [r for r in rows if str(r.get("split", "")).lower() not in EVAL_SPLITS], marked
    if len(rows) < 20:
        return rows, []
    return [r for i, r in enumerate(rows) if i % 10 != 9], [r for i, r in enumerate(rows) if i % 10 == 9]


def _column(rows: list[dict], name: str, path: str) -> list:
    missing = [getattr(r, "line", 0) or i + 1 for i, r in enumerate(rows) if name not in r]
    if missing:
        raise ValueError(f"{path}:{missing[0]}: column {name!r} is missing (here first; {len(missing)} row(s) lack it)")
    return [r[name] for r in rows]


def classification_examples(
    rows: list[dict], tokenizer, max_len: int, text_col: str, label_col: str, label_names: list[str], path: str
) -> Examples:
    texts = [str(t) for t in _column(rows, text_col, path)]
    labels = [str(v) for v in _column(rows, label_col, path)]
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"{path}: labels {unknown} do not occur in the training rows")
    enc = tokenizer(texts, truncation=True, max_length=max_len)
    return Examples(input_ids=enc["input_ids"], labels=[index[v] for v in labels], label_names=label_names)


def causal_lm_examples(rows: list[dict], tokenizer, block: int, text_col: str, path: str) -> Examples:
    """Texts joined by the separator token and cut into full blocks (packing, no padding)."""
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    stream: list[int] = []
    for text in _column(rows, text_col, path):
        stream.extend(tokenizer(str(text), add_special_tokens=False)["input_ids"])
        if sep is not None:
            stream.append(sep)
    blocks = [stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]
    if not blocks:
        raise ValueError(f"{path}: fewer than {block} tokens in the dataset; lower max_seq_length")
    return Examples(input_ids=blocks, labels=None)


def collate(
    examples: Examples, indices: list[int], pad_id: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], int]:
    """A padded micro-batch and its count of real tokens. Padding positions get label -100 in causal
    LM (ignored by the loss). A batch without padding (packed causal-LM blocks) carries no
    attention mask: the model then takes its plain causal path, with no mask to build or inspect
    on the host."""
    seqs = [examples.input_ids[i] for i in indices]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    n_tokens = sum(len(s) for s in seqs)
    padded = n_tokens < ids.numel()
    batch = {"input_ids": ids}
    if padded or examples.labels is not None:
        batch["attention_mask"] = mask
    if examples.labels is not None:
        batch["labels"] = torch.tensor([examples.labels[i] for i in indices], dtype=torch.long)
    else:
        batch["labels"] = ids.masked_fill(mask == 0, -100) if padded else ids.clone()
    if device.type == "cuda":
        # Pinned host memory makes the copy truly asynchronous; from pageable memory the host would
        # wait for the GPU to finish everything queued before it (a stall every step).
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}, n_tokens
    return batch, n_tokens
