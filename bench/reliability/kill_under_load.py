"""What a `kill -9` costs while a loop logs as fast as it can (issue 18, defect 2).

    .venv/bin/python bench/reliability/kill_under_load.py [--kills 20] [--write RESULTS.md]
        [--before SRC --before-kills 5]

For each configuration (values per step; full speed or a throttled step rate) a child process
starts a run and logs in a loop, writing the wall-clock time of every step into a
memory-mapped file before it logs it (a side channel that survives the kill). The parent
`kill -9`s it at a random moment (uniform in `--window`, from the child's first step), then
opens the store and finds the first step that is not stored. Reported per configuration over
`--kills` kills:

- steps/s: what the loop achieved (with backpressure, the writer's own speed at full load);
- oldest lost: the age at the kill of the oldest point not stored (0 when nothing was lost),
  median and max — the durability promise is that it stays under 1 s;
- lost: points (values) logged and not stored, median per kill.

Beside it, the same loop through `torch.utils.tensorboard.SummaryWriter` (the installed
`tensorboard` package's event writer, defaults: flush every 120 s, queue of 10), which is what
a user would otherwise pick; its event file is read back with tensorboard's own loader.
`--before SRC` adds rows for another tunescope source tree (`PYTHONPATH=SRC`), e.g. the code
before the fix: `git archive <rev> src | tar -x -C /tmp/before`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

MAX_STEPS = 4_000_000  # capacity of the side channel (8 bytes a step)

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    backend, out, width, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    times = np.memmap(os.path.join(out, "times.f64"), dtype=np.float64, mode="r+")
    keys = ["train/loss"] + [f"m{j}" for j in range(1, width)]
    if backend == "tunescope":
        import tunescope
        run = tunescope.init("kill", name="victim", store=os.path.join(out, "store"))
        def log(values, step):
            run.log(values, step=step)
    else:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(log_dir=os.path.join(out, "tb"))
        def log(values, step):
            for k, v in values.items():
                writer.add_scalar(k, v, step)
    print("ready", flush=True)
    t0 = time.time()
    step = 0
    while step < len(times):
        now = time.time()
        times[step] = now  # before the log call: the point exists from here on
        log({k: 1.0 / (step + 1) + j for j, k in enumerate(keys)}, step)
        step += 1
        if rate:
            pause = t0 + step / rate - time.time()
            if pause > 0:
                time.sleep(pause)
    """
)


@dataclass(frozen=True)
class Config:
    backend: str  # "tunescope" or "tensorboard"
    width: int  # values per step
    rate: float  # steps/s the loop aims at; 0 = as fast as it can
    src: str | None = None  # another tunescope source tree (the "before" rows)

    @property
    def name(self) -> str:
        return self.backend if self.src is None else f"{self.backend} (before)"

    @property
    def label(self) -> str:
        speed = "full speed" if not self.rate else f"{self.rate:g} steps/s"
        return f"{self.name}, {self.width} values/step, {speed}"


@dataclass
class Kill:
    steps_per_s: float
    oldest_lost: float  # seconds; 0 when nothing was lost
    lost_points: int
    logged_points: int


@dataclass
class Result:
    config: Config
    kills: list[Kill] = field(default_factory=list)


def _stored_steps_tunescope(out: Path, width: int) -> list[int]:
    """Per metric, how many of its first steps are stored (contiguous from 0)."""
    from tunescope.store import Store

    reader = Store(out / "store", create_if_missing=False).reader()
    info = reader.run("victim")
    counts = []
    for key in ["train/loss"] + [f"m{j}" for j in range(1, width)]:
        steps = reader.series(info.id, key).steps
        assert (steps == np.arange(len(steps))).all(), "stored steps must be contiguous from 0"
        counts.append(len(steps))
    reader.con.close()
    return counts


def _stored_steps_tensorboard(out: Path, width: int) -> list[int]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    per_key: dict[str, set[int]] = {}
    for path in sorted((out / "tb").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                per_key.setdefault(value.tag, set()).add(event.step)
    counts = []
    for key in ["train/loss"] + [f"m{j}" for j in range(1, width)]:
        steps = per_key.get(key, set())
        n = 0
        while n in steps:
            n += 1
        counts.append(n)
    return counts


def one_kill(config: Config, window: tuple[float, float], rng: random.Random) -> Kill:
    out = Path(tempfile.mkdtemp(prefix="ts-kill-"))
    try:
        times = np.memmap(out / "times.f64", dtype=np.float64, mode="w+", shape=(MAX_STEPS,))
        times.flush()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        if config.src:
            env["PYTHONPATH"] = config.src
        argv = [config.backend, str(out), str(config.width), str(config.rate)]
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the child for {config.label} did not start")
        while times[0] == 0:
            time.sleep(0.001)
        time.sleep(max(0.0, times[0] + rng.uniform(*window) - time.time()))
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.time()
        proc.wait()
        logged = int(np.count_nonzero(times))
        first = float(times[0])
        if config.backend == "tunescope":
            stored = _stored_steps_tunescope(out, config.width)
        else:
            stored = _stored_steps_tensorboard(out, config.width)
        oldest = min(stored)  # the first step some value of which is missing
        lost_points = sum(logged - min(n, logged) for n in stored)
        age = killed_at - float(times[oldest]) if oldest < logged else 0.0
        return Kill(
            steps_per_s=logged / max(1e-9, killed_at - first),
            oldest_lost=max(0.0, age),
            lost_points=lost_points,
            logged_points=logged * config.width,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


def table(results: list[Result]) -> str:
    lines = [
        "| writer | values/step | target rate | steps/s achieved | kills | oldest lost, median | "
        "oldest lost, max | points lost per kill, median (of logged) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        k = r.kills
        rate = statistics.median(x.steps_per_s for x in k)
        ages = [x.oldest_lost for x in k]
        lost = statistics.median(x.lost_points for x in k)
        logged = statistics.median(x.logged_points for x in k)
        target = "as fast as it can" if not r.config.rate else f"{r.config.rate:g} steps/s"
        lines.append(
            f"| {r.config.name} | {r.config.width} | {target} | {rate:,.0f} | {len(k)} | "
            f"{statistics.median(ages):.2f} s | {max(ages):.2f} s | {lost:,.0f} ({logged:,.0f}) |"
        )
    return "\n".join(lines)


CONFIGS = [
    Config("tunescope", 1, 0),
    Config("tunescope", 6, 0),
    Config("tunescope", 51, 0),
    Config("tunescope", 6, 1000),
    Config("tunescope", 51, 100),
    Config("tensorboard", 6, 0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per configuration")
    parser.add_argument(
        "--window",
        type=float,
        nargs=2,
        default=(0.5, 2.5),
        metavar=("FROM", "TO"),
        help="seconds after the first step within which the kill lands (uniform)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tensorboard", action="store_true", help="tunescope rows only")
    parser.add_argument("--write", type=Path, help="also write the table to this Markdown file")
    parser.add_argument("--before", help="a tunescope source tree to measure beside (src/)")
    parser.add_argument("--before-kills", type=int, default=5, help="kills per --before row")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    configs = [c for c in CONFIGS if not (args.no_tensorboard and c.backend == "tensorboard")]
    if args.before:
        src = str(Path(args.before).resolve())
        configs += [replace(c, src=src) for c in CONFIGS if c.backend == "tunescope"]
    results = []
    started = time.time()
    for config in configs:
        result = Result(config)
        for _ in range(args.kills if config.src is None else args.before_kills):
            result.kills.append(one_kill(config, tuple(args.window), rng))
        results.append(result)
        worst = max(k.oldest_lost for k in result.kills)
        print(f"{config.label}: worst oldest lost {worst:.2f} s", file=sys.stderr, flush=True)
    text = table(results)
    print(text)
    if args.write:
        command = " ".join(["python bench/reliability/kill_under_load.py", *sys.argv[1:]])
        args.write.write_text(
            "# Kill under load: what a `kill -9` loses\n\n"
            f"`{command}` ({time.strftime('%Y-%m-%d', time.gmtime())}, "
            f"{os.cpu_count()} CPUs, {time.time() - started:.0f} s). Kills land uniformly "
            f"{args.window[0]:g}–{args.window[1]:g} s after the first step.\n\n"
            f"{text}\n"
        )


if __name__ == "__main__":
    main()
