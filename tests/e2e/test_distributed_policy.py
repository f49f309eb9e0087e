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
from tinymodels import bert_config
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


def _trainer_worker(rank: int, world: int, store: str, port: int, out: str) -> None:
    # What torchrun exports; accelerate then starts gloo on CPU (MULTI_CPU).
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    from datasets import Dataset
    from transformers import (
        BertForSequenceClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    class Sabotage(TrainerCallback):
        def on_step_end(self, args: object, state: object, control: object, **kw: object) -> None:
            if state.global_step == 20:  # type: ignore[attr-defined]
                sched = kw["lr_scheduler"]
                sched.base_lrs = [b * 1e20 for b in sched.base_lrs]  # type: ignore[attr-defined]

    set_seed(0)
    model = BertForSequenceClassification(bert_config(max_position_embeddings=32, num_labels=2))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 64, (96, 12), generator=g)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] % 2).tolist()})
    args = TrainingArguments(
        output_dir=str(Path(out) / f"out{rank}"),
        per_device_train_batch_size=4,
        max_steps=40,
        learning_rate=1e-3,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    run = tunescope.init("dist", name="trainer", store=store, mode="act")
    callback = tunescope.TrainerCallback(run=run)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data.select(range(16)),
        callbacks=[callback, Sabotage()],
    )
    trainer.train()
    records = callback._act.actuator.records
    applied = [(r["action"], r["step"], r["after"].get("step")) for r in records]
    weights = [p.detach().flatten().tolist() for p in trainer.model.parameters()]
    run.finish()
    result = {
        "writes": run.writes,
        "applied": applied,
        "weights": weights,
        "world": dist.get_world_size(),
    }
    Path(out, f"trainer{rank}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_the_real_trainer_on_two_processes_rolls_back_in_step(tmp_path: Path) -> None:
    store = tmp_path / "store"
    mp.spawn(_trainer_worker, args=(2, str(store), _port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"trainer{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert (r0["writes"], r1["writes"]) == (True, False)
    assert r0["applied"] == r1["applied"]
    assert [a for a, _, _ in r0["applied"]][:2] == ["rollback", "scale_lr"]
    assert r0["applied"][0][2] == 20  # the snapshot taken before the sabotage
    assert r0["weights"] == r1["weights"]
    reader = Store(store).reader()
    [info] = reader.runs()
    assert set(reader.series(info.id, "train/loss").segs.tolist()) == {0, 1}
