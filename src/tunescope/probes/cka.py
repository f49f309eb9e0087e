"""Linear CKA: how similar two sets of features of the same examples are (1 = same up to rotation
and scale, 0 = unrelated).

Centered kernel alignment (Kornblith et al. 2019) compares the n x n similarity structure of two
representations of the same n inputs, so it is invariant to orthogonal transforms and isotropic
scaling of either side: exactly what "the layer still encodes the same thing" needs, without
labels.

**Debiased by default.** The usual (biased) estimator is inflated when the feature width d is
not small next to n: for two *independent* random representations with n = 256 and d = 384 it
reads about 0.6, not 0 (see tests/probes/test_cka.py). The probe batch is exactly that shape,
so tunescope uses the unbiased HSIC estimator of Song et al. (2012), as Nguyen et al. (2021)
did for wide networks: independent features read ~0, identical ones 1, and the scale in
between means the same whatever n and d are. `debiased=False` gives the classic estimator
(for comparison with published numbers).

Cost on 256 x 384 features: two 256 x 256 Gram matrices and a few reductions, ~1-3 ms on a
laptop CPU (bench/probes/overhead.py measures it). The reference side is prepared once
(`Reference`), so each probe pays for the current side only.

>>> import torch
>>> x = torch.randn(64, 16, dtype=torch.float64)
>>> round(float(linear_cka(x, 3 * x)), 6)
1.0
"""

from __future__ import annotations

import torch

from .isolation import one_thread

# Gram matrices of wide features sum many products: float64 keeps the debiased terms (which
# subtract nearly equal numbers) exact enough for values near 1.
DTYPE = torch.float64


def _gram(x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "mps":  # no float64 there; these matrices are small
        x = x.cpu()
    x = x.to(DTYPE)
    x = x - x.mean(dim=0, keepdim=True)
    return x @ x.T


def _hsic_terms(k: torch.Tensor, debiased: bool) -> torch.Tensor:
    """Prepare a Gram matrix of centered features for `_hsic`.

    Biased: it is already the doubly-centered HKH. Debiased: the estimator needs it with a zero
    diagonal (the unbiased estimator does not depend on the centering; it only helps rounding).
    """
    return k.fill_diagonal_(0.0) if debiased else k


def _hsic(k: torch.Tensor, l: torch.Tensor, debiased: bool) -> torch.Tensor:  # noqa: E741
    """HSIC of two prepared Gram matrices (any constant factor cancels in CKA)."""
    if not debiased:
        return (k * l).sum()
    n = k.shape[0]
    ones_k, ones_l = k.sum(dim=0), l.sum(dim=0)
    # Song et al. (2012), eq. 5, with the 1/(n(n-3)) factor dropped (it cancels).
    return (
        (k * l).sum()
        + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (ones_k @ ones_l)
    )


def _check(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    if x.dim() != 2:
        raise ValueError(
            f"CKA needs a 2-D (examples x features) matrix; got shape {tuple(x.shape)}"
        )
    if y is not None and y.shape[0] != x.shape[0]:
        raise ValueError(
            f"CKA compares features of the same examples; got {x.shape[0]} and {y.shape[0]} rows"
        )


def linear_cka(x: torch.Tensor, y: torch.Tensor, *, debiased: bool = True) -> torch.Tensor:
    """Linear CKA between features `x` (n x d1) and `y` (n x d2) of the same n examples.

    Returns a 0-d float64 tensor on the inputs' device (no host sync). The debiased estimator
    needs n >= 4; it can dip slightly below 0 for unrelated features.

    >>> import torch
    >>> q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    >>> x = torch.randn(32, 8, dtype=torch.float64)
    >>> round(float(linear_cka(x, x @ q)), 6)
    1.0
    """
    return Reference(x, debiased=debiased).similarity(y)


class Reference:
    """Linear CKA against fixed reference features, prepared once.

    >>> import torch
    >>> x = torch.randn(32, 8, dtype=torch.float64)
    >>> ref = Reference(x)
    >>> round(float(ref.similarity(2 * x)), 6)
    1.0
    """

    def __init__(self, features: torch.Tensor, *, debiased: bool = True) -> None:
        _check(features)
        if debiased and features.shape[0] < 4:
            raise ValueError("debiased CKA needs at least 4 examples")
        self.debiased = debiased
        with one_thread(features.device):
            self.k = _hsic_terms(_gram(features), debiased)
            self.self_hsic = _hsic(self.k, self.k, debiased)

    def similarity(self, features: torch.Tensor) -> torch.Tensor:
        """CKA between the reference features and `features` (same examples, same order)."""
        _check(features)
        if features.shape[0] != self.k.shape[0]:
            raise ValueError(
                f"CKA compares features of the same examples; the reference has "
                f"{self.k.shape[0]} rows, got {features.shape[0]}"
            )
        with one_thread(features.device):
            l = _hsic_terms(_gram(features), self.debiased)  # noqa: E741
            k = self.k.to(l.device)
            denom = torch.sqrt(self.self_hsic.to(l.device) * _hsic(l, l, self.debiased))
            # A constant representation shares nothing with anything: 0, not 0/0.
            cka = _hsic(k, l, self.debiased) / denom.clamp_min(1e-300)
            return torch.where(denom > 0, cka, torch.zeros_like(cka))

    def state_dict(self) -> dict[str, torch.Tensor | bool]:
        """The prepared reference (its Gram matrix), for checkpoints."""
        return {"k": self.k, "self_hsic": self.self_hsic, "debiased": self.debiased}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor | bool]) -> Reference:
        """Rebuild a reference saved with `state_dict()`."""
        ref = cls.__new__(cls)
        ref.debiased = bool(state["debiased"])
        k, s = state["k"], state["self_hsic"]
        assert isinstance(k, torch.Tensor) and isinstance(s, torch.Tensor)
        ref.k, ref.self_hsic = k, s
        return ref
