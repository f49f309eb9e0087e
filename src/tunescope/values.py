"""Turning what users log into numbers, without blocking the caller.

`Run.log` accepts Python numbers, numpy scalars and 0-dim (or one-element) torch tensors. A torch
tensor may live on a GPU, where `.item()` waits for every queued kernel; so the caller's thread
only detaches and clones it (asynchronous on CUDA) and the store's writer thread calls `.item()`.
A CPU tensor is read at once: that costs no wait, and leaves the writer nothing to fail on.

Everything SQLite cannot store is refused here, on the caller's side, with an error naming the
key or parameter: steps outside int64, wall times that are not finite numbers, text that is not
UTF-8 (lone surrogates), tensors without data (meta). `check_step`, `check_wall_time` and
`check_text` are public so that importers validate a whole file before they create a run.
"""

from __future__ import annotations

import math
import sys
from numbers import Integral, Real
from typing import Any

from .errors import TunescopeError

Scalar = float | int
# Steps are stored as SQLite INTEGER / int64: the largest step a run can hold.
MAX_STEP = 2**63 - 1
# What travels through the log queue: a number, or a tensor the writer thread resolves.
Pending = Any


class MetricValueError(TunescopeError, TypeError):
    """A logged value that is not a real scalar."""


class StepError(TunescopeError, ValueError, TypeError):
    """A step that is not an integer from 0 to `MAX_STEP`.

    Both a ValueError (out of range) and a TypeError (not an integer), as callers caught either.
    """


class WallTimeError(TunescopeError, ValueError, TypeError):
    """A `wall_time` that is not a finite number of Unix seconds."""


class TextError(TunescopeError, ValueError):
    """A name or message that cannot be stored as UTF-8 text (e.g. a lone surrogate)."""


def check_step(step: object, what: str = "step") -> int:
    """Return `step` as an int from 0 to `MAX_STEP` (int64, what the store holds), else raise
    `StepError` naming `what`. Integral floats (`3.0`) and numpy integers are accepted.

    >>> check_step(3.0), check_step(2**63 - 1)
    (3, 9223372036854775807)
    """
    value: int
    if type(step) is int:
        value = step
    elif isinstance(step, bool):
        raise StepError(f"{what} must be a non-negative integer; got bool {step!r}")
    elif isinstance(step, float):
        if not (math.isfinite(step) and step.is_integer()):
            raise StepError(f"{what} must be a non-negative integer; got float {step!r}")
        value = int(step)
    elif isinstance(step, Integral):  # numpy integers; not tensors (reading one may sync a GPU)
        value = int(step)
    else:
        raise StepError(
            f"{what} must be a non-negative integer; got {type(step).__name__} {step!r:.60}"
        )
    if not 0 <= value <= MAX_STEP:
        raise StepError(
            f"{what} must be an integer from 0 to 2**63 - 1 (what the store holds); got {step!r}"
            if value >= 0
            else f"{what} must be a non-negative integer; got {step!r}"
        )
    return value


def check_wall_time(wall_time: object, what: str = "wall_time") -> float:
    """Return `wall_time` (Unix seconds) as a finite float, else raise `WallTimeError`.

    >>> check_wall_time(1.7e9)
    1700000000.0
    """
    if isinstance(wall_time, bool | str | bytes) or not isinstance(wall_time, Real):
        raise WallTimeError(
            f"{what} must be a number of Unix seconds (e.g. time.time()) or None for now; "
            f"got {type(wall_time).__name__} {wall_time!r:.60}"
        )
    try:
        value = float(wall_time)
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    if not math.isfinite(value):
        raise WallTimeError(
            f"{what} must be a finite number of Unix seconds (e.g. time.time()) or None for "
            f"now; got {wall_time!r:.60}"
        )
    return value


def check_text(what: str, value: object) -> str:
    """Return `value` if it is a str the store can hold (UTF-8 encodable), else raise.

    `what` names the parameter in the error, e.g. "run name".

    >>> check_text("name", "lr-3e-5")
    'lr-3e-5'
    """
    if not isinstance(value, str):
        raise TextError(f"{what} must be a string; got {type(value).__name__} {value!r:.60}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextError(
            f"{what} {value!r:.80} cannot be stored: it is not valid UTF-8 ({exc.reason} at "
            f"position {exc.start}; a lone surrogate usually comes from decoding bytes with "
            "errors='surrogateescape'). Remove or replace that character."
        ) from None
    return value


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
        if t.is_meta:
            raise MetricValueError(
                f"metric {key!r}: got a meta tensor, which has a shape but no data; log a "
                "tensor on a real device (cpu, cuda, ...)"
            )
        if t.device.type == "cpu":
            # Reading a CPU tensor waits for nothing, and a tensor the writer cannot read (a
            # sparse or subclassed one) fails here, naming its key, not on the writer thread.
            try:
                return float(t.item())
            except Exception as exc:
                raise MetricValueError(
                    f"metric {key!r}: cannot read this {type(t).__name__} as a number ({exc})"
                ) from None
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


def jsonable(obj: Any) -> Any:
    """Replace non-finite floats by "nan"/"inf"/"-inf" so strict JSON can carry them."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj
