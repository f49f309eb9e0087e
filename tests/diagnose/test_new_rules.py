"""The rules added for runs the detectors were never tuned on (the diagnosis issue's fresh
families): each on a small curve of the shape it was made for, with its healthy look-alike."""

from __future__ import annotations

import math
import random

from tunescope.diagnose import Context, Kind, Severity
from tunescope.diagnose.engine import replay
from tunescope.io.csv import Row

LN10 = math.log(10)


def _kinds(rows: list[Row], ctx: Context | None = None) -> dict[Kind, Severity]:
    out: dict[Kind, Severity] = {}
    for f in replay(rows, ctx).findings:
        if not f.caused_by:
            out[f.kind] = max(out.get(f.kind, Severity.INFO), f.severity, key=lambda s: s.rank)
    return out


def _trainer_log(loss: float, acc: float, steps: int = 320, seed: int = 0) -> list[Row]:
    """HF Trainer's cadence: a train-loss mean every 10 steps, evaluation every 41 from step 0."""
    rng = random.Random(seed)
    rows = [Row(0, "eval/loss", LN10, None), Row(0, "eval/accuracy", 0.1, None)]
    for s in range(10, steps + 1, 10):
        rows.append(Row(s, "train/loss", loss * math.exp(rng.gauss(0, 0.03)), None))
        if s % 40 == 0:
            rows.append(Row(s + 1, "eval/loss", loss * 1.01, None))
            rows.append(Row(s + 1, "eval/accuracy", acc, None))
    return rows


def test_a_loss_above_chance_at_trainer_cadence_is_lr_too_high_without_context() -> None:
    kinds = _kinds(_trainer_log(2.58, 0.09))  # bare CSV: C comes from the step-0 evaluation
    assert kinds[Kind.LR_TOO_HIGH].rank >= Severity.WARNING.rank
    assert Kind.UNDERFITTING not in kinds


def test_a_loss_at_chance_is_not_above_chance() -> None:
    kinds = _kinds(_trainer_log(LN10 * 0.99, 0.1))
    assert Kind.LR_TOO_HIGH not in kinds


def _regression(falls: bool, seed: int = 0) -> list[Row]:
    """An MLP on standardised targets (variance 1): a noisy batch MSE (log sigma 0.3)."""
    rng = random.Random(seed)
    rows = []
    for s in range(300):
        level = (1.6 * math.exp(-s / 60) + 0.4) if falls else 0.98
        rows.append(Row(s, "train/loss", level * math.exp(rng.gauss(0, 0.3)), None))
        if s % 15 == 0:
            mse = level * 1.05
            rows.append(Row(s, "eval/loss", mse, None))
            rows.append(Row(s, "eval/r2", 1.0 - mse / 1.0, None))
    return rows


def test_regression_is_judged_against_the_target_variance_not_ln_c() -> None:
    stuck = replay(_regression(falls=False))
    kinds = {f.kind for f in stuck.findings if f.severity.rank >= Severity.WARNING.rank}
    assert Kind.UNDERFITTING in kinds and Kind.LR_TOO_HIGH not in kinds
    assert any("target variance" in n for n in stuck.source["notes"])
    healthy = replay(_regression(falls=True))
    serious = {f.kind for f in healthy.findings if f.severity.rank >= Severity.WARNING.rank}
    assert not serious & {Kind.UNDERFITTING, Kind.LR_TOO_HIGH, Kind.DIVERGENCE, Kind.LOSS_SPIKE}


def test_an_lm_whose_every_evaluation_is_worse_than_before_training_is_lr_too_high() -> None:
    rows = [Row(0, "eval/loss", 2.37, None), Row(0, "eval/perplexity", math.exp(2.37), None)]
    for s in range(10, 250, 10):
        rows.append(Row(s, "train/loss", 2.8 + 1.5 * math.exp(-s / 15), None))
        if s % 60 == 0:
            rows.append(Row(s, "eval/loss", 2.85 - s / 2000, None))
    kinds = _kinds(rows, Context(task="causal_lm", max_steps=240))
    assert Kind.LR_TOO_HIGH in kinds
    # a healthy fine-tune improves on its start and is left alone
    ok = [Row(0, "eval/loss", 2.37, None)]
    for s in range(10, 250, 10):
        ok.append(Row(s, "train/loss", 2.3 - s / 1000, None))
        if s % 60 == 0:
            ok.append(Row(s, "eval/loss", 2.36 - s / 2000, None))
    assert not _kinds(ok, Context(task="causal_lm", max_steps=240))


def test_huge_steps_that_kill_the_lower_layers_are_lr_too_high_not_underfitting() -> None:
    rng = random.Random(0)
    rows = []
    for s in range(250):
        rows.append(Row(s, "train/loss", LN10 * (1 + 0.003 * rng.gauss(0, 1)), None))
        rows.append(Row(s, "train/update_ratio", 0.06, None))
        rows.append(Row(s, "train/grad_norm/bottom", 0.3 if s < 5 else 1e-9, None))
        rows.append(Row(s, "train/grad_norm/top", 0.2, None))
        if s % 25 == 24:
            rows += [Row(s, "eval/loss", LN10, None), Row(s, "eval/accuracy", 0.11, None)]
    kinds = _kinds(rows, Context(num_classes=10, max_steps=250))
    assert Kind.LR_TOO_HIGH in kinds and Kind.UNDERFITTING not in kinds
    # a frozen body (no gradient at any time) with a big-stepping head stays underfitting
    frozen = [r for r in rows if r.metric != "train/grad_norm/bottom"]
    frozen += [Row(s, "train/grad_norm/bottom", 0.0, None) for s in range(250)]
    frozen.sort(key=lambda r: r.step)
    assert Kind.LR_TOO_HIGH not in _kinds(frozen, Context(num_classes=10, max_steps=250))


def test_a_pretrained_model_whose_lower_layers_die_at_once_is_lr_too_high() -> None:
    # MiniLM at a constant LR 3e-3: points 3-5 thrown up (their median reads as ln 7), then
    # chance, the lowest layer's gradient gone within 14 steps, calm updates (~1e-3)
    rng = random.Random(3)
    ln5 = math.log(5)
    rows = []
    for s in range(1, 151):
        jump = {3: 1.5, 4: 1.3, 5: 1.2}.get(s, 1.0)
        rows.append(Row(s, "train/loss", ln5 * jump * math.exp(rng.gauss(0, 0.03)), None))
        rows.append(Row(s, "train/grad_norm/bottom", 0.4 if s < 8 else 1e-11, None))
        rows.append(Row(s, "train/grad_norm/top", 0.5, None))
        if s % 15 == 0:
            rows += [Row(s, "eval/loss", ln5 * 1.002, None), Row(s, "eval/accuracy", 0.2, None)]
    report = replay(rows)  # no context: C = 5 from the first point, not 7 from the median
    roots = [f for f in report.findings if f.kind is Kind.LR_TOO_HIGH]
    assert roots and roots[0].severity is Severity.CRITICAL and roots[0].step <= 40
    assert any("inferred as 5" in n for n in report.source["notes"])
    vanishing = [f for f in report.findings if f.kind is Kind.VANISHING_GRADIENTS]
    assert vanishing and all(f.caused_by == roots[0].id for f in vanishing)
