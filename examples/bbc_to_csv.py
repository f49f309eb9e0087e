"""Write the built-in BBC News set as a CSV with columns `body` and `topic` (for examples/csv.yaml).

    python examples/bbc_to_csv.py bbc.csv
"""

import csv
import sys

from tunescope.finetune.builtin import bbc_news

ds = bbc_news()
names = ds.features["label"].names
with open(sys.argv[1] if len(sys.argv) > 1 else "bbc.csv", "w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(["body", "topic"])
    writer.writerows((text, names[label]) for text, label in zip(ds["text"], ds["label"]))
