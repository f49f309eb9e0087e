"""Two processes (gloo, DistributedDataParallel): only rank 0 monitors and decides, and every
rank applies the same intervention at the same step, ending with identical weights."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tunescope
from tunescope.store import Store

STEPS, SABOTAGE_AT = 90, 45


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 * rank + step)  # each rank its own shard
    x = torch.randn(16, 8, generator=g)
    return x, (x[:, 0] > 0).long()


def _guard_worker(rank: int, world: int, store: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same initial weights on every rank
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        model = torch.nn.parallel.DistributedDataParallel(net)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        run = tunescope.init("dist", name="policy", store=store, mode="act")
        guard = tunescope.Guard(run, net, opt, sched, snapshot_every=10, check_every=5)
        for i in range(1, STEPS + 1):
            if i == SABOTAGE_AT:  # the same bad setting on every rank
                sched.base_lrs = [b * 1e5 for b in sched.base_lrs]
            x, y = _batch(rank, i)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            if guard.step({"train/loss": loss.detach()}):
                break
        assert guard.actuator is not None
        applied = [(r["action"], r["step"], r["after"].get("step")) for r in guard.actuator.records]
        weights = [p.detach().flatten().tolist() for p in net.parameters()]
        guard.finish()
        run.finish()
        result = {"writes": run.writes, "applied": applied, "weights": weights}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_applies_the_same_rollback_at_the_same_step(tmp_path: Path) -> None:
    store = tmp_path / "store"
    mp.spawn(_guard_worker, args=(2, str(store), _port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["writes"], r1["writes"]) == (True, False)
    assert r0["applied"] == r1["applied"]
    actions = [a for a, _, _ in r0["applied"]]
    assert actions[:2] == ["rollback", "scale_lr"]
    assert r0["applied"][0][2] == 40  # the last snapshot before the sabotage at step 45
    assert r0["weights"] == r1["weights"]  # bit for bit: the same state restored everywhere
    reader = Store(store).reader()
    [info] = reader.runs()
    events = reader.events(info.id, types=["intervention"])
    assert [e.kind for e in events][:2] == ["rollback", "scale_lr"]  # written once, by rank 0
    assert len(events) == len(r0["applied"])
    assert set(reader.series(info.id, "train/loss").segs.tolist()) == {0, 1}
