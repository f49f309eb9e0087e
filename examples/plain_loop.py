"""A plain PyTorch fine-tuning loop (MiniLM on BBC News) that tunescope watches and rescues.

The loop is the usual one; the lines marked `# tunescope` are all it takes. With a learning
rate far too high (the default here, 3e-3) the model collapses to chance within a few dozen
steps; in mode `act` tunescope rolls back to a state from before the collapse and cuts the
learning rate, and a run that overfits is stopped with its best weights restored.

    python examples/plain_loop.py                      # act: watch it rescue the run
    python examples/plain_loop.py --mode observe       # the same run, diagnosed only
    python examples/plain_loop.py --lr 1e-4            # a healthy run: nothing to do
    tunescope ui                                       # then look at it (rollbacks included)

About 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import tunescope
from tunescope.finetune.builtin import bbc_news, model_dir

ap = argparse.ArgumentParser()
ap.add_argument("--lr", type=float, default=3e-3)
ap.add_argument("--mode", default="act", choices=["observe", "advise", "act"])
ap.add_argument("--train", type=int, default=1200, help="training articles")
ap.add_argument("--epochs", type=int, default=1)
args = ap.parse_args()

torch.manual_seed(0)
source = str(model_dir("builtin:minilm"))
tokenizer = AutoTokenizer.from_pretrained(source)
data = bbc_news().shuffle(seed=0)
names = data.features["label"].names


def loader(rows: object, shuffle: bool) -> DataLoader:  # type: ignore[type-arg]
    def collate(batch: list[dict]) -> dict:  # type: ignore[type-arg]
        enc = tokenizer(
            [b["text"] for b in batch],
            truncation=True,
            max_length=64,
            padding=True,
            return_tensors="pt",
        )
        return {**enc, "labels": torch.tensor([b["label"] for b in batch])}

    return DataLoader(rows, batch_size=16, shuffle=shuffle, collate_fn=collate)  # type: ignore[arg-type]


train_dataloader = loader(data.select(range(args.train)), shuffle=True)
val_dataloader = loader(data.select(range(args.train, args.train + 200)), shuffle=False)
test_dataloader = loader(data.select(range(args.train + 200, args.train + 600)), shuffle=False)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataloader: DataLoader) -> dict[str, float]:  # type: ignore[type-arg]
    model.eval()
    loss, correct, n = 0.0, 0, 0
    for batch in dataloader:
        out = model(**batch)
        loss += float(out.loss) * len(batch["labels"])
        correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
        n += len(batch["labels"])
    model.train()
    return {"loss": loss / n, "accuracy": correct / n}


model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(names))
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
num_epochs, steps = args.epochs, args.epochs * len(train_dataloader)
# Warmup then linear decay, as transformers' default schedule.
scheduler = torch.optim.lr_scheduler.LambdaLR(
    optimizer, lambda s: min((s + 1) / (0.1 * steps), max(0.0, (steps - s) / (0.9 * steps)))
)
loss_fn = torch.nn.CrossEntropyLoss()

config = {"lr": args.lr, "num_labels": len(names), "max_steps": steps}
run = tunescope.init("plain-loop", config=config, mode=args.mode)  # tunescope
guard = tunescope.Guard(run, model, optimizer, scheduler, best_metric="eval/accuracy")  # tunescope

for _epoch in range(num_epochs):
    for i, batch in enumerate(train_dataloader):
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
        loss = loss_fn(outputs.logits, batch["labels"])
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if guard.step({"train/loss": loss}):  # tunescope: log, snapshot, act
            break
        if (i + 1) % 15 == 0:
            evals = evaluate(model, val_dataloader)
            print(f"step {guard.global_step}: {evals}")
            if guard.log({f"eval/{k}": v for k, v in evals.items()}):  # tunescope
                break
    if guard.should_stop:
        break

test = evaluate(model, test_dataloader)
run.log({f"test/{k}": v for k, v in test.items()}, step=guard.global_step)
print(f"test accuracy {test['accuracy']:.4f} after {guard.global_step} steps")
guard.finish()
run.finish()
