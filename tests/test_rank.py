"""Only global rank 0 writes; every rank sees rank 0's control decisions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import tunescope
from tunescope.store import Store


def test_nonzero_rank_from_env_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "3")
    store = tmp_path / "store"
    with tunescope.init("p", store=store, config={"a": 1}) as run:
        assert not run.writes
        run.log({"train/loss": 1.0}, step=0)
        run.event("finding", "x", "m")
        run.summarize({"x": 1})
        run.flush()
        with pytest.raises(TypeError):  # the same validation as rank 0
            run.log({"train/loss": "bad"}, step=1)
        assert run.control.should_stop is False
    assert not store.exists()


def _worker(rank: int, world: int, store: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        run = tunescope.init("dist", name="ddp", store=store)
        decided_at = None
        for step in range(20):
            run.log({"train/loss": float(step)}, step=step)
            if rank == 0 and step == 7:
                run.control.request_stop("test decision")  # only rank 0 decides
            run.control.synchronize()  # the adapter's sync point, same step on every rank
            if run.control.should_stop:
                decided_at = step
                break
        run.finish()
        Path(out, f"rank{rank}.txt").write_text(f"{run.writes} {decided_at} {run.control.reason}")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_same_decision_same_step(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = tmp_path / "store"
    mp.spawn(_worker, args=(2, str(store), port, str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "rank0.txt").read_text() == "True 7 test decision"
    assert (tmp_path / "rank1.txt").read_text() == "False 7 test decision"
    reader = Store(store).reader()
    [info] = reader.runs()
    assert info.name == "ddp"
    assert reader.series(info.id, "train/loss").steps.tolist() == list(range(8))
