"""What the store promises when processes die, compete, or are given bad paths."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import deque
from pathlib import Path

import pytest
from kills import kill_and_open

import tunescope
from tunescope.store import Store, StoreError
from tunescope.store.status import effective_status, process_identity
from tunescope.store.writer import Writer, WriterError

LOGGER = textwrap.dedent(
    """
    import sys, time, tunescope
    store, project, name, n, pause = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    run = tunescope.init(project, name=name, store=store)
    print(run.id, flush=True)
    for step in range(n):
        run.log({"train/loss": 1.0 / (step + 1), "step_copy": float(step), "who": float(ord(name[0]))}, step=step)
        if pause:
            time.sleep(pause)
    run.finish()
    print("done", flush=True)
    """
)


def _spawn(store: Path, project: str, name: str, n: int, pause: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LOGGER, str(store), project, name, str(n), str(pause)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_kill_9_while_logging(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = _spawn(store, "crash", "victim", 10**9, 0.001)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    time.sleep(2.5)
    killed_at, reader = kill_and_open(proc, store)
    info = reader.run(run_id)
    assert info.status == "crashed"
    s = reader.series(run_id, "train/loss")
    steps = s.steps.tolist()
    assert steps == list(range(len(steps)))  # contiguous from 0, no holes, no duplicates
    # every step logged more than 1 s before the kill is there
    logged_before = s.walls[s.walls <= killed_at - 1.0]
    assert len(logged_before) > 100
    assert s.walls.max() >= killed_at - 1.0
    assert (
        reader.series(run_id, "step_copy").values.tolist()
        == [float(x) for x in steps][: len(reader.series(run_id, "step_copy"))]
    )


def test_two_processes_write_two_runs_while_a_reader_reads(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store(store)
    procs = [_spawn(store, "par", name, 3000, 0.0002) for name in ("alpha", "beta")]
    reader = Store(store).reader()
    reads = 0
    while any(p.poll() is None for p in procs):
        for info in reader.runs():
            reader.series(info.id, "train/loss")
            reads += 1
        time.sleep(0.05)
    for p in procs:
        out, _ = p.communicate()
        assert p.returncode == 0 and out.strip().endswith("done")
    assert reads > 0
    runs = {r.name: r for r in reader.runs()}
    assert set(runs) == {"alpha", "beta"}
    for name, info in runs.items():
        assert info.status == "finished"
        s = reader.series(info.id, "train/loss")
        assert s.steps.tolist() == list(range(3000))
        # never mixed: each run holds only its own writer's marker
        assert reader.series(info.id, "who").values.tolist() == [float(ord(name[0]))] * 3000


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    with pytest.raises(StoreError, match="is a file"):
        tunescope.init("p", store=blocker)
    with pytest.raises(StoreError, match="cannot create the store directory"):
        tunescope.init("p", store=blocker / "sub")
    assert blocker.read_text() == "keep me"


def test_store_file_that_is_not_sqlite(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    garbage = b"this is not a database, and it must survive" * 100
    (store / "store.db").write_bytes(garbage)
    with pytest.raises(StoreError) as info:
        tunescope.init("p", store=store)
    assert str(store / "store.db") in str(info.value)
    assert "not a tunescope store" in str(info.value)
    assert (store / "store.db").read_bytes() == garbage


def test_reading_a_missing_store_says_where(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no tunescope store at"):
        Store(tmp_path / "nothing", create_if_missing=False)


def test_writer_keeps_points_while_the_database_is_locked(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    run = tunescope.init("p", store=store.path)
    run.log({"a": 0.0}, step=0)
    run.flush()
    # Another process holds the write lock longer than the writer waits: the writes fail.
    blocker = sqlite3.connect(store.db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    queue: deque[object] = deque()
    writer = Writer(store.db_path, interval=0.05, busy_timeout=0.2)
    writer.attach(run.id, queue)
    for step in range(1, 101):
        queue.append((step, time.time(), [("a", float(step))]))
    with pytest.raises(WriterError, match="kept in memory"):
        writer.flush(timeout=5)
    assert len(queue) == 100  # nothing dropped
    blocker.execute("ROLLBACK")
    blocker.close()
    writer.flush(timeout=10)
    writer.close_run(run.id, "finished", timeout=10)
    writer.stop()
    run.finish()
    s = store.reader().series(run.id, "a")
    assert s.steps.tolist() == list(range(101))


def test_crashed_run_on_another_host_by_heartbeat(tmp_path: Path) -> None:
    foreign = "otherhost|boot|1|4242|99"
    now = time.time()
    assert effective_status("running", foreign, now - 10, now) == "running"
    assert effective_status("running", foreign, now - 600, now) == "crashed"
    assert effective_status("finished", foreign, now - 600, now) == "finished"
    assert effective_status("running", process_identity(), now - 600, now) == "running"  # alive


def test_run_row_identifies_this_process(tmp_path: Path) -> None:
    with tunescope.init("p", store=tmp_path / "s") as run:
        con = Store(tmp_path / "s").connect()
        proc, env = con.execute("SELECT proc, env FROM runs WHERE id=?", (run.id,)).fetchone()
        assert proc == process_identity()
        assert json.loads(env)["pid"] == os.getpid()


class _SlowObserver:
    """Holds the writer inside a cycle, so `finish()` arrives while that cycle runs."""

    def __init__(self) -> None:
        self.first = True

    def observe(self, step: int, wall: float, values: list[tuple[str, float]]) -> list[object]:
        if self.first:
            self.first = False
            time.sleep(0.3)
        return []


def test_finish_during_a_write_cycle_loses_nothing(tmp_path: Path) -> None:
    from tunescope.run import Run

    run = Run("p", store=tmp_path / "s", observer=_SlowObserver())  # type: ignore[arg-type]
    run.log({"a": 0.0}, step=0)
    run._writer.wake()  # type: ignore[union-attr]
    time.sleep(0.1)  # the writer is now inside the cycle that drained step 0
    for step in range(1, 1000):
        run.log({"a": float(step)}, step=step)
    run.finish()
    s = Store(tmp_path / "s").reader().series(run.id, "a")
    assert s.steps.tolist() == list(range(1000))
