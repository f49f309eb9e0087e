"""Linear CKA: the properties that make it a drift measure, and agreement with the reference code."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tunescope.probes.cka import Reference, linear_cka


def _kornblith(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """Kornblith et al.'s published CKA code (Gram centering / U-centering), in numpy."""

    def center(gram: np.ndarray) -> np.ndarray:
        gram = gram.copy()
        n = gram.shape[0]
        if debiased:
            np.fill_diagonal(gram, 0)
            means = np.sum(gram, 0) / (n - 2)
            means -= np.sum(means) / (2 * (n - 1))
            gram -= means[:, None]
            gram -= means[None, :]
            np.fill_diagonal(gram, 0)
        else:
            means = np.mean(gram, 0)
            means -= np.mean(means) / 2
            gram -= means[:, None]
            gram -= means[None, :]
        return gram

    gx, gy = center(x @ x.T), center(y @ y.T)
    return float(gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy)))


@pytest.fixture
def feats() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 24, generator=g, dtype=torch.float64)
    y = x @ torch.randn(24, 16, generator=g, dtype=torch.float64) + torch.randn(
        64, 16, generator=g, dtype=torch.float64
    )
    return x, y


@pytest.mark.parametrize("debiased", [True, False])
def test_identity_is_one(feats: tuple[torch.Tensor, torch.Tensor], debiased: bool) -> None:
    x, _ = feats
    assert float(linear_cka(x, x, debiased=debiased)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [True, False])
def test_invariant_to_rotation_scale_and_shift(
    feats: tuple[torch.Tensor, torch.Tensor], debiased: bool
) -> None:
    x, y = feats
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    base = float(linear_cka(x, y, debiased=debiased))
    assert float(linear_cka(x, y @ q, debiased=debiased)) == pytest.approx(base, abs=1e-10)
    assert float(linear_cka(7.5 * x, 0.01 * y, debiased=debiased)) == pytest.approx(base, abs=1e-10)
    assert float(linear_cka(x + 3.0, y - 1.0, debiased=debiased)) == pytest.approx(base, abs=1e-10)
    # ... but not to anisotropic scaling: CKA sees which directions carry the variance.
    stretch = torch.ones(16, dtype=torch.float64)
    stretch[0] = 50.0
    assert abs(float(linear_cka(x, y * stretch, debiased=debiased)) - base) > 1e-3


@pytest.mark.parametrize("debiased", [True, False])
def test_matches_reference_implementation(
    feats: tuple[torch.Tensor, torch.Tensor], debiased: bool
) -> None:
    x, y = feats
    want = _kornblith(x.numpy(), y.numpy(), debiased)
    assert float(linear_cka(x, y, debiased=debiased)) == pytest.approx(want, rel=1e-10)


def test_one_feature_is_squared_correlation() -> None:
    # Biased linear CKA of two 1-D features is their squared Pearson correlation.
    g = torch.Generator().manual_seed(1)
    a = torch.randn(50, 1, generator=g, dtype=torch.float64)
    b = 0.6 * a + torch.randn(50, 1, generator=g, dtype=torch.float64)
    r = float(torch.corrcoef(torch.cat([a, b], 1).T)[0, 1])
    assert float(linear_cka(a, b, debiased=False)) == pytest.approx(r**2, rel=1e-10)


def test_debiased_reads_zero_for_unrelated_features_at_probe_shape() -> None:
    # Why tunescope debiases: at the probe batch's shape (n=256, d=384) the classic estimator
    # reads ~0.6 for two independent representations; the debiased one reads ~0.
    g = torch.Generator().manual_seed(2)
    x, z = torch.randn(256, 384, generator=g), torch.randn(256, 384, generator=g)
    assert 0.5 < float(linear_cka(x, z, debiased=False)) < 0.7
    assert abs(float(linear_cka(x, z))) < 0.05


def test_reference_round_trip_and_errors(feats: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = feats
    ref = Reference(x)
    again = Reference.from_state_dict(ref.state_dict())
    assert float(again.similarity(y)) == float(ref.similarity(y))
    with pytest.raises(ValueError, match="same examples"):
        ref.similarity(y[:10])
    with pytest.raises(ValueError, match="2-D"):
        Reference(x[0])


def test_fast_at_probe_shape() -> None:
    # 256 texts x 384 features (MiniLM) is the default probe; the budget is 20 ms per layer.
    x, y = torch.randn(256, 384), torch.randn(256, 384)
    linear_cka(x, y)
    times = []
    for _ in range(9):
        start = time.perf_counter()
        linear_cka(x, y)
        times.append(time.perf_counter() - start)
    # The best of 9: what it costs when the (shared) CPU is not busy with something else;
    # bench/probes/overhead.py reports the median.
    assert min(times) < 0.020
