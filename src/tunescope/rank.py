"""Which process of a distributed job this is. Only global rank 0 writes and decides."""

from __future__ import annotations

import os
import sys


def global_rank() -> int:
    """Global rank from an initialised `torch.distributed`, else $RANK, else 0."""
    torch = sys.modules.get("torch")
    if torch is not None:
        dist = getattr(torch, "distributed", None)
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    for var in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(var)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


def distributed() -> bool:
    """Whether `torch.distributed` is initialised with more than one process."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    dist = getattr(torch, "distributed", None)
    return bool(
        dist is not None
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )
