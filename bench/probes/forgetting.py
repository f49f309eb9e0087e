"""Catastrophic forgetting, made visible: sequential fine-tuning of MiniLM on BBC News.

Phase 1 fine-tunes MiniLM (`builtin:minilm`) on three topics (business, entertainment,
politics). Phase 2 starts from that encoder and fine-tunes it on the other two (sports, tech),
in two variants:

- `no-replay`: sports and tech only (a fresh 2-class head);
- `replay-30`: the same, with 30% of the phase-2 training examples replayed from phase 1's
  training data (with their labels: a 5-class head).

Both phase-2 runs watch the same retain set — phase 1's held-out articles (never trained on),
scored by a readout fitted on the phase-1 encoder when phase 2 begins (`head: readout`) — and
the default label-free probes (CKA to the phase-1 encoder per layer, parameter drift). Reported:
each curve's value at the start and the end of phase 2 (and its extreme), the new task's
accuracy, and whether tunescope's forgetting detector fired.

Every run is cached under bench/.cache/probes/forgetting (phase-1 encoder, per-variant JSON), so
an interrupted bench resumes; `--fresh` starts over.

    nice -n 10 .venv/bin/python bench/probes/forgetting.py
    nice -n 10 .venv/bin/python bench/probes/forgetting.py --epochs 1 --no-write   # quicker check
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = ROOT / "bench" / ".cache" / "probes" / "forgetting"
OLD = ("business", "entertainment", "politics")
NEW = ("sports", "tech")
SEED = 0
MAX_LENGTH = 64
REPLAY = 0.3  # share of phase-2 training examples replayed from phase 1


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    return path


def make_data(out: Path) -> dict[str, Path]:
    """Phase-1 train/validation/retain and phase-2 train (with and without replay)/validation."""
    from tunescope.finetune.builtin import bbc_news

    ds = bbc_news()
    names = ds.features["label"].names
    rows = [{"text": t, "label": names[i]} for t, i in zip(ds["text"], ds["label"], strict=True)]
    rng = random.Random(SEED)
    rng.shuffle(rows)
    old = [r for r in rows if r["label"] in OLD]
    new = [r for r in rows if r["label"] in NEW]
    n_old, n_new = len(old), len(new)
    p1_train, p1_val = old[: int(0.6 * n_old)], old[int(0.6 * n_old) : int(0.7 * n_old)]
    retain = old[int(0.7 * n_old) :]  # never trained on, in either phase
    p2_train, p2_val = new[: int(0.85 * n_new)], new[int(0.85 * n_new) :]
    n_replay = round(REPLAY / (1 - REPLAY) * len(p2_train))
    replay = rng.sample(p1_train, n_replay)
    mixed = p2_train + replay
    rng.shuffle(mixed)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "p1_train": _write(out / "p1_train.csv", p1_train),
        "p1_val": _write(out / "p1_val.csv", p1_val),
        "retain": _write(out / "retain.csv", retain),
        "p2_train": _write(out / "p2_train.csv", p2_train),
        "p2_replay": _write(out / "p2_replay.csv", mixed),
        "p2_val": _write(out / "p2_val.csv", p2_val),
    }


def _train(overrides: list[str]) -> Any:
    from rich.console import Console

    from tunescope.finetune import recipe
    from tunescope.finetune.config import load_config

    cfg = load_config(None, overrides)
    return recipe.train(cfg, console=Console(file=io.StringIO()))


def phase1(files: dict[str, Path], store: Path, epochs: float) -> Path:
    """Fine-tune on the old topics; save the encoder (no head) as phase 2's starting model."""
    encoder = CACHE / "phase1-encoder"
    if (encoder / "config.json").exists():
        return encoder
    outcome = _train(
        [
            "model.name=builtin:minilm",
            f"data.train_file={files['p1_train']}",
            f"data.validation_file={files['p1_val']}",
            "data.test_split=0",
            f"data.max_length={MAX_LENGTH}",
            f"train.epochs={epochs}",
            "train.eval_every=20",
            f"train.seed={SEED}",
            f"monitor.store={store}",
            "monitor.name=phase1",
            "monitor.mode=observe",
            "monitor.probes.enabled=false",
        ]
    )
    from transformers import AutoModel, AutoTokenizer

    best = outcome.checkpoints["best"]
    tmp = encoder.with_suffix(".tmp")
    AutoModel.from_pretrained(best).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(best).save_pretrained(tmp)
    tmp.rename(encoder)
    (CACHE / "phase1.json").write_text(json.dumps({"best": outcome.best, "run": outcome.run_name}))
    return encoder


def phase2(
    variant: str, files: dict[str, Path], encoder: Path, store: Path, epochs: float
) -> dict[str, Any]:
    """Fine-tune on the new topics (with or without replay), watching the retain set."""
    cached = CACHE / f"{variant}.json"
    if cached.exists():
        result = json.loads(cached.read_text())
        return {**result, **collect(store, result["run"])}  # the report may read more now
    train_file = files["p2_replay" if variant == "replay-30" else "p2_train"]
    outcome = _train(
        [
            f"model.name={encoder}",
            f"data.train_file={train_file}",
            f"data.validation_file={files['p2_val']}",  # the new task's accuracy, both variants
            "data.test_split=0",
            f"data.max_length={MAX_LENGTH}",
            f"train.epochs={epochs}",
            "train.eval_every=15",
            f"train.seed={SEED}",
            f"monitor.store={store}",
            f"monitor.name={variant}",
            "monitor.mode=observe",
            "monitor.probes.every=15",
            "monitor.retain=[{name: old-topics, file: " + str(files["retain"]) + ", head: readout, "
            "max_samples: 400, fit_samples: 400}]",
        ]
    )
    result = collect(store, outcome.run_id)
    result["variant"] = variant
    cached.write_text(json.dumps(result, indent=2))
    return result


def collect(store: Path, run_id: str) -> dict[str, Any]:
    """Start, end and extreme of every curve that tells forgetting, and the findings."""
    from tunescope.store import Store

    reader = Store(store).reader()
    keys = sorted(k["key"] for k in reader.keys(run_id))
    curves: dict[str, Any] = {}
    for key in keys:
        if key.startswith(("retain/", "probe/", "eval/accuracy")):
            s = reader.series(run_id, key)
            curves[key] = {"steps": s.steps.tolist(), "values": s.values.tolist()}
    findings = [
        {"kind": e.kind, "step": e.step, "severity": e.severity, "message": e.message}
        for e in reader.events(run_id, types=["finding"])
    ]
    return {"run": run_id, "curves": curves, "findings": findings}


def _fmt(curve: dict[str, Any] | None, pick: str = "min") -> str:
    if not curve:
        return "-"
    v = curve["values"]
    extreme = min(v) if pick == "min" else max(v)
    return f"{v[0]:.3f} -> {v[-1]:.3f} ({pick} {extreme:.3f})"


def report(results: list[dict[str, Any]]) -> str:
    """The table: each curve's start -> end of phase 2 per variant."""
    rows = [
        ("retain/accuracy (old topics)", "retain/accuracy", "min"),
        ("probe/cka/layer_0", "probe/cka/layer_0", "min"),
        ("probe/cka/layer_2", "probe/cka/layer_2", "min"),
        ("probe/cka/layer_5", "probe/cka/layer_5", "min"),
        ("probe/cka (summary)", "probe/cka", "min"),
        ("probe/param_drift", "probe/param_drift", "max"),
        ("eval/accuracy (new task)", "eval/accuracy", "max"),
    ]
    out = io.StringIO()
    head = f"{'curve (start -> end of phase 2)':32s}" + "".join(
        f"{r['variant']:>36s}" for r in results
    )
    print(head, file=out)
    for label, key, pick in rows:
        print(
            f"{label:32s}" + "".join(f"{_fmt(r['curves'].get(key), pick):>36s}" for r in results),
            file=out,
        )
    for r in results:
        kinds = sorted({f["kind"] for f in r["findings"]})
        forget = [f for f in r["findings"] if f["kind"] == "forgetting"]
        print(f"{r['variant']}: findings {', '.join(kinds) or 'none'}", file=out)
        if forget:
            worst = "critical" if any(f["severity"] == "critical" for f in forget) else "warning"
            print(
                f"  forgetting first at step {forget[0]['step']} ({forget[0]['severity']}), "
                f"worst severity {worst}: {forget[-1]['message'].split(' (')[0]}",
                file=out,
            )
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--epochs1", type=float, default=1.0, help="phase-1 epochs")
    ap.add_argument("--epochs", type=float, default=3.0, help="phase-2 epochs")
    ap.add_argument("--fresh", action="store_true", help="drop cached runs and start over")
    ap.add_argument("--no-write", action="store_true", help="do not update forgetting.json")
    args = ap.parse_args()
    if args.fresh and CACHE.exists():
        shutil.rmtree(CACHE)
    store = CACHE / "store"
    files = make_data(CACHE / "data")
    encoder = phase1(files, store, args.epochs1)
    results = [phase2(v, files, encoder, store, args.epochs) for v in ("no-replay", "replay-30")]
    table = report(results)
    print(table)
    if not args.no_write:
        (HERE / "forgetting.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
