"""Snapshots: the training state a rollback returns to — weights, optimizer, scheduler, RNG.

Only what training changes is kept: the trainable parameters and the buffers (frozen weights
never change, so a LoRA snapshot is a few megabytes), the optimizer's and the scheduler's state,
and the random number generators (python `random`, numpy, torch CPU and CUDA), so that training
resumed from a snapshot is bit-for-bit the training that left it. A snapshot no larger than
`memory_limit` bytes stays in memory; a larger one is written to `directory` (the run's folder).
The last `keep` snapshots are kept, plus the first one, so a problem found late can still go
back to the start.

>>> snaps = Snapshots(keep=3)                                          # doctest: +SKIP
>>> snaps.take(100, model, optimizer, scheduler)                       # doctest: +SKIP
>>> snaps.restore(snaps.before(130), model, optimizer, scheduler)      # doctest: +SKIP
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DEFAULT_MEMORY_LIMIT


@dataclass(frozen=True)
class SnapshotInfo:
    """Where a snapshot is and what it holds (the state itself is loaded on demand)."""

    step: int
    nbytes: int
    lr_scale: float  # the LR scale baked into the optimizer/scheduler state when it was taken
    path: Path | None = None  # None: held in memory

    @property
    def where(self) -> str:
        """`memory` or the file's path."""
        return "memory" if self.path is None else str(self.path)


# -- capturing and restoring one state -----------------------------------------------------------


def inner_optimizer(optimizer: Any) -> Any:
    """The torch optimizer behind a wrapper (accelerate's `AcceleratedOptimizer`)."""
    return getattr(optimizer, "optimizer", optimizer)


def inner_scheduler(scheduler: Any) -> Any:
    """The torch scheduler behind a wrapper (accelerate's `AcceleratedScheduler`)."""
    return getattr(scheduler, "scheduler", scheduler)


def model_state(model: torch.nn.Module, *, trainable_only: bool = True) -> dict[str, torch.Tensor]:
    """A copy of the parameters that train (all, with `trainable_only=False`) and the buffers."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad or not trainable_only:
                out[name] = p.detach().clone()
        for name, b in model.named_buffers():
            out[name] = b.detach().clone()
    return out


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model's own tensors, in place (optimizers keep their references)."""
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    missing = [name for name in state if name not in tensors]
    if missing:
        raise KeyError(
            f"snapshot holds tensors the model does not have: {missing[:5]}; restore a snapshot "
            "into the model it was taken from"
        )
    with torch.no_grad():
        for name, value in state.items():
            tensors[name].copy_(value)


def rng_state() -> dict[str, Any]:
    """The state of every random number generator training may draw from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def clone(obj: Any) -> Any:
    """A deep copy in which tensors are cloned (optimizer/scheduler state dicts alias live data)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clone(v) for v in obj)
    return copy.deepcopy(obj)


def tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from tensors(v)


def nbytes(obj: Any) -> int:
    """Bytes held by the tensors inside `obj`."""
    return sum(t.numel() * t.element_size() for t in tensors(obj))


def finite(state: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point tensor in a model state is free of NaN and infinity."""
    return all(bool(torch.isfinite(t).all()) for t in state.values() if torch.is_floating_point(t))


def capture(
    model: torch.nn.Module, optimizer: Any, scheduler: Any = None, **extra: Any
) -> dict[str, Any]:
    """The whole training state, copied (later training does not change it)."""
    sched = inner_scheduler(scheduler) if scheduler is not None else None
    return {
        "model": model_state(model),
        "optimizer": clone(inner_optimizer(optimizer).state_dict()),
        "scheduler": clone(sched.state_dict()) if sched is not None else None,
        "rng": rng_state(),
        **extra,
    }


def restore(state: dict[str, Any], model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
    """Put a captured state back: weights in place, optimizer, scheduler and RNG."""
    load_model_state(model, state["model"])
    # load_state_dict aliases what it is given: hand over copies, so the snapshot stays intact.
    inner_optimizer(optimizer).load_state_dict(clone(state["optimizer"]))
    if scheduler is not None and state.get("scheduler") is not None:
        inner_scheduler(scheduler).load_state_dict(clone(state["scheduler"]))
    set_rng_state(state["rng"])


# -- the snapshots of a run ----------------------------------------------------------------------


class Snapshots:
    """The snapshots of one run, newest last (see the module docstring).

    `directory` is where large snapshots go (None: all stay in memory).
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        keep: int = 3,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1 snapshot, got {keep}")
        self.directory = Path(directory) if directory is not None else None
        self.keep = keep
        self.memory_limit = memory_limit
        self._infos: list[SnapshotInfo] = []
        self._memory: dict[int, dict[str, Any]] = {}  # step -> state, for in-memory snapshots
        self.skipped: list[int] = []  # steps whose weights were not finite (not kept)

    # -- taking -----------------------------------------------------------------------------------
    def take(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: Any,
        scheduler: Any = None,
        *,
        lr_scale: float = 1.0,
    ) -> SnapshotInfo | None:
        """Snapshot the training state after `step`; None when the weights are not finite
        (a state worth returning to is a healthy one)."""
        state = capture(model, optimizer, scheduler, step=step, lr_scale=lr_scale)
        if not finite(state["model"]):
            self.skipped.append(step)
            return None
        self.discard_after(step - 1)  # a snapshot at the same step replaces the old one
        size = nbytes(state)
        info = SnapshotInfo(step, size, lr_scale)
        if self.directory is not None and size > self.memory_limit:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"snapshot-{step}.pt"
            torch.save(state, path)
            info = replace(info, path=path)
        else:
            self._memory[step] = state
        self._infos.append(info)
        self._prune()
        return info

    def _prune(self) -> None:
        # Keep the first snapshot and the last `keep` ones.
        while len(self._infos) > self.keep + 1:
            self._drop(self._infos.pop(1))

    def _drop(self, info: SnapshotInfo) -> None:
        self._memory.pop(info.step, None)
        if info.path is not None:
            info.path.unlink(missing_ok=True)

    # -- choosing and restoring -----------------------------------------------------------------
    @property
    def infos(self) -> list[SnapshotInfo]:
        """The snapshots held, oldest first."""
        return list(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def before(self, step: int) -> SnapshotInfo | None:
        """The last snapshot taken before `step` (the last good state before a problem there)."""
        found = [i for i in self._infos if i.step < step]
        return found[-1] if found else None

    def at(self, step: int) -> SnapshotInfo | None:
        """The snapshot taken at exactly `step`, if held."""
        return next((i for i in self._infos if i.step == step), None)

    def load(self, info: SnapshotInfo) -> dict[str, Any]:
        """The captured state of a snapshot (read from disk when it lives there)."""
        if info.path is None:
            return self._memory[info.step]
        state: dict[str, Any] = torch.load(info.path, map_location="cpu", weights_only=False)
        return state

    def restore(
        self, info: SnapshotInfo, model: torch.nn.Module, optimizer: Any, scheduler: Any = None
    ) -> None:
        """Put the snapshot's state back, and forget snapshots after it (an abandoned future)."""
        restore(self.load(info), model, optimizer, scheduler)
        self.discard_after(info.step)

    def discard_after(self, step: int) -> None:
        """Drop snapshots taken after `step`."""
        for info in [i for i in self._infos if i.step > step]:
            self._infos.remove(info)
            self._drop(info)

    def clear(self) -> None:
        """Drop every snapshot (files included)."""
        self.discard_after(-1)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Settings, the index, and the in-memory snapshots (for `torch.save`)."""
        return {
            "keep": self.keep,
            "memory_limit": self.memory_limit,
            "directory": str(self.directory) if self.directory is not None else None,
            "snapshots": [
                {
                    "step": i.step,
                    "nbytes": i.nbytes,
                    "lr_scale": i.lr_scale,
                    "path": str(i.path) if i.path is not None else None,
                    "state": self._memory.get(i.step),
                }
                for i in self._infos
            ],
            "skipped": list(self.skipped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()` (files of on-disk snapshots must still exist)."""
        self.keep = int(state["keep"])
        self.memory_limit = int(state["memory_limit"])
        self.directory = Path(state["directory"]) if state["directory"] else None
        self._infos, self._memory = [], {}
        for s in state["snapshots"]:
            path = Path(s["path"]) if s["path"] else None
            if path is not None and not path.exists():
                raise FileNotFoundError(f"snapshot file {path} is gone; it cannot be restored")
            self._infos.append(SnapshotInfo(int(s["step"]), int(s["nbytes"]), s["lr_scale"], path))
            if path is None:
                self._memory[int(s["step"])] = s["state"]
        self.skipped = list(state.get("skipped", []))
