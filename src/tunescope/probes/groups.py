"""Layer groups: which part of the network a parameter belongs to, bottom to top.

Per-group metrics (`train/grad_norm/<group>`, `probe/param_drift/<group>`, ...) need one naming
scheme for every architecture. Groups, in forward order:

- `embeddings`: token/position embeddings (names with an `embed` part, GPT-2's `wte`/`wpe`);
- `layer_N`: transformer block N (a `layer.N.` / `layers.N.` / `h.N.` / `block(s).N.` part);
- `head`: everything after the blocks (pooler, final norm, classifier, LM head).

A model without numbered blocks (a plain `nn.Sequential`, a small CNN) is grouped by its
top-level modules, in registration order. `bottom` is the first group that is trained and
`top` the last: the pair the vanishing-gradient rule compares.

>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
>>> layer_groups(m.named_parameters()).names
('0', '2')
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The block-numbering conventions of BERT/RoBERTa (`layer.N`), Llama/Mistral (`layers.N`),
# GPT-2/Falcon (`h.N`), T5 (`block.N`) and friends.
LAYER_NAME = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
EMBEDDINGS, HEAD = "embeddings", "head"


def _kind(name: str) -> tuple[int, int, str] | None:
    """(rank, layer, group) of a parameter name: embeddings < layers < head; None: no scheme."""
    m = LAYER_NAME.search(name)
    if m is not None:
        n = int(m.group(1))
        return 1, n, f"layer_{n}"
    parts = name.split(".")
    if any("embed" in p or p in ("wte", "wpe") for p in parts[:-1]):
        return 0, 0, EMBEDDINGS
    return None


@dataclass(frozen=True)
class Groups:
    """Parameter names mapped to layer groups (`names` in bottom-to-top order)."""

    names: tuple[str, ...]
    of: dict[str, str]  # parameter name -> group name

    def index(self, param: str) -> int:
        """Position of a parameter's group in `names`."""
        return self.names.index(self.of[param])

    def subset(self, params: Iterable[str]) -> Groups:
        """The groups that hold at least one of `params`, in the same order."""
        keep = {self.of[p] for p in params}
        return Groups(tuple(g for g in self.names if g in keep), {p: self.of[p] for p in params})

    @property
    def bottom(self) -> str:
        """The lowest group."""
        return self.names[0]

    @property
    def top(self) -> str:
        """The highest group."""
        return self.names[-1]


def layer_groups(named: Iterable[tuple[str, Any]]) -> Groups:
    """Group `model.named_parameters()` into embeddings / layer_N / head (see module doc)."""
    names = [n for n, _ in named]
    kinds = {n: _kind(n) for n in names}
    if not any(k is not None and k[0] == 1 for k in kinds.values()):
        # No numbered blocks: the top-level modules are the layers.
        tops = list(dict.fromkeys(n.split(".")[0] for n in names))
        return Groups(tuple(tops), {n: n.split(".")[0] for n in names})
    ranked: dict[str, tuple[int, int]] = {}
    of: dict[str, str] = {}
    for n in names:
        rank, layer, group = kinds[n] or (2, 0, HEAD)
        of[n] = group
        ranked[group] = (rank, layer)
    order = sorted(ranked, key=lambda g: ranked[g])
    return Groups(tuple(order), of)
