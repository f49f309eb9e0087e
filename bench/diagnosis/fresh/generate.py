"""Generate the fresh diagnosis sets: real training runs the detectors were never tuned on.

    nice -n 10 .venv/bin/python bench/diagnosis/fresh/generate.py --set A
    nice -n 10 .venv/bin/python bench/diagnosis/fresh/generate.py --set B --family cnn
    .venv/bin/python bench/diagnosis/fresh/generate.py --set A --relabel

Each run is recorded with `tunescope.init(...)` / `run.log(...)` (the HF Trainer families:
through `tunescope.TrainerCallback`) into bench/.cache/fresh-store/, exported with
`tunescope.io.csv.write_long` to runs/<set>/<run>.csv and described in runs/<set>/labels.json.
Labels come from the scenario and are confirmed (or the run excluded) by the hindsight checks
(fresh_labels.py: labels.py's, plus regression underfitting). One process, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEEDS = {"A": (100, 101, 102), "B": (200, 201, 202, 203)}
RUNS = HERE / "runs"
STORE = HERE.parent.parent / ".cache" / "fresh-store"
PROJECT = "diagnosis-fresh"


def families() -> dict[str, dict[str, Any]]:
    """family -> {scenario: (Scenario, build)}; the HF families only if transformers imports."""
    from fam_plain import FAMILIES

    out = dict(FAMILIES)
    try:
        from fam_hf import FAMILIES as HF
    except ImportError as exc:  # pragma: no cover - an environment without transformers
        print(f"note: HF families unavailable ({exc})", file=sys.stderr)
    else:
        out.update(HF)
    return out


def run_name(family: str, scenario: str, seed: int) -> str:
    return f"{family}-{scenario}-s{seed}"


def _train(family: str, scenario: str, seed: int, log: Any, run: Any) -> Any:
    if family.startswith("hf"):
        import fam_hf

        return fam_hf.train(family, scenario, seed, run)
    import fam_plain

    return fam_plain.train(family, scenario, seed, log)


def generate_one(set_: str, family: str, scenario: str, seed: int, store: str) -> dict[str, Any]:
    import torch

    import tunescope
    from tunescope.io.csv import write_long
    from tunescope.store import Store

    torch.set_num_threads(1)
    sc = families()[family][scenario][0]
    name = run_name(family, scenario, seed)
    started, cpu0 = time.time(), time.process_time()
    with tunescope.init(
        PROJECT,
        name=f"{set_}-{name}",
        config={"family": family, "scenario": scenario, "seed": seed, "set": set_},
        store=store,
        mode=None,
    ) as run:

        def log(values: dict[str, float], step: int) -> None:
            run.log(values, step=step, wall_time=round(time.time(), 3))

        facts = _train(family, scenario, seed, log, run)
        run.summarize({"setup": facts.config, "facts": facts.facts})
        run_id = run.id
    reader = Store(store).reader()
    out = RUNS / set_
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{name}.csv").open("w", encoding="utf-8", newline="") as fh:
        rows = write_long(reader, run_id, fh)
    return {
        "name": name,
        "set": set_,
        "family": family,
        "scenario": scenario,
        "seed": seed,
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


def labels_path(set_: str) -> Path:
    return RUNS / set_ / "labels.json"


def load_labels(set_: str) -> dict[str, Any]:
    p = labels_path(set_)
    if p.exists():
        data: dict[str, Any] = json.loads(p.read_text())
        return data
    return {"version": 1, "set": set_, "seeds": list(SEEDS[set_]), "runs": {}}


def save_labels(set_: str, data: dict[str, Any]) -> None:
    data["runs"] = dict(sorted(data["runs"].items()))
    labels_path(set_).write_text(json.dumps(data, indent=1) + "\n")


def relabel(set_: str, data: dict[str, Any]) -> None:
    """Re-run the hindsight checks on every run's CSV; fill `expected` / `excluded`."""
    import fresh_labels
    import labels as L

    from tunescope.io.csv import read

    cache: dict[str, Any] = {}

    def curves_of(name: str) -> Any:
        if name not in cache:
            cache[name] = L.curves(read(RUNS / set_ / f"{name}.csv"))
        return cache[name]

    fams = families()
    for name, e in data["runs"].items():
        entry = fams.get(e["family"], {}).get(e["scenario"])
        if entry is None:
            e["expected"], e["excluded"] = [], "scenario no longer defined"
            continue
        sc = entry[0]
        e.update(intended=list(sc.intended), allowed=list(sc.allowed), describe=sc.describe)
        e["reference"] = run_name(e["family"], sc.reference, e["seed"]) if sc.reference else None
        ref = None
        if e["reference"]:
            if e["reference"] not in data["runs"]:
                e["expected"], e["excluded"] = [], "reference run missing"
                continue
            ref = curves_of(e["reference"])
        facts = {**e["facts"], "max_steps": e["max_steps"]}
        expected, why = fresh_labels.label(e["intended"], e["allowed"], curves_of(name), facts, ref)
        e["expected"], e["excluded"] = expected, why


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--set", required=True, choices=sorted(SEEDS))
    ap.add_argument("--family", action="append", help="only these families (repeatable)")
    ap.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    ap.add_argument("--seed", action="append", type=int, help="only these seeds of the set")
    ap.add_argument("--store", default=str(STORE))
    ap.add_argument("--relabel", action="store_true", help="only re-run the hindsight checks")
    ap.add_argument("--skip-existing", action="store_true", help="keep runs already generated")
    args = ap.parse_args(argv)
    set_ = args.set
    seeds = [s for s in SEEDS[set_] if not args.seed or s in args.seed]
    if args.seed and set(args.seed) - set(SEEDS[set_]):
        print(f"seeds of set {set_}: {SEEDS[set_]}", file=sys.stderr)
        return 2
    data = load_labels(set_)
    if not args.relabel:
        fams = families()
        tasks = [
            (fam, sc, seed)
            for fam in fams
            if not args.family or fam in args.family
            for sc in fams[fam]
            if not args.scenario or sc in args.scenario
            for seed in seeds
        ]
        if args.skip_existing:
            tasks = [t for t in tasks if run_name(*t) not in data["runs"]]
        print(f"generating {len(tasks)} runs of set {set_}", flush=True)
        t0 = time.time()
        for t in tasks:
            try:
                e = generate_one(set_, *t, args.store)
            except Exception as exc:  # one broken run must not lose the others
                print(f"  FAILED {run_name(*t)}: {type(exc).__name__}: {exc}", flush=True)
                continue
            data["runs"][e["name"]] = e
            save_labels(set_, data)
            print(
                f"  {e['name']:42s} {e['rows']:6d} rows {e['cpu_seconds']:6.1f} cpu-s", flush=True
            )
        print(f"trained {len(tasks)} runs in {time.time() - t0:.0f}s")
    relabel(set_, data)
    save_labels(set_, data)
    runs = list(data["runs"].values())
    excl = [r for r in runs if r["excluded"]]
    healthy = [r for r in runs if not r["excluded"] and not r["intended"]]
    print(f"set {set_}: {len(runs)} runs, {len(excl)} excluded, {len(healthy)} healthy kept")
    for r in excl:
        print(f"  excluded {r['name']}: {r['excluded']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
