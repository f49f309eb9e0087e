"""What the default probes cost: the built-in demo with and without them, and linear CKA alone.

The same run — `tunescope train` with the built-in demo config (MiniLM on BBC News), same seed —
is trained with `monitor.probes.enabled=true` (the default) and `=false`, each in a fresh
process so peak memory (RSS high-water mark) is the variant's own; variants are interleaved
over repetitions and medians reported. Full fine-tuning and LoRA (`model.lora.r=8`). Also
checks that the training losses are identical with and without probes.

Budgets: total training time with probes ≤ 1.03x without; peak RSS ≤ 1.2x (full fine-tuning),
≤ 1.05x (LoRA); linear CKA on 256 x 384 features ≤ 20 ms.

    nice -n 10 .venv/bin/python bench/probes/overhead.py                      # the full demo, 1 rep
    nice -n 10 .venv/bin/python bench/probes/overhead.py --reps 3
    nice -n 10 .venv/bin/python bench/probes/overhead.py --max-steps 30 --no-write   # quick check
    nice -n 10 .venv/bin/python bench/probes/overhead.py --ratio-only   # probe cost in steps, CKA

Also printed first: one default probe and one parameter-drift pass measured in demo training
steps, side by side in one process — a ratio that holds up on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VARIANTS = ("full", "full+probes", "lora", "lora+probes")


def worker(variant: str, max_steps: int | None, store: str) -> dict[str, Any]:
    """Run the demo once; return its times, losses, what the probes cost, and peak RSS."""
    import io

    import transformers
    from rich.console import Console

    from tunescope.finetune import recipe
    from tunescope.finetune.config import load_config
    from tunescope.store import Store

    transformers.logging.set_verbosity_error()
    overrides = [f"monitor.store={store}", f"monitor.probes.enabled={'+probes' in variant}"]
    if variant.startswith("lora"):
        overrides.append("model.lora.r=8")
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    cfg = load_config(None, overrides)
    started = time.perf_counter()
    outcome = recipe.train(cfg, console=Console(file=io.StringIO()))
    total = time.perf_counter() - started
    reader = Store(store).reader()
    info = reader.run(outcome.run_id)
    loss = reader.series(outcome.run_id, "train/loss")
    keys = {k["key"] for k in reader.keys(outcome.run_id)}
    probe_s = (
        float(reader.series(outcome.run_id, "sys/probe_seconds").values.sum())
        if "sys/probe_seconds" in keys
        else 0.0
    )
    return {
        "variant": variant,
        "total_s": total,
        "train_runtime_s": float(info.summary.get("train/runtime", float("nan"))),
        "probe_s": probe_s,
        "steps": outcome.steps,
        "test_accuracy": outcome.test.get("test/accuracy"),
        "losses": loss.values.tolist(),
        "probe_keys": sorted(k for k in keys if k.startswith(("probe/", "train/grad_norm/"))),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def cka_microbench(reps: int = 50) -> float:
    """Median seconds of one debiased linear CKA on 256 x 384 features (fresh reference)."""
    import torch

    from tunescope.probes.cka import linear_cka

    x, y = torch.randn(256, 384), torch.randn(256, 384)
    linear_cka(x, y)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        linear_cka(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_ratio(rounds: int = 4) -> dict[str, float]:
    """One probe and one parameter-drift pass in demo training steps (same process, interleaved).

    A ratio of two things measured side by side holds up on a busy machine, where absolute
    times do not. The step is the demo's (MiniLM, batch 16 x 128 tokens, AdamW, clipping); the
    probe the default one (256 texts x 32 tokens, chunks of 32).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    from tunescope.finetune.builtin import bbc_news, model_dir
    from tunescope.finetune.models import load_tokenizer
    from tunescope.probes.drift import Drift
    from tunescope.probes.isolation import untouched
    from tunescope.probes.representations import ProbeBatch, features

    source = str(model_dir("builtin:minilm"))
    tok = load_tokenizer(source)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=5)
    texts = bbc_news()["text"]
    enc = tok(texts[:256], truncation=True, max_length=128)
    rows = [{k: enc[k][i] for k in enc} for i in range(256)]
    batch = ProbeBatch.from_rows(rows, pad_id=tok.pad_token_id, chunk_size=32, max_length=32)
    train = tok(texts[300:316], truncation=True, max_length=128, padding=True, return_tensors="pt")
    labels = torch.zeros(16, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        model.train()
        opt.zero_grad()
        model(**train, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    drift = Drift(model)
    probe, move = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        step()
        one = (time.perf_counter() - start) / 2
        start = time.perf_counter()
        with untouched(model):
            features(model, batch)
        probe.append((time.perf_counter() - start) / one)
        start = time.perf_counter()
        drift.measure()
        move.append((time.perf_counter() - start) / one)
    return {"probe_steps": statistics.median(probe), "drift_steps": statistics.median(move)}


def _spawn(variant: str, max_steps: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--worker", variant, "--store", f"{tmp}/store"]
        if max_steps is not None:
            cmd += ["--max-steps", str(max_steps)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(name: str, base: list[dict[str, Any]], probed: list[dict[str, Any]]) -> dict[str, Any]:
    med = statistics.median
    t0, t1 = med(r["total_s"] for r in base), med(r["total_s"] for r in probed)
    m0, m1 = med(r["peak_rss_mb"] for r in base), med(r["peak_rss_mb"] for r in probed)
    return {
        "setup": name,
        "total_s": (t0, t1),
        "time_ratio": t1 / t0,
        "probe_share": med(r["probe_s"] / r["total_s"] for r in probed),
        "rss_mb": (m0, m1),
        "rss_ratio": m1 / m0,
        "identical_losses": all(
            b["losses"] == p["losses"] for b, p in zip(base, probed, strict=True)
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=None, help="shorten the demo (checks only)")
    ap.add_argument(
        "--lora-max-steps",
        type=int,
        default=None,
        help="shorten only the LoRA runs (their memory ratio is the budget; time is the full's)",
    )
    ap.add_argument("--no-write", action="store_true", help="do not update the results JSON")
    ap.add_argument(
        "--ratio-only", action="store_true", help="only the probe/step ratio and the CKA timing"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.max_steps, args.store)))
        return
    ratio = step_ratio()
    cka_ms = cka_microbench() * 1000
    print(
        f"one default probe = {ratio['probe_steps']:.2f} demo training steps; parameter drift "
        f"= {ratio['drift_steps']:.3f}; linear CKA (debiased) on 256 x 384 features: "
        f"{cka_ms:.2f} ms (median of 50; budget 20 ms)",
        flush=True,
    )
    if args.ratio_only:
        return
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for rep in range(args.reps):
        for v in VARIANTS:
            r = _spawn(v, args.lora_max_steps if v.startswith("lora") else args.max_steps)
            runs[v].append(r)
            print(
                f"rep {rep + 1} {v:12s} {r['total_s']:7.1f} s  probes {r['probe_s']:5.1f} s  "
                f"peak {r['peak_rss_mb']:7.0f} MB  steps {r['steps']}  "
                f"test acc {r['test_accuracy']}",
                flush=True,
            )
    rows = [
        _row("full fine-tuning", runs["full"], runs["full+probes"]),
        _row("LoRA r=8", runs["lora"], runs["lora+probes"]),
    ]
    print()
    print(
        f"{'setup':18s} {'total s (off/on)':>18s} {'time x':>7s} {'probes %':>9s} "
        f"{'peak MB (off/on)':>17s} {'mem x':>6s} {'same losses':>12s}"
    )
    for r in rows:
        print(
            f"{r['setup']:18s} {r['total_s'][0]:8.1f}/{r['total_s'][1]:<8.1f} {r['time_ratio']:7.3f} "
            f"{100 * r['probe_share']:8.2f}% {r['rss_mb'][0]:8.0f}/{r['rss_mb'][1]:<8.0f} "
            f"{r['rss_ratio']:6.3f} {r['identical_losses']!s:>12s}"
        )
    print("budgets: time x <= 1.03, mem x <= 1.2 (full) / 1.05 (LoRA), CKA <= 20 ms")
    if not args.no_write:
        out = {
            "reps": args.reps,
            "max_steps": args.max_steps,
            "lora_max_steps": args.lora_max_steps,
            "rows": rows,
            "cka_ms": cka_ms,
            "step_ratio": ratio,
            "runs": {
                v: [{k: x for k, x in r.items() if k != "losses"} for r in rs]
                for v, rs in runs.items()
            },
        }
        (HERE / "overhead.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
