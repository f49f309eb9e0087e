"""Property-based tests: the replay engine never crashes and always returns well-formed findings.

Whatever numbers a user's log holds — ±1e308, subnormals, NaN, ±inf, negatives, constants, one
point, unsorted / duplicated / negative steps, metrics under any alias — `replay` returns a
`Report` whose findings are well formed (a known kind and severity, a message, JSON-safe).
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunescope.diagnose import Context, Finding, Kind, Severity
from tunescope.diagnose.engine import replay
from tunescope.io.csv import Row

# Aliases users' logs carry (HF Trainer, Lightning, TensorBoard) beside the canonical names.
METRICS = [
    "train/loss",
    "train/grad_norm",
    "train/lr",
    "train/update_ratio",
    "train/epoch",
    "train/grad_norm/bottom",
    "train/grad_norm/top",
    "eval/loss",
    "eval/accuracy",
    "eval/f1",
    "eval/perplexity",
    "retain/accuracy",
    "retain/loss",
    "probe/cka",
    "loss",
    "eval_loss",
    "val_loss",
    "learning_rate",
]

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, -5e-324, 0.0, -0.0, 1e-320, 2e-318, 709.8, 1e5]),
)
steps = st.integers(min_value=-(2**40), max_value=2**40)
rows = st.lists(
    st.builds(Row, steps, st.sampled_from(METRICS), values, st.none()), min_size=0, max_size=80
)
contexts = st.builds(
    Context,
    num_classes=st.one_of(st.none(), st.integers(2, 1000)),
    max_steps=st.one_of(st.none(), st.integers(1, 10**6)),
    task=st.sampled_from([None, "classification", "causal_lm", "regression"]),
)


def _well_formed(f: Finding) -> None:
    assert isinstance(f.kind, Kind)
    assert isinstance(f.severity, Severity)
    assert isinstance(f.message, str) and f.message
    assert f.last_step >= f.step
    json.dumps(f.to_json(), allow_nan=False)  # strict JSON: what `diagnose --json` prints


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, contexts)
def test_replay_never_crashes_on_arbitrary_rows(history: list[Row], ctx: Context) -> None:
    report = replay(history, ctx)
    for f in report.findings:
        _well_formed(f)
    json.dumps(report.to_json(), allow_nan=False)


def _curve(first: float, n: int, shape: str) -> list[Row]:
    out = []
    for i in range(n):
        if shape == "constant":
            x = first
        elif shape == "falling":
            x = first - abs(first) * i / max(n, 1) if first != 0 else -i
        else:
            x = first * (1 + i)
        out.append(Row(i, "train/loss", x, None))
        if i % 10 == 9:
            out.append(Row(i, "eval/loss", x * 1.1, None))
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([1e308, -1e308, 5e-324, 1e-320, 800.0, 1e4]),
    ),
    st.integers(1, 400),
    st.sampled_from(["constant", "falling", "growing"]),
    contexts,
)
def test_replay_never_crashes_on_long_extreme_curves(
    first: float, n: int, shape: str, ctx: Context
) -> None:
    report = replay(_curve(first, n, shape), ctx)
    for f in report.findings:
        _well_formed(f)


def test_replay_of_a_million_points_is_fine() -> None:
    history = [Row(i, "train/loss", 2.0 / (1 + i * 1e-4), None) for i in range(1_000_000)]
    report = replay(history)
    assert all(f.kind is not Kind.DIVERGENCE for f in report.findings)


def test_first_loss_too_large_for_exp_is_not_a_crash() -> None:
    # `math.exp(initial_loss)` overflowed in the chance-level inference (a raw traceback).
    history = [Row(i, "train/loss", 1000.0 - i, None) for i in range(200)]
    report = replay(history)
    assert report.source["points"] == 200
    assert math.isfinite(report.source["last_step"])
