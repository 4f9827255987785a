"""Writes topics.jsonl: short news-style sentences in four topics (sports, technology, food,
weather), with a held-out `split: eval` fifth. Deterministic (seed 7), so the committed file can be
regenerated exactly: `python examples/data/make_topics.py`."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "sports": {
        "subjects": [
            "the striker",
            "the home team",
            "the coach",
            "the goalkeeper",
            "the young sprinter",
            "the tennis champion",
            "the rookie",
            "the captain",
            "the visiting side",
            "the cyclist",
        ],
        "verbs": [
            "scored twice in",
            "was injured during",
            "celebrated after",
            "trained hard before",
            "lost narrowly in",
            "dominated",
            "was substituted in",
            "set a record in",
        ],
        "objects": [
            "the cup final",
            "the derby",
            "the second half",
            "the marathon",
            "the qualifying round",
            "the league opener",
            "extra time",
            "the semi-final",
            "the relay",
            "the away match",
        ],
    },
    "technology": {
        "subjects": [
            "the startup",
            "the chip maker",
            "the software team",
            "the new phone",
            "the cloud provider",
            "the open-source project",
            "the laptop",
            "the security researcher",
            "the app",
            "the robot",
        ],
        "verbs": [
            "released an update for",
            "found a bug in",
            "announced",
            "doubled the speed of",
            "patched",
            "shipped",
            "open-sourced",
            "benchmarked",
        ],
        "objects": [
            "its operating system",
            "the GPU driver",
            "a faster database",
            "the battery firmware",
            "the compiler",
            "an encryption library",
            "the browser",
            "its AI model",
            "the network stack",
            "the storage engine",
        ],
    },
    "food": {
        "subjects": [
            "the chef",
            "the bakery",
            "the new restaurant",
            "my grandmother",
            "the food truck",
            "the pastry cook",
            "the cafe",
            "the street vendor",
            "the sommelier",
            "the kitchen",
        ],
        "verbs": ["served", "baked", "simmered", "seasoned", "grilled", "roasted", "plated", "paired wine with"],
        "objects": [
            "a spicy curry",
            "fresh sourdough",
            "the tomato soup",
            "a chocolate tart",
            "grilled fish",
            "the mushroom risotto",
            "a lemon cake",
            "slow-cooked lamb",
            "the noodle broth",
            "a garden salad",
        ],
    },
    "weather": {
        "subjects": [
            "a cold front",
            "the storm",
            "heavy rain",
            "the heatwave",
            "thick fog",
            "strong wind",
            "the snowfall",
            "a thunderstorm",
            "the forecast",
            "morning frost",
        ],
        "verbs": [
            "is moving toward",
            "flooded",
            "brought relief to",
            "closed roads across",
            "settled over",
            "is expected in",
            "knocked out power in",
            "cooled",
        ],
        "objects": [
            "the coast",
            "the northern valleys",
            "the city centre",
            "the mountain passes",
            "the farmland",
            "the harbour",
            "the eastern suburbs",
            "the airport",
            "the islands",
            "the river basin",
        ],
    },
}
ENDINGS = [
    "",
    " on Sunday",
    " this week",
    " yesterday",
    " according to reports",
    " late last night",
    " for the first time",
    " again",
]


def main(rows_per_topic: int = 100, seed: int = 7) -> None:
    rng = random.Random(seed)
    rows = []
    for topic, parts in TOPICS.items():
        seen: set[str] = set()
        while len(seen) < rows_per_topic:
            text = (
                f"{rng.choice(parts['subjects'])} {rng.choice(parts['verbs'])} "
                f"{rng.choice(parts['objects'])}{rng.choice(ENDINGS)}."
            )
            text = text[0].upper() + text[1:]
            if text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": topic})
    rng.shuffle(rows)
    for i, row in enumerate(rows):
        row["split"] = "eval" if i % 5 == 4 else "train"
    out = Path(__file__).with_name("topics.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
