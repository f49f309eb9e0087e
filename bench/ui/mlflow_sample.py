"""What MLflow's UI gets for one chart: run inside the MLflow venv (`.venv-bench`).

Usage: .venv-bench/bin/python bench/ui/mlflow_sample.py DATA.npz WORKDIR
Logs the series into a real SQLAlchemy (SQLite) tracking store, then calls the same store method
the MLflow server's `get-history-bulk-interval` handler calls, with the UI's 320 points per chart.
Prints JSON: {"points": [[step, value], ...], "query_ms": ..., "log_s": ..., "version": ...}.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

UI_POINTS = 320  # what the MLflow UI's charts ask the server for


def main() -> None:
    data = np.load(sys.argv[1])
    work = Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    db = work / "mlflow.db"
    fresh = not db.exists()
    store = SqlAlchemyStore(f"sqlite:///{db}", str(work / "artifacts"))
    t0 = time.perf_counter()
    if fresh:
        exp = store.create_experiment("bench")
        run = store.create_run(exp, "bench", 0, [], "spiky").info.run_id
        steps, values = data["steps"].tolist(), data["values"].tolist()
        for i in range(0, len(steps), 1000):  # MLflow's log_batch limit is 1,000 metrics
            batch = [
                Metric("train/loss", v, 1_700_000_000_000 + s, s)
                for s, v in zip(steps[i : i + 1000], values[i : i + 1000], strict=True)
            ]
            store.log_batch(run, metrics=batch, params=[], tags=[])
        (work / "run_id").write_text(run)
    log_s = time.perf_counter() - t0
    run = (work / "run_id").read_text()
    t0 = time.perf_counter()
    got = store.get_metric_history_bulk_interval([run], "train/loss", UI_POINTS, None, None)
    query_ms = (time.perf_counter() - t0) * 1e3

    def enc(v: float) -> float | str:
        return str(v) if not math.isfinite(v) else v

    print(
        json.dumps(
            {
                "points": [[m.step, enc(m.value)] for m in got],
                "query_ms": query_ms,
                "log_s": log_s,
                "version": mlflow.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
