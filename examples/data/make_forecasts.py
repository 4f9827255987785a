"""Writes forecasts.jsonl: short weather-forecast paragraphs (one `text` column) for the causal-LM
example (examples/causal-lm-finetune.yaml). Every 10th row is marked `split: eval` and held out for
eval_loss / eval_perplexity. Deterministic (seed 11), so the committed file can be regenerated
exactly: `python examples/data/make_forecasts.py`."""

from __future__ import annotations

import json
import random
from pathlib import Path

PLACES = [
    "the coast",
    "the northern hills",
    "the city",
    "the river valley",
    "the islands",
    "the eastern plains",
    "the mountains",
    "the harbour",
    "the southern farmland",
    "the lakes",
]
TIMES = ["this morning", "this afternoon", "tonight", "tomorrow", "on Saturday", "on Sunday", "later this week"]
SKIES = [
    "clear skies",
    "scattered clouds",
    "heavy rain",
    "light showers",
    "thick fog",
    "bright sunshine",
    "thunderstorms",
    "a light drizzle",
    "snow flurries",
]
WINDS = ["a gentle breeze", "strong gusts", "calm air", "a cold northerly wind", "a warm southerly wind"]
FEELS = ["mild", "chilly", "warm", "humid", "crisp", "freezing", "pleasant"]
ADVICE = [
    "Take an umbrella.",
    "Wear a warm coat.",
    "A good day for a walk.",
    "Drive carefully on the wet roads.",
    "Keep an eye on the sky.",
    "Sun cream is a good idea.",
    "Expect delays at the ferry port.",
]


def forecast(rng: random.Random) -> str:
    place, when = rng.choice(PLACES), rng.choice(TIMES)
    low = rng.randint(-5, 15)
    high = low + rng.randint(3, 12)
    sentences = [
        f"{when[0].upper()}{when[1:]} in {place} expect {rng.choice(SKIES)} with {rng.choice(WINDS)}.",
        f"Temperatures range from {low} to {high} degrees and it will feel {rng.choice(FEELS)}.",
    ]
    if rng.random() < 0.6:
        sentences.append(f"Later, {rng.choice(SKIES)} will move in over {rng.choice(PLACES)}.")
    sentences.append(rng.choice(ADVICE))
    return " ".join(sentences)


def main(rows: int = 400, seed: int = 11) -> None:
    rng = random.Random(seed)
    out_rows = []
    for i in range(rows):
        out_rows.append({"text": forecast(rng), "split": "eval" if i % 10 == 9 else "train"})
    out = Path(__file__).with_name("forecasts.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in out_rows))
    print(f"wrote {len(out_rows)} rows ({out.stat().st_size} bytes) to {out}")


if __name__ == "__main__":
    main()
