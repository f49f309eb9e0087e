"""`Watcher`: learning rate, gradient norm and update/weight ratio from a torch optimizer.

Hooks on `optimizer.step()` measure every `every`-th step only: the values stay tensors (no GPU
sync here) and are handed to `Run` to be logged with the next `log()` call; the store's writer
thread turns them into numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..run import Run


class Watcher:
    """Measures an optimizer's steps for a run; created by `Run.watch`."""

    def __init__(
        self,
        run: Run,
        model: torch.nn.Module,
        optimizer: Any,
        *,
        every: int = 10,
        update_ratio: bool = True,
    ) -> None:
        if optimizer is None or not hasattr(optimizer, "register_step_pre_hook"):
            raise TypeError(
                "run.watch(model, optimizer) needs the torch optimizer that trains the model "
                f"(got {type(optimizer).__name__})"
            )
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.run = run
        self.every = every
        self.optimizer = optimizer
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.update_ratio = update_ratio
        self.steps = 0
        self._before: list[torch.Tensor] | None = None
        self._handles = [
            optimizer.register_step_pre_hook(self._pre),
            optimizer.register_step_post_hook(self._post),
        ]

    def _due(self) -> bool:
        return self.steps % self.every == 0

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1
        if not self._due():
            return
        with torch.no_grad():
            grads = [p.grad for p in self.params if p.grad is not None]
            if grads:
                self.run._stage("train/grad_norm", torch.nn.utils.get_total_norm(grads))
            if self.update_ratio:
                self._before = [p.detach().clone() for p in self.params]

    def _post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._due():
            return
        groups = optimizer.param_groups
        for i, group in enumerate(groups):
            key = "train/lr" if i == 0 else f"train/lr/group_{i}"
            lr = group["lr"]
            self.run._stage(key, lr.detach().clone() if isinstance(lr, torch.Tensor) else float(lr))
        before, self._before = self._before, None
        if before is None:
            return
        with torch.no_grad():
            delta = torch._foreach_sub([p.detach() for p in self.params], before)
            num = torch.nn.utils.get_total_norm(delta)
            den = torch.nn.utils.get_total_norm(before)
            self.run._stage("train/update_ratio", num / den.clamp_min(1e-12))

    def remove(self) -> None:
        """Stop measuring."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._before = None
