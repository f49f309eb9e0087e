"""Write a small, noisy BBC News split for examples/overfit.yaml: 80 training articles with 35%
of their labels flipped to another topic, and clean validation (200) and test (400) articles.

    python examples/noisy_bbc.py noisy-bbc          # writes noisy-bbc/{train,validation,test}.csv
"""

import csv
import random
import sys
from pathlib import Path

from tunescope.finetune.builtin import bbc_news

TRAIN, VALIDATION, TEST, NOISE = 80, 200, 400, 0.35

root = Path(sys.argv[1] if len(sys.argv) > 1 else "noisy-bbc")
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
ds = bbc_news()
names = ds.features["label"].names
rows = list(zip(ds["text"], ds["label"], strict=True))
rng = random.Random(seed)
rng.shuffle(rows)
train = rows[:TRAIN]
flip = set(rng.sample(range(TRAIN), round(NOISE * TRAIN)))
train = [
    (t, rng.choice([c for c in range(len(names)) if c != y]) if i in flip else y)
    for i, (t, y) in enumerate(train)
]
parts = {
    "train": train,
    "validation": rows[TRAIN : TRAIN + VALIDATION],
    "test": rows[TRAIN + VALIDATION : TRAIN + VALIDATION + TEST],
}
root.mkdir(parents=True, exist_ok=True)
for split, part in parts.items():
    with (root / f"{split}.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((t, names[y]) for t, y in part)
print(f"wrote {root}/train.csv ({len(flip)} of {TRAIN} labels flipped), validation.csv, test.csv")
