"""What the runs list shows, for every run at once, in a fixed number of SQL queries.

`Reader.runs()` parses every run's config and environment and the last value of every metric;
the list needs less and must stay fast at 1,000 runs, so it runs its own narrow queries: one per
table (runs, series, eval chunk summaries, events), never one per run.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from typing import Any

from ..errors import TunescopeError
from ..names import canonical, higher_is_better, namespace
from ..store.status import effective_status

SEVERITIES = ("critical", "warning", "info")
# Which eval metric stands for a run in the list: the first of these it has, else the first
# higher-is-better eval metric, else eval/loss, else any eval metric.
PREFERRED_EVAL = ("eval/accuracy", "eval/f1", "eval/exact_match")


def _where(run_id: str | None, col: str = "run") -> tuple[str, tuple[Any, ...]]:
    return (f" AND {col}=?", (run_id,)) if run_id is not None else ("", ())


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with '/'-joined keys (lists stay values).

    >>> flatten({"test": {"accuracy": 0.9}, "lr": 1e-3})
    {'test/accuracy': 0.9, 'lr': 0.001}
    """
    if not isinstance(obj, dict):
        return {prefix: obj} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def summary_tests(summary: dict[str, Any]) -> dict[str, float]:
    """Numeric test metrics found in a run summary (`test/accuracy`, `test_f1`, nested `test`)."""
    out: dict[str, float] = {}
    for key, value in flatten(summary).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            name = canonical(key)
        except TunescopeError:
            continue
        if namespace(name) == "test":
            out[name] = float(value)
    return out


def confusion(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The confusion matrix in a run summary, with class labels when the summary has them.

    Looked up as any key ending in `confusion_matrix` holding a list of equal-length lists of
    numbers (rows: true class, columns: predicted); labels under a sibling `labels`/`class_names`.
    """
    flat = flatten(summary)
    for key, value in flat.items():
        if not key.lower().endswith("confusion_matrix") or not _is_matrix(value):
            continue
        parent = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        labels = None
        for name in ("labels", "class_names", "classes", "confusion_labels"):
            cand = flat.get(parent + name, flat.get(name))
            if isinstance(cand, list) and len(cand) == len(value):
                labels = [str(c) for c in cand]
                break
        return {"key": key, "matrix": value, "labels": labels}
    return None


def _is_matrix(value: Any) -> bool:
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        return False
    width = len(value[0])
    return all(
        len(r) == width and all(isinstance(x, int | float) and not isinstance(x, bool) for x in r)
        for r in value
    )


def primary_eval(best: dict[str, dict[str, Any]]) -> str | None:
    """The eval metric that stands for a run (see `PREFERRED_EVAL`)."""
    for key in PREFERRED_EVAL:
        if key in best:
            return key
    keys = sorted(best)
    for key in keys:
        if higher_is_better(key):
            return key
    if "eval/loss" in best:
        return "eval/loss"
    return keys[0] if keys else None


def best_evals(con: sqlite3.Connection, run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Per run, per eval metric: the best value and its step, from chunk summaries."""
    where, args = _where(run_id, "s.run")
    rows = con.execute(
        "SELECT s.run, s.key, c.vmin, c.min_step, c.vmax, c.max_step FROM series s "
        "JOIN chunks c ON c.series = s.id WHERE s.key >= 'eval/' AND s.key < 'eval0'" + where,
        args,
    ).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for run, key, vmin, min_step, vmax, max_step in rows:
        up = higher_is_better(key)
        value, step = (vmax, max_step) if up else (vmin, min_step)
        if value is None:
            continue
        cur = out.setdefault(run, {}).get(key)
        if cur is None or (value > cur["value"] if up else value < cur["value"]):
            out[run][key] = {"value": value, "step": step, "higher_is_better": up}
    return out


def findings_by_severity(
    con: sqlite3.Connection, run_id: str | None = None
) -> dict[str, dict[str, int]]:
    """Per run: distinct findings (by `ref`) counted by their latest severity, and interventions.

    A finding is stored as several events sharing a `ref` ("raised", then "updated"); SQLite
    takes the bare `severity` column from the row holding `max(id)`, i.e. the latest one.
    """
    where, args = _where(run_id)
    counts: dict[str, dict[str, int]] = {}
    for run, severity, _ in con.execute(
        "SELECT run, severity, max(id) FROM events WHERE type='finding'"
        + where
        + " GROUP BY run, coalesce(ref, '#' || id)",
        args,
    ):
        c = counts.setdefault(run, {})
        c[severity] = c.get(severity, 0) + 1
    for run, n in con.execute(
        "SELECT run, count(*) FROM events WHERE type='intervention'" + where + " GROUP BY run", args
    ):
        counts.setdefault(run, {})["interventions"] = int(n)
    return counts


def last_values(
    con: sqlite3.Connection, run_id: str | None = None
) -> dict[str, dict[str, float | None]]:
    """Per run, the last value of each test/* series (None when it is NaN)."""
    where, args = _where(run_id)
    out: dict[str, dict[str, float | None]] = {}
    for run, key, value, nan in con.execute(
        "SELECT run, key, last_value, last_nan FROM series WHERE n > 0 AND key >= 'test/' "
        "AND key < 'test0'" + where,
        args,
    ):
        out.setdefault(run, {})[key] = None if nan else _finite(value)
    return out


_RUN_SQL = (
    "SELECT id, name, project, status, created, ended, heartbeat, last_step, segment, proc, "
    "summary FROM runs"
)


def runs(con: sqlite3.Connection, run_id: str | None = None) -> list[dict[str, Any]]:
    """One JSON-ready row per run, newest first (or just `run_id`'s row).

    >>> runs(sqlite3.connect("store.db"))[0]["findings"]      # doctest: +SKIP
    {'critical': 0, 'warning': 2, 'info': 1, 'interventions': 1}
    """
    now = time.time()
    sql, args = (_RUN_SQL + " WHERE id=?", (run_id,)) if run_id else (_RUN_SQL, ())
    rows = con.execute(sql + " ORDER BY created DESC", args).fetchall()
    best = best_evals(con, run_id)
    tests = last_values(con, run_id)
    findings = findings_by_severity(con, run_id)
    out = []
    for rid, name, project, status, created, ended, heartbeat, last_step, seg, proc, summ in rows:
        summary = json.loads(summ or "{}")
        run_best = best.get(rid, {})
        key = primary_eval(run_best)
        test = dict(tests.get(rid, {}))
        test.update(summary_tests(summary))
        counts = {s: 0 for s in SEVERITIES}
        counts["interventions"] = 0
        counts.update(findings.get(rid, {}))
        end = ended if ended is not None else heartbeat
        out.append(
            {
                "id": rid,
                "name": name,
                "project": project,
                "status": effective_status(status, proc, heartbeat, now),
                "steps": last_step,
                "segments": seg + 1,
                "created": created,
                "ended": ended,
                "duration": max(0.0, end - created),
                "best": None if key is None else {"key": key, **run_best[key]},
                "best_eval": run_best,
                "test": test,
                "findings": counts,
            }
        )
    return out
