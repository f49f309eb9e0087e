"""What `tunescope.TrainerCallback` costs a `transformers.Trainer` run, side by side with no
tracking and with Trainer's own TensorBoard reporting (what a user would otherwise pick).

The same run — MiniLM (`builtin:minilm`) on BBC News, same config and seed — is trained once per
variant per repetition, variants interleaved, each in a fresh process (so peak memory is that
variant's own). Reported: mean step time (median over repetitions), samples/s, peak RSS, overhead versus no tracking,
and whether the training losses are identical to the untracked run (they must be: monitoring
must not change training).

    .venv/bin/python bench/callback_overhead/run.py                 # 5 repetitions x 40 steps
    .venv/bin/python bench/callback_overhead/run.py --reps 2 --steps 15 --no-write   # quick check
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
VARIANTS = ("none", "tunescope", "tensorboard")
WARMUP_STEPS = 5  # first steps pay for allocation and lazy initialisation in every variant


def time_hooks(total: list[float]) -> None:
    """Add the time spent in tunescope's Trainer hooks and optimizer hooks to `total[0]`.

    Robust to a busy machine in a way end-to-end step times are not: it is tunescope's own
    work on the training thread (the store's writer thread runs beside it and is not counted).
    """
    from tunescope.integrations.transformers import TrainerCallback
    from tunescope.probes.dynamics import Watcher

    def timed(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                total[0] += time.perf_counter() - start

        return wrapper

    per_step = ("on_step_end", "on_optimizer_step", "on_log", "on_evaluate", "on_save")
    for cls, names in ((TrainerCallback, per_step), (Watcher, ("_pre", "_post", "_copy"))):
        for name in names:
            if hasattr(cls, name):
                setattr(cls, name, timed(getattr(cls, name)))


def worker(variant: str, steps: int, batch: int, max_length: int, log_every: int) -> dict[str, Any]:
    """Train once; return step times, the logged losses, time in tunescope's hooks, peak RSS."""
    import torch
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    import tunescope
    from tunescope.finetune.builtin import bbc_news, model_dir
    from tunescope.finetune.models import load_tokenizer

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    source = str(model_dir("builtin:minilm"))
    tok = load_tokenizer(source)
    data = bbc_news().shuffle(seed=0).select(range(steps * batch))
    data = data.map(
        lambda b: tok(b["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
    ).rename_column("label", "labels")
    transformers.set_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=5)

    times: list[float] = []
    hooks = [0.0]
    if variant == "tunescope":
        time_hooks(hooks)

    class Clock(transformers.TrainerCallback):
        last = 0.0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.perf_counter()
            if self.last:
                times.append(now - self.last)
            self.last = now

    with tempfile.TemporaryDirectory() as tmp:
        callbacks: list[Any] = [Clock()]
        if variant == "tunescope":
            callbacks.append(tunescope.TrainerCallback(project="bench", store=Path(tmp) / "store"))
        args = TrainingArguments(
            output_dir=str(Path(tmp) / "out"),
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=1e-4,
            logging_steps=log_every,
            save_strategy="no",
            eval_strategy="no",
            report_to="tensorboard" if variant == "tensorboard" else "none",
            disable_tqdm=True,
            use_cpu=True,
            seed=0,
            dataloader_pin_memory=False,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=DataCollatorWithPadding(tok),
            callbacks=callbacks,
        )
        trainer.remove_callback(transformers.PrinterCallback)
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "variant": variant,
        "times": times,
        "losses": losses,
        "peak_rss": peak,
        "hook_seconds_per_step": hooks[0] / steps,
    }


def run_worker(variant: str, ns: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--steps",
        str(ns.steps),
        "--batch",
        str(ns.batch),
        "--max-length",
        str(ns.max_length),
        "--log-every",
        str(ns.log_every),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def step_time(run: dict[str, Any]) -> float:
    """Mean seconds per step after warm-up: the mean, not the median, so that the work done on
    the few log steps (where a tracker does almost all of its work) is counted."""
    return statistics.fmean(run["times"][WARMUP_STEPS:])


def table(results: dict[str, list[dict[str, Any]]], batch: int) -> tuple[list[str], bool]:
    base = statistics.median(step_time(r) for r in results["none"])
    reference = results["none"][0]["losses"]
    identical = True
    lines = [
        "| variant | step time (s) | samples/s | peak RSS (MiB) | overhead vs none "
        "| in tunescope hooks | losses identical |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for variant, runs in results.items():
        step = statistics.median(step_time(r) for r in runs)
        peak = statistics.median(r["peak_rss"] for r in runs) / 2**20
        same = all(r["losses"] == reference for r in runs)
        identical &= same
        hooks = statistics.median(r["hook_seconds_per_step"] for r in runs)
        in_hooks = f"{1000 * hooks:.2f} ms/step ({100 * hooks / step:.2f}%)" if hooks else "-"
        lines.append(
            f"| {variant} | {step:.4f} | {batch / step:.1f} | {peak:.0f} | "
            f"{100 * (step / base - 1):+.2f}% | {in_hooks} | {'yes' if same else 'NO'} |"
        )
    return lines, identical


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--log-every", type=int, default=10, help="Trainer logging_steps")
    ap.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.worker:
        print(json.dumps(worker(ns.worker, ns.steps, ns.batch, ns.max_length, ns.log_every)))
        return
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for rep in range(ns.reps):
        # Interleave, rotating the order, so drift in machine load hits every variant alike.
        order = VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]
        for variant in order:
            results[variant].append(run_worker(variant, ns))
            r = results[variant][-1]
            print(
                f"rep {rep + 1}/{ns.reps} {variant}: {step_time(r):.4f} s/step, hooks "
                f"{1000 * r['hook_seconds_per_step']:.1f} ms/step",
                file=sys.stderr,
            )
    lines, identical = table(results, ns.batch)
    command = " ".join([".venv/bin/python bench/callback_overhead/run.py", *sys.argv[1:]])
    report = [
        "# tunescope.TrainerCallback overhead",
        "",
        f"MiniLM on BBC News, batch {ns.batch}, {ns.max_length} tokens, {ns.steps} steps per run, "
        f"Trainer logging every {ns.log_every} steps, {ns.reps} interleaved repetitions per "
        f"variant, each run in a fresh process; step time: the mean over a run's steps after the "
        f"first {WARMUP_STEPS} (log steps included), median over the runs. `none`: no tracking; `tensorboard`: "
        '`report_to="tensorboard"`; `tunescope`: `callbacks=[tunescope.TrainerCallback()]` '
        "with its defaults (lr per group, throughput, update/weight ratio every log step, "
        "flush + control check at every log). *in tunescope hooks*: time the training thread "
        "spends inside the callback's and the Watcher's hooks, per step (robust to machine load, "
        "unlike the end-to-end difference).",
        "",
        *lines,
        "",
        f"Command: `{command}` (machine: {os.cpu_count()} CPUs).",
    ]
    print("\n".join(report))
    if not ns.no_write:
        (HERE / "RESULTS.md").write_text("\n".join(report) + "\n")
    if not identical:
        raise SystemExit("training losses differ between variants: monitoring changed training")


if __name__ == "__main__":
    main()
