"""Generate the diagnosis suite: real training runs, logged through tunescope, exported as CSV.

    nice -n 10 .venv/bin/python bench/diagnosis/generate.py --family digits
    nice -n 10 .venv/bin/python bench/diagnosis/generate.py --family all --jobs 1
    .venv/bin/python bench/diagnosis/generate.py --relabel        # re-run the hindsight checks

Each run is recorded with `tunescope.init(...)` / `run.log(...)` into the store under
bench/.cache/diagnosis-store/, exported with `tunescope.io.csv.write_long` to
bench/diagnosis/suite/<run>.csv, and described in suite/labels.json. Labels come from the
scenario and are confirmed (or the run excluded) by the hindsight checks in labels.py.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import run_name, split_of  # noqa: E402

FAMILIES = ("digits", "deep", "chargpt", "minilm")
SUITE = HERE / "suite"
LABELS = SUITE / "labels.json"
STORE = HERE.parent / ".cache" / "diagnosis-store"
PROJECT = "diagnosis-suite"


def family_module(family: str) -> ModuleType:
    return importlib.import_module(f"fam_{family}")


def scenarios(family: str) -> dict[str, Any]:
    """name -> Scenario for one family (the family modules keep extra build data alongside)."""
    out = {}
    for name, entry in family_module(family).SCENARIOS.items():
        out[name] = entry[0] if isinstance(entry, tuple) else entry
    return out


def _generate_one(
    family: str, scenario: str, seed: int, store: str, threads: int
) -> dict[str, Any]:
    """Train one run in this process, log it through tunescope, export it; return its entry."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    import tunescope
    from tunescope.io.csv import write_long
    from tunescope.store import Store

    torch.set_num_threads(threads)
    mod = family_module(family)
    sc = scenarios(family)[scenario]
    name = run_name(family, scenario, seed)
    started = time.time()
    cpu0 = time.process_time()
    with tunescope.init(
        PROJECT,
        name=name,
        config={"family": family, "scenario": scenario, "seed": seed},
        store=store,
    ) as run:

        def log(values: dict[str, float], step: int) -> None:
            run.log(values, step=step, wall_time=round(time.time(), 3))

        facts = mod.train(scenario, seed, log)
        run.summarize({"setup": facts.config, "facts": facts.facts})
        run_id = run.id
    reader = Store(store).reader()
    SUITE.mkdir(parents=True, exist_ok=True)
    with (SUITE / f"{name}.csv").open("w", encoding="utf-8", newline="") as fh:
        rows = write_long(reader, run_id, fh)
    return {
        "name": name,
        "family": family,
        "scenario": scenario,
        "seed": seed,
        "split": split_of(seed),
        "task": facts.task,
        "num_classes": facts.num_classes,
        "max_steps": facts.max_steps,
        "describe": sc.describe,
        "intended": list(sc.intended),
        "allowed": list(sc.allowed),
        "reference": run_name(family, sc.reference, seed) if sc.reference else None,
        "facts": facts.facts,
        "rows": rows,
        "seconds": round(time.time() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
    }


def load_labels() -> dict[str, Any]:
    if LABELS.exists():
        data: dict[str, Any] = json.loads(LABELS.read_text())
        return data
    return {"version": 1, "runs": {}}


def save_labels(data: dict[str, Any]) -> None:
    data["runs"] = dict(sorted(data["runs"].items()))
    LABELS.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def relabel(data: dict[str, Any]) -> dict[str, Any]:
    """Re-run the hindsight checks on every run's CSV; fill `expected` / `excluded`."""
    import labels as L

    from tunescope.io.csv import read

    cache: dict[str, L.Curves] = {}

    def curves_of(name: str) -> L.Curves:
        if name not in cache:
            cache[name] = L.curves(read(SUITE / f"{name}.csv"))
        return cache[name]

    for name, entry in data["runs"].items():
        # the scenario definitions are the source of truth for what a run is meant to show
        sc = scenarios(entry["family"]).get(entry["scenario"])
        if sc is None:
            entry["expected"], entry["excluded"] = [], "scenario no longer defined"
            continue
        entry.update(intended=list(sc.intended), allowed=list(sc.allowed), describe=sc.describe)
        entry["split"] = split_of(entry["seed"])
        entry["reference"] = (
            run_name(entry["family"], sc.reference, entry["seed"]) if sc.reference else None
        )
        ref = None
        if entry.get("reference"):
            if entry["reference"] not in data["runs"]:
                entry["expected"], entry["excluded"] = [], "reference run missing"
                continue
            ref = curves_of(entry["reference"])
        facts = {**entry["facts"], "max_steps": entry["max_steps"]}
        expected, why = L.label(entry["intended"], entry["allowed"], curves_of(name), facts, ref)
        entry["expected"], entry["excluded"] = expected, why
    return data


def _tasks(
    families: Iterable[str], only: set[str] | None, seeds: set[int] | None
) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    for fam in families:
        for name, sc in scenarios(fam).items():
            if only and name not in only:
                continue
            out.extend((fam, name, seed) for seed in sc.all_seeds if seeds is None or seed in seeds)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--family", action="append", choices=[*FAMILIES, "all"], help="repeatable")
    ap.add_argument("--scenario", action="append", help="only these scenario names (repeatable)")
    ap.add_argument("--seed", action="append", type=int, help="only these seeds (repeatable)")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained in parallel (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--store", default=str(STORE), help="tunescope store for the runs")
    ap.add_argument("--relabel", action="store_true", help="only re-run the hindsight checks")
    args = ap.parse_args(argv)
    entries: list[dict[str, Any]] = []
    failed: list[str] = []
    if not args.relabel:
        fams = FAMILIES if not args.family or "all" in args.family else tuple(args.family)
        tasks = _tasks(
            fams, set(args.scenario or []) or None, set(args.seed) if args.seed else None
        )
        if not tasks:
            print("nothing to generate: no scenario matches", file=sys.stderr)
            return 2
        print(f"generating {len(tasks)} runs with {args.jobs} job(s) into {SUITE}")
        t0 = time.time()
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                futures = {
                    pool.submit(_generate_one, *t, args.store, args.threads): t for t in tasks
                }
                for f in as_completed(futures):
                    try:
                        entries.append(f.result())
                    except Exception as exc:  # one broken run must not lose the others
                        failed.append(f"{run_name(*futures[f])}: {type(exc).__name__}: {exc}")
                        continue
                    _report(entries[-1])
        else:
            for t in tasks:
                entries.append(_generate_one(*t, args.store, args.threads))
                _report(entries[-1])
        print(f"trained {len(entries)} runs in {time.time() - t0:.0f}s")
    data = load_labels()  # read now: another generator may have added runs meanwhile
    for e in entries:
        data["runs"][e["name"]] = e
    relabel(data)
    save_labels(data)
    runs = data["runs"].values()
    excluded = [r for r in runs if r["excluded"]]
    print(
        f"{len(data['runs'])} runs in the suite, {len(excluded)} excluded by the hindsight checks"
    )
    for r in excluded:
        print(f"  excluded {r['name']}: {r['excluded']}")
    if failed:  # the runs that trained are saved above; these are not in the suite
        print(f"{len(failed)} runs failed and were not added:", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _report(e: dict[str, Any]) -> None:
    print(f"  {e['name']:40s} {e['rows']:6d} rows {e['seconds']:6.1f}s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
