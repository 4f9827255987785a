"""Preprocessing step of examples/lora-finetune.yaml: clean the raw topics dataset for training.

Normalises whitespace, drops empty texts, unknown labels and exact duplicates (keeping the first),
keeps the `split` column (`eval` rows are held out by the trainer), and writes the result with an
atomic rename, so a crash never leaves a half-written file for the next step. Standard library only:
it runs under whatever `python` the worker finds.

    python prepare_topics.py --src topics.jsonl --out build/topics.prepared.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

LABELS = ("sports", "technology", "food", "weather")


def clean(rows):
    """(kept rows, counts of what was dropped and why)."""
    seen: set[str] = set()
    dropped: collections.Counter = collections.Counter()
    kept = []
    for row in rows:
        text = " ".join(str(row.get("text", "")).split())
        label = str(row.get("label", "")).strip().lower()
        if not text:
            dropped["empty text"] += 1
        elif label not in LABELS:
            dropped["unknown label"] += 1
        elif text.lower() in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(text.lower())
            kept.append({"text": text, "label": label, "split": row.get("split", "train")})
    return kept, dropped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    rows = []
    with args.src.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    print(f"{args.src}:{n}: not JSON ({exc}); skipped", file=sys.stderr)
    kept, dropped = clean(rows)
    if not kept:
        print("error: nothing left to train on", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=".topics-")
    with os.fdopen(fd, "w") as f:
        for row in kept:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, args.out)
    splits = collections.Counter(r["split"] for r in kept)
    labels = collections.Counter(r["label"] for r in kept)
    print(f"read {len(rows)} rows; kept {len(kept)} ({dict(splits)}); dropped {dict(dropped) or 0}")
    print(f"labels: {dict(sorted(labels.items()))}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
