"""Where checkpoints live and which ones are kept.

Layout of a run's output directory (default: the run's folder in the store + `/checkpoints`):

    trainer/checkpoint-<step>/   Trainer's full checkpoints (weights, optimizer, RNG) for --resume
    best/                        the best weights by train.best_metric (safetensors + config + tokenizer)
    last/                        the weights at the last step

`best/` and `last/` load with `from_pretrained` (or peft's `PeftModel.from_pretrained` for LoRA).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .config import ConfigError

TRAINER_DIR = "trainer"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Optimizer and scheduler state: the bulk of a checkpoint, needed only to resume from it.
OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt")
# Files of a Trainer checkpoint that only resuming needs.
RESUME_ONLY = (
    "optimizer.pt",
    "scheduler.pt",
    "trainer_state.json",
    "training_args.bin",
    "scaler.pt",
)


def check_output_dir(path: Path) -> None:
    """An output directory must be a directory (or not exist yet) and be creatable."""
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"train.output_dir {path} is a file; give a directory (it is created if missing)"
        )
    parent = next((p for p in [path, *path.parents] if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK):
        raise ConfigError(f"train.output_dir {path}: cannot write to {parent}")


def trainer_checkpoints(out_dir: Path) -> list[Path]:
    """Trainer checkpoints under `out_dir/trainer`, oldest step first."""
    root = out_dir / TRAINER_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(out_dir: Path) -> Path | None:
    """The checkpoint to resume from: the one with the highest step."""
    found = trainer_checkpoints(out_dir)
    return found[-1] if found else None


def export_weights(checkpoint: Path, target: Path) -> Path:
    """Expose a Trainer checkpoint's weights as a loadable model directory (hard links: no copy)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for item in checkpoint.iterdir():
        if (
            item.is_file()
            and item.name not in RESUME_ONLY
            and not item.name.startswith("rng_state")
        ):
            try:
                os.link(item, target / item.name)
            except OSError:  # another filesystem, or links not supported
                shutil.copy2(item, target / item.name)
    return target


def prune(out_dir: Path, last: Path | None, best: Path | None) -> None:
    """Keep what a later --resume needs: all of `last`, the weights of `best`; delete the rest.

    The best one's weights stay so that a resumed run still knows (and can load) its best
    model when the continuation does not beat it.
    """
    keep = {p.resolve() for p in (last, best) if p is not None}
    for path in trainer_checkpoints(out_dir):
        if path.resolve() not in keep:
            shutil.rmtree(path, ignore_errors=True)
        elif last is None or path.resolve() != last.resolve():
            for item in path.iterdir():
                if item.name in OPTIMIZER_FILES or item.name.startswith("rng_state"):
                    item.unlink()
