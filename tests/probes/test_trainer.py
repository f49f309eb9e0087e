"""Probes through the real pipeline (`tunescope train` on `transformers.Trainer`, tiny models).

The contract that matters most: probes leave no trace on training — a run with every probe on
and one with them off give bit-identical training and validation losses.
"""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tunescope.finetune import recipe
from tunescope.finetune.config import ConfigError, load_config
from tunescope.store import Store

pytestmark = pytest.mark.slow


def _train(*overrides: str) -> tuple[Any, Any]:
    cfg = load_config(None, list(overrides))
    outcome = recipe.train(cfg, console=Console(file=io.StringIO()))
    return outcome, Store(cfg.monitor.store, create_if_missing=False).reader()


def _classify(bert: Path, csv: Path, store: Path, *more: str) -> list[str]:
    return [
        f"model.name={bert}",
        f"data.train_file={csv}",
        "data.max_length=32",
        "data.validation_split=0.2",
        "data.test_split=0",
        "train.max_steps=16",
        "train.eval_every=8",
        "train.log_every=1",
        "train.learning_rate=3e-3",
        "train.batch_size=8",
        "train.epochs=3",  # several epochs: the data order of each depends on the global RNG
        f"monitor.store={store}",
        "monitor.mode=observe",
        *more,
    ]


def test_probes_leave_training_bit_identical(
    tiny_bert_dir: Path, topics_csv: Path, old_task_csv: Path, tmp_path: Path
) -> None:
    retain = (
        f"monitor.retain=[{{name: old, file: {old_task_csv}, head: readout, max_samples: 30, "
        f"fit_samples: 30}}, {{name: same, file: {topics_csv}, max_samples: 20}}]"
    )
    on, reader_on = _train(
        *_classify(
            tiny_bert_dir,
            topics_csv,
            tmp_path / "on",
            retain,
            "monitor.probes.every=3",
            "monitor.probes.batch_size=24",
        )
    )
    off, reader_off = _train(
        *_classify(tiny_bert_dir, topics_csv, tmp_path / "off", "monitor.probes.enabled=false")
    )
    for key in ("train/loss", "eval/loss", "train/grad_norm"):
        a, b = reader_on.series(on.run_id, key), reader_off.series(off.run_id, key)
        assert a.steps.tolist() == b.steps.tolist()
        assert a.values.tolist() == b.values.tolist(), key  # bit-identical, not approx

    keys = {k["key"] for k in reader_on.keys(on.run_id)}
    layers = {f"probe/cka/{n}" for n in ("embeddings", "layer_0", "layer_1")}
    groups = {"embeddings", "layer_0", "layer_1", "head"}
    assert layers | {"probe/cka", "probe/param_drift"} <= keys
    assert {f"probe/param_drift/{g}" for g in groups} <= keys
    assert {f"train/grad_norm/{g}" for g in groups | {"bottom", "top"}} <= keys
    assert {f"train/update_ratio/{g}" for g in groups} | {"train/clip_fraction"} <= keys
    assert "probe/kl" not in keys and "train/loss_scale" not in keys  # classification, fp32
    off_keys = {k["key"] for k in reader_off.keys(off.run_id)}
    assert not any(k.startswith(("probe/", "retain/", "train/grad_norm/")) for k in off_keys)

    # The retain baseline is taken before the first step, then at every evaluation.
    for key in ("retain/old/accuracy", "retain/same/accuracy"):
        assert reader_on.series(on.run_id, key).steps.tolist() == [0, 8, 16]
    cka = reader_on.series(on.run_id, "probe/cka")
    assert cka.steps.tolist() == [0, 3, 6, 9, 12, 15, 16]
    assert cka.values[0] == 1.0 and cka.values[-1] < 1.0
    drift = reader_on.series(on.run_id, "probe/param_drift").values
    assert drift[0] == 0.0 and all(b > a for a, b in itertools.pairwise(drift))


def test_lora_drift_and_retain_perplexity_for_a_causal_lm(
    tiny_gpt2_dir: Path, lm_file: Path, tmp_path: Path
) -> None:
    outcome, reader = _train(
        f"model.name={tiny_gpt2_dir}",
        "model.task=causal-lm",
        "model.lora.r=4",
        "model.lora.target_modules=[c_attn]",
        f"data.train_file={lm_file}",
        "data.max_length=16",
        "data.validation_split=0.2",
        "data.test_split=0",
        "train.max_steps=12",
        "train.eval_every=6",
        "train.log_every=3",
        "train.learning_rate=1e-2",
        "train.batch_size=4",
        f"monitor.store={tmp_path}",
        "monitor.mode=observe",
        f"monitor.retain=[{{name: web, file: {lm_file}, max_samples: 8}}]",
        "monitor.probes.every=6",
        "monitor.probes.batch_size=16",
        "monitor.probes.top_k=8",
    )
    run = outcome.run_id
    keys = {k["key"] for k in reader.keys(run)}
    assert "probe/param_drift/embeddings" not in keys  # LoRA on attention only
    kl = reader.series(run, "probe/kl")
    assert kl.steps.tolist() == [0, 6, 12] and kl.values[0] == 0.0 and kl.values[-1] > 0
    assert reader.series(run, "probe/cka/embeddings").values.tolist() == pytest.approx([1.0] * 3)
    assert reader.series(run, "probe/param_drift").values[-1] > 0
    ppl = reader.series(run, "retain/perplexity")
    assert ppl.steps.tolist() == [0, 6, 12]
    assert all(math.isfinite(v) and v > 1 for v in ppl.values)


def test_resumed_run_keeps_its_reference(
    tiny_bert_dir: Path, topics_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _classify(tiny_bert_dir, topics_csv, tmp_path, "monitor.probes.every=4")

    class Crash(RuntimeError):
        pass

    class CrashAt11(recipe.ProgressDisplay):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 11:
                raise Crash("power cut")

    monkeypatch.setattr(recipe, "ProgressDisplay", CrashAt11)
    with pytest.raises(Crash):
        _train(*args)
    monkeypatch.undo()
    reader = Store(tmp_path, create_if_missing=False).reader()
    (crashed,) = reader.runs()
    assert (Store(tmp_path).run_dir(crashed.id) / "probes" / "reference.pt").is_file()
    drift_at_8 = reader.series(crashed.id, "probe/param_drift").values[-1]
    outcome = recipe.train(
        load_config(None, args), resume=crashed.name, console=Console(file=io.StringIO())
    )
    drift = reader.series(outcome.run_id, "probe/param_drift")
    # Still against the start: one baseline (step 0), and drift keeps growing past step 8's
    # value instead of restarting from 0 at the checkpoint (step 8).
    assert drift.steps.tolist().count(0) == 1
    assert drift.steps.tolist()[-1] == 16 and drift.values[-1] > drift_at_8


def test_bad_retain_set_fails_before_the_run(
    tiny_bert_dir: Path, topics_csv: Path, tmp_path: Path
) -> None:
    bad = f"monitor.retain=[{{name: old, file: {topics_csv}, text_column: body}}]"
    with pytest.raises(ConfigError, match=r"monitor.retain 'old'.*no column 'body'"):
        _train(*_classify(tiny_bert_dir, topics_csv, tmp_path, bad))
    wrong = f"monitor.retain=[{{name: old, file: {topics_csv}, metric: perplexity}}]"
    with pytest.raises(ConfigError, match=r"monitor.retain 'old'.*perplexity"):
        _train(*_classify(tiny_bert_dir, topics_csv, tmp_path, wrong))
    assert not (tmp_path / "store.db").exists() or not Store(tmp_path).reader().runs()
