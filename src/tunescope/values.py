"""Turning what users log into numbers, without blocking the caller.

`Run.log` accepts Python numbers, numpy scalars and 0-dim (or one-element) torch tensors. A torch
tensor may live on a GPU, where `.item()` waits for every queued kernel; so the caller's thread
only detaches and clones it (asynchronous on CUDA) and the store's writer thread calls `.item()`.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .errors import TunescopeError

Scalar = float | int
# What travels through the log queue: a number, or a tensor the writer thread resolves.
Pending = Any


class MetricValueError(TunescopeError, TypeError):
    """A logged value that is not a real scalar."""


def _tensor_type() -> type | None:
    # Never import torch ourselves: a user who logs tensors has imported it already.
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def coerce(key: str, value: Any) -> Pending:
    """Check one logged value and return what the writer should store.

    Fast path (`float`/`int`) is handled by the caller; this is the slower, general path.
    Raises `MetricValueError` naming the key and the value's type.
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise MetricValueError(
                f"metric {key!r}: the integer {str(value)[:40]}… is too large for a float"
            ) from None
    tensor = _tensor_type()
    if tensor is not None and isinstance(value, tensor):
        t: Any = value
        if t.numel() != 1:
            raise MetricValueError(
                f"metric {key!r}: got a tensor of shape {tuple(t.shape)}; log a scalar "
                "(a 0-dim or one-element tensor), e.g. loss.detach() or tensor.mean()"
            )
        if t.is_complex():
            raise MetricValueError(f"metric {key!r}: complex tensors cannot be logged")
        # detach+clone so later in-place updates by the caller don't change what we store;
        # on CUDA both are queued kernels, so the caller never waits.
        return t.detach().clone()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.generic):
            if isinstance(value, numpy.bool_ | numpy.integer | numpy.floating):
                return float(value)
        elif isinstance(value, numpy.ndarray):
            if value.size == 1 and value.dtype.kind in "biuf":
                return float(value.reshape(()))
            raise MetricValueError(
                f"metric {key!r}: got a numpy array of shape {value.shape}; log a scalar"
            )
    raise MetricValueError(
        f"metric {key!r}: cannot log a value of type {type(value).__name__} ({value!r:.60}); "
        "log a number (int, float, numpy scalar or a one-element torch tensor)"
    )


def resolve(value: Pending) -> float:
    """Turn a queued value into a float (runs on the writer thread; may sync a GPU)."""
    if type(value) is float:
        return value
    try:
        return float(value.item())
    except AttributeError:
        return float(value)


def fmt(value: float) -> str:
    """Format a metric value for humans, keeping NaN and infinities visible."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"
