"""`Watcher`: learning rate, gradient norms, update/weight ratios, clipping and loss scale from a
torch optimizer.

Hooks on `optimizer.step()` measure every `every`-th step only: the values stay tensors (no GPU
sync here) and are handed to `Run` to be logged with the next `log()` call; the store's writer
thread turns them into numbers.

Staged on measured steps: `train/lr` (and `train/lr/group_<i>` per extra param group),
`train/grad_norm`, `train/update_ratio` (‖Δθ‖/‖θ‖), and with `groups=True` the same per layer
group (`train/grad_norm/<group>` with `bottom` and `top` always present,
`train/update_ratio/<group>`; groups as in `probes.groups`), `train/clip_fraction` (the share of
optimizer steps since the last measurement whose gradients were clipped) and, given a
`GradScaler`, `train/loss_scale`.

**Gradient norms are pre-clip and unscaled** (what the vanishing/exploding rules expect), even
though the optimizer hook runs after `clip_grad_norm_` and the scaler's `unscale_`: the
smallest trainable tensors ("sentinels", a few hundred numbers) are copied as their gradient
is accumulated, and the ratio of their norm at `step()` to that copy is the factor clipping and
unscaling applied to *every* gradient (both scale all gradients alike). Dividing it out gives
the pre-clip norms; it being below 1 (after the scaler's factor) means the step was clipped.
This costs a few tiny copies per step, instead of a second pass over all gradients. Under
DistributedDataParallel the reduced gradient differs from the local copy, so there the
sentinels are off: norms are post-clip and `train/clip_fraction` is not measured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .groups import layer_groups

if TYPE_CHECKING:
    from ..run import Run

SENTINELS = 4  # smallest trainable tensors watched for the clip/unscale factor
CLIP_TOLERANCE = 1e-4  # a factor below 1 - this is clipping (no clipping multiplies by 1.0)


def _stack(norms: Any) -> torch.Tensor:
    """Per-tensor norms into one vector (on the first one's device; a model may span several)."""
    device = norms[0].device
    return torch.stack([n.to(device) for n in norms]).float()


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Watcher:
    """Measures an optimizer's steps for a run; created by `Run.watch`.

    >>> watcher = Watcher(run, model, optimizer, every=10)   # doctest: +SKIP
    """

    def __init__(
        self,
        run: Run,
        model: torch.nn.Module,
        optimizer: Any,
        *,
        every: int = 10,
        update_ratio: bool = True,
        groups: bool = True,
        scaler: Any = None,
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
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.update_ratio = update_ratio
        self.scaler = scaler
        self.steps = 0
        self._before: list[torch.Tensor] | None = None
        self._handles = [
            optimizer.register_step_pre_hook(self._pre),
            optimizer.register_step_post_hook(self._post),
        ]
        self.group_names: tuple[str, ...] = ()
        self._group_of: torch.Tensor | None = None  # param index -> group index
        if groups and named:
            g = layer_groups(named)
            self.group_names = g.names
            self._group_of = torch.tensor([g.index(n) for n, _ in named])
        self._sentinels: list[torch.Tensor] = []
        self._copies: dict[int, torch.Tensor] = {}
        self._clipped: torch.Tensor | None = None  # steps clipped since the last measurement
        self._counted: torch.Tensor | None = None  # steps whose factor was measurable
        if groups and self.params and not _distributed():
            self._watch_sentinels()

    # -- the clip/unscale factor ------------------------------------------------------------------
    def _watch_sentinels(self) -> None:
        by_size = sorted(range(len(self.params)), key=lambda i: self.params[i].numel())
        for i in by_size[:SENTINELS]:
            p = self.params[i]
            self._sentinels.append(p)
            self._handles.append(p.register_post_accumulate_grad_hook(self._copy))

    def _copy(self, p: torch.Tensor) -> None:
        # Runs after each backward's accumulation: the last copy before step() is the full
        # (accumulated, pre-clip, still scaled) gradient.
        if p.grad is not None:
            self._copies[id(p)] = p.grad.detach().clone()

    def _factor(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(what clipping and unscaling multiplied the gradients by, whether it is known)."""
        pairs = [
            (p.grad.detach(), self._copies[id(p)])
            for p in self._sentinels
            if p.grad is not None and id(p) in self._copies
        ]
        self._copies.clear()
        if not pairs:
            return None
        now = torch.nn.utils.get_total_norm([a for a, _ in pairs])
        then = torch.nn.utils.get_total_norm([b for _, b in pairs])
        known = then > 0
        return torch.where(known, now / then.clamp_min(1e-30), torch.ones_like(now)), known

    def _scale(self) -> torch.Tensor | None:
        # GradScaler keeps its scale as a tensor in `_scale`; `get_scale()` would sync the GPU.
        scale = getattr(self.scaler, "_scale", None)
        enabled = getattr(self.scaler, "is_enabled", lambda: False)()
        return scale.detach().clone() if enabled and isinstance(scale, torch.Tensor) else None

    def _count_clip(
        self, factor: torch.Tensor, known: torch.Tensor, scale: torch.Tensor | None
    ) -> torch.Tensor:
        clip = factor * scale.to(factor.device) if scale is not None else factor
        hit = ((clip < 1 - CLIP_TOLERANCE) & known).float()
        self._clipped = hit if self._clipped is None else self._clipped + hit
        k = known.float()
        self._counted = k if self._counted is None else self._counted + k
        return clip

    # -- hooks -------------------------------------------------------------------------------
    def _due(self) -> bool:
        return self.steps % self.every == 0

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1
        measured = self._factor() if self._sentinels else None
        scale = self._scale()
        clip: torch.Tensor | None = None
        if measured is not None:
            clip = self._count_clip(*measured, scale)
        if not self._due():
            return
        with torch.no_grad():
            self._stage_grads(clip, scale)
            if self.update_ratio:
                self._before = [p.detach().clone() for p in self.params]

    def _stage_grads(self, clip: torch.Tensor | None, scale: torch.Tensor | None) -> None:
        index = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not index:
            return
        norms = _stack(torch._foreach_norm([self.params[i].grad for i in index]))  # type: ignore[misc]
        if clip is not None:
            norms = norms / clip.to(norms.device).clamp_min(1e-30)  # back to pre-clip
        self.run._stage("train/grad_norm", norms.pow(2).sum().sqrt())
        if self._group_of is not None:
            self._stage_groups("train/grad_norm", norms, index, bottom_top=True)
        if self._clipped is not None and self._counted is not None:
            self.run._stage("train/clip_fraction", self._clipped / self._counted.clamp_min(1))
            self._clipped = self._counted = None
        if scale is not None:
            self.run._stage("train/loss_scale", scale)

    def _group_sq(self, norms: torch.Tensor, index: list[int]) -> tuple[torch.Tensor, list[int]]:
        """Sum of squared norms per group, and the groups present."""
        assert self._group_of is not None
        of = self._group_of[index].to(norms.device)
        sums = torch.zeros(len(self.group_names), device=norms.device)
        sums.index_add_(0, of, norms.pow(2))
        return sums, sorted(set(self._group_of[index].tolist()))

    def _stage_groups(
        self, key: str, norms: torch.Tensor, index: list[int], *, bottom_top: bool = False
    ) -> None:
        sums, present = self._group_sq(norms, index)
        values = sums.sqrt()
        for g in present:
            self.run._stage(f"{key}/{self.group_names[g]}", values[g])
        if bottom_top and present:
            self.run._stage(f"{key}/bottom", values[present[0]])
            self.run._stage(f"{key}/top", values[present[-1]])

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
            now = [p.detach() for p in self.params]
            weight = _stack(torch._foreach_norm(before))
            # in place: the copy becomes the (negated) update, no second model-sized allocation
            torch._foreach_sub_(before, now)
            delta = _stack(torch._foreach_norm(before))
            num = delta.pow(2).sum().sqrt()
            den = weight.pow(2).sum().sqrt()
            self.run._stage("train/update_ratio", num / den.clamp_min(1e-12))
            if self._group_of is not None:
                index = list(range(len(self.params)))
                d_sq, present = self._group_sq(delta, index)
                w_sq, _ = self._group_sq(weight, index)
                ratio = d_sq.sqrt() / w_sq.sqrt().clamp_min(1e-12)
                for g in present:
                    self.run._stage(f"train/update_ratio/{self.group_names[g]}", ratio[g])

    def remove(self) -> None:
        """Stop measuring."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._before = None
        self._copies.clear()
