"""From a `tunescope train` config to `Probes`: retain sets read like training data, the probe batch.

Retain sets go through the pipeline's own data loading (`finetune.data`: the same file
formats, column checks and error messages as training data). The probe batch is drawn once,
with its own seeded generator (never the global one), from the tokenized training split and
the retain sets' scored rows: half from the retain sets when there are any.

>>> probes = build(cfg, prepared)          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..finetune import data
from ..finetune.config import ConfigError, DataConfig
from .config import RetainConfig
from .manager import Probes, Settings
from .representations import ProbeBatch
from .retain import CAUSAL_LM_METRICS, CLASSIFICATION_METRICS, Evaluator, RetainSet

if TYPE_CHECKING:
    from ..finetune.config import Config
    from ..finetune.recipe import Prepared

# Probes when monitor.probes.every is null (plus the baseline). One probe is a forward pass over
# the probe batch, ~1.2 demo training steps on a CPU: two keep the demo's overhead under 3%.
PROBES_PER_RUN = 2


def probe_every(cfg: Config, max_steps: int) -> int:
    """Steps between probes: `monitor.probes.every`, else `PROBES_PER_RUN` per run."""
    every = cfg.monitor.probes.every
    return every if every is not None else max(1, math.ceil(max_steps / PROBES_PER_RUN))


def _rows(ds: Any) -> list[dict[str, Any]]:
    return ds.to_list() if ds is not None else []


def retain_set(
    rc: RetainConfig, cfg: Config, tokenizer: Any, model_classes: list[str] | None
) -> RetainSet:
    """Read, check, split and tokenize one `monitor.retain` entry."""
    task = cfg.model.task
    classify = task == "classification"
    metric = rc.metric_for(task)
    valid = CLASSIFICATION_METRICS if classify else CAUSAL_LM_METRICS
    if metric not in valid:
        raise ConfigError(
            f"monitor.retain {rc.name!r}: metric {metric!r} is not measured for {task}; "
            f"choose one of {', '.join(valid)}"
        )
    dc = DataConfig.model_validate(
        {
            "name": rc.dataset,
            "train_file": rc.file,
            "text_column": rc.text_column,
            "label_column": rc.label_column,
            "classes": rc.classes,
            # Classification keeps a half for fitting a readout (used when the head is readout).
            "validation_split": 0.5 if classify else 0.0,
            "test_split": 0.0,
            "max_length": rc.max_length or cfg.data.max_length,
            "max_train_samples": rc.fit_samples if classify else rc.max_samples,
            "max_eval_samples": rc.max_samples,
        }
    )
    try:
        raw = data.load_splits(dc, task=task, seed=cfg.train.seed)
        tokenized = data.tokenize(raw, tokenizer, dc, task)
    except ConfigError as exc:
        raise ConfigError(f"monitor.retain {rc.name!r}: {exc}") from None
    if not classify:
        return RetainSet(rc.name, _rows(tokenized.train), metric=metric, task="causal-lm")
    names = raw.class_names or []
    head = rc.head
    if head == "auto":
        known = model_classes is not None and all(n in model_classes for n in names)
        head = "model" if known else "readout"
    scored, fit = _rows(tokenized.validation), _rows(tokenized.train)
    if head == "model":  # no readout to fit: score up to max_samples rows of both halves
        scored, fit = (scored + fit)[: rc.max_samples], []
    return RetainSet(rc.name, scored, metric=metric, head=head, fit_rows=fit, class_names=names)


def probe_rows(train: Any, sets: list[RetainSet], size: int, seed: int) -> list[Mapping[str, Any]]:
    """`size` rows: up to half from the retain sets (evenly), the rest from training."""
    rng = np.random.default_rng(seed)
    rows: list[Mapping[str, Any]] = []
    if sets:
        share = size // 2 // len(sets)
        for s in sets:
            pick = rng.choice(len(s.rows), size=min(share, len(s.rows)), replace=False)
            rows.extend(s.rows[int(i)] for i in sorted(pick))
    want = min(size - len(rows), len(train))
    pick = rng.choice(len(train), size=want, replace=False)
    rows.extend(train.select(sorted(int(i) for i in pick)).to_list())
    return rows


def build(cfg: Config, p: Prepared) -> Probes | None:
    """The probes `cfg.monitor` asks for (None when probes are off and there is no retain set)."""
    pc = cfg.monitor.probes
    if not pc.enabled and not cfg.monitor.retain:
        return None
    tokenizer = p.tokenizer
    chunk = cfg.train.eval_batch_size or 2 * cfg.train.batch_size
    sets = [retain_set(rc, cfg, tokenizer, p.raw.class_names) for rc in cfg.monitor.retain]
    retain = None
    if sets:
        labels = {n: i for i, n in enumerate(p.raw.class_names or [])}
        retain = Evaluator(
            sets,
            pad_id=tokenizer.pad_token_id,
            batch_size=chunk,
            max_length=max(cfg.data.max_length, *(rc.max_length or 0 for rc in cfg.monitor.retain)),
            model_labels=labels or None,
        )
    causal = cfg.model.task == "causal-lm"
    settings = Settings(
        every=probe_every(cfg, p.max_steps),
        cka=pc.enabled and pc.cka,
        kl=pc.enabled and pc.kl and causal,
        param_drift=pc.enabled and pc.param_drift,
        debiased=pc.debiased,
        top_k=pc.top_k,
    )
    batch = None
    if settings.cka or settings.kl:
        rows = probe_rows(p.splits.train, sets, pc.batch_size, cfg.train.seed)
        batch = ProbeBatch.from_rows(
            rows, pad_id=tokenizer.pad_token_id, chunk_size=chunk, max_length=pc.max_length
        )
    return Probes(settings, batch, retain)
