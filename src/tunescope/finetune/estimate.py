"""How long an epoch takes and how much memory training needs, measured on this machine.

`measure` runs a few real forward/backward/AdamW steps on real training batches and reports the
median step time and the peak memory. `tunescope check` turns that into time per epoch. The
steps update the prepared model's weights: measure on a `prepare()` you will not train.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from .recipe import Prepared, device_precision


@dataclass
class Estimate:
    """Measured cost of training on this machine."""

    device: str
    step_seconds: float  # one optimizer step (all accumulation micro-batches)
    eval_seconds: float  # one pass over the validation split (0 without one)
    epoch_seconds: float
    peak_bytes: int  # peak memory of the process (CPU) or allocated on the GPU
    weights_bytes: int
    grads_bytes: int
    optimizer_bytes: int


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def _batch(p: Prepared, rows: int, split: Any) -> dict[str, torch.Tensor]:
    from transformers import DataCollatorWithPadding, default_data_collator

    take = split.select(range(min(rows, len(split))))
    features = [take[i] for i in range(len(take))]
    if p.config.model.task == "causal-lm":
        return default_data_collator(features)
    return DataCollatorWithPadding(p.tokenizer)(features)


def measure(p: Prepared, steps: int = 3) -> Estimate:
    """Time `steps` training steps (after one warm-up) and an evaluation batch."""
    flags = device_precision(p.config.train.precision)
    device = torch.device("cpu" if flags["use_cpu"] else "cuda")
    dtype = torch.bfloat16 if flags["bf16"] else torch.float16 if flags["fp16"] else None
    model = p.model.to(device).train()
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=p.config.train.learning_rate)
    t = p.config.train
    batch = {
        k: v.to(device)
        for k, v in _batch(p, t.batch_size, p.splits.train.shuffle(seed=t.seed)).items()
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        start = time.perf_counter()
        for _ in range(t.gradient_accumulation_steps):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(**batch).loss
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step()  # warm-up: allocator, kernels, optimizer state
    step_seconds = statistics.median(step() for _ in range(steps))
    eval_seconds = _eval_seconds(p, model, device, dtype)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss()
    total = sum(q.numel() * q.element_size() for q in model.parameters())
    grads = sum(q.numel() * q.element_size() for q in trainable)
    return Estimate(
        device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        step_seconds=step_seconds,
        eval_seconds=eval_seconds,
        epoch_seconds=step_seconds * p.steps_per_epoch,
        peak_bytes=peak,
        weights_bytes=total,
        grads_bytes=grads,
        optimizer_bytes=2 * grads,  # AdamW keeps two moments per trainable weight
    )


def _eval_seconds(p: Prepared, model: torch.nn.Module, device: torch.device, dtype: Any) -> float:
    split = p.splits.validation
    if split is None:
        return 0.0
    size = p.config.train.eval_batch_size or 2 * p.config.train.batch_size
    batch = {k: v.to(device) for k, v in _batch(p, size, split).items()}
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        start = time.perf_counter()
        model(**batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_batch = time.perf_counter() - start
    return per_batch * -(-len(split) // size)
