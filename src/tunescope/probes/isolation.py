"""`untouched(model)`: run a measurement so that training cannot tell it happened.

A probe that consumes one random number shifts the data order of every later epoch (the
sampler draws its seed from torch's global generator) and the dropout masks of every later
step; one that leaves a module in eval mode changes the loss. Inside this context the model is
in eval mode with gradients off, and on exit every random generator training uses (Python,
NumPy, torch CPU and each initialised CUDA device) and every module's train/eval flag are put
back exactly as they were. tests/probes/test_trainer.py checks bit-identical training losses
with and without probes through the real Trainer.

>>> import torch
>>> m = torch.nn.Dropout(0.5).train()
>>> before = torch.random.get_rng_state()
>>> with untouched(m):
...     _ = torch.rand(3)
>>> m.training, torch.equal(before, torch.random.get_rng_state())
(True, True)
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Run small or memory-bound CPU ops on one thread.

    For 256 x 256 matrices or a pass over the weights the thread pool's synchronisation costs
    more than it saves; on a busy machine it turns ~2 ms of CKA into ~200 ms, and 0.4 s of
    parameter drift into 2 s (measured, 2 shared cores). The thread count is restored, so
    training's own ops run exactly as before.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def untouched(model: torch.nn.Module | None = None) -> Iterator[None]:
    """Eval mode, no gradients, and every RNG and train/eval flag restored on exit."""
    rng = _rng_state()
    modes = [(m, m.training) for m in model.modules()] if model is not None else []
    try:
        if model is not None:
            model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        _set_rng_state(rng)
