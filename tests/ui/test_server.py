"""`tunescope ui` as a real process: live updates over SSE, tokens off loopback, concurrency."""

from __future__ import annotations

import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from ui_server import TUNESCOPE, serve

import tunescope


def _read_until(res: httpx.Response, last: str) -> dict[str, dict]:
    """SSE events (by name, the latest of each) of a streaming response, up to one named `last`."""
    out: dict[str, dict] = {}
    name = None
    for line in res.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            out[name] = json.loads(line[6:])
            if name == last:
                break
    return out


def test_stream_pushes_new_points_of_a_live_run(tmp_path: Path) -> None:
    run = tunescope.init("live", name="live", store=tmp_path)
    run.log({"train/loss": 1.0}, step=0)
    run.flush()
    with (
        serve(tmp_path) as (url, _),
        httpx.stream("GET", f"{url}api/stream", params={"run": "live"}, timeout=20) as res,
    ):
        assert res.headers["content-type"].startswith("text/event-stream")

        def log_more() -> None:
            for step in range(1, 5):
                run.log({"train/loss": 1.0 / (step + 1), "eval/loss": 2.0}, step=step)
            run.event("finding", "plateau", "flat", step=4, ref="p")
            run.flush()

        threading.Timer(0.5, log_more).start()
        # The server polls the run list and the run one after the other, and the writer may
        # commit the points in more than one transaction: the updates can come in any order
        # and in pieces, so read until both kinds arrived and every new key was announced.
        events: dict[str, dict] = {}
        changed: set[str] = set()
        name = None
        for line in res.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                events[name] = json.loads(line[6:])
                if name == "run":
                    changed |= set(events["run"]["changed"])
                if "runs" in events and {"train/loss", "eval/loss"} <= changed:
                    break
    run.finish()
    assert events["hello"]["run"]["keys"] == {"train/loss": [1, 0]}
    update = events["run"]
    assert events["runs"]["count"] == 1
    assert {"train/loss", "eval/loss"} <= changed
    assert update["keys"]["train/loss"][0] > 1 and update["status"] == "running"


def test_off_loopback_needs_the_printed_token(tmp_path: Path) -> None:
    tunescope.init("p", name="r", store=tmp_path).finish()
    with serve(tmp_path, "--host", "0.0.0.0") as (url, lines):
        assert "?token=" in url and "token" in "".join(lines)
        base, token = url.split("?token=")
        assert httpx.get(f"{base}api/runs").status_code == 401
        res = httpx.get(f"{base}api/runs", params={"token": token})
        assert res.status_code == 200 and res.json()["runs"][0]["name"] == "r"


def test_short_token_is_refused(tmp_path: Path) -> None:
    tunescope.init("p", name="r", store=tmp_path).finish()
    res = subprocess.run(
        [TUNESCOPE, "ui", "--store", str(tmp_path), "--token", "abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "at least 16 characters" in res.stderr


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    res = subprocess.run(
        [TUNESCOPE, "ui", "--store", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "no tunescope store" in res.stderr
    assert "Traceback" not in res.stderr


def test_concurrent_requests_each_get_their_answer(store: Path) -> None:
    # Starlette runs endpoints on a thread pool: each thread must use its own connection.
    with serve(store) as (url, _):
        urls = [
            f"{url}api/runs/spiky/series?key=train/loss&points={p}" for p in range(100, 140)
        ] + [f"{url}api/runs"] * 10
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(16) as pool:
            results = list(pool.map(client.get, urls))
    assert all(r.status_code == 200 for r in results)
    for p, r in zip(range(100, 140), results, strict=False):
        assert r.json()["points"] == p
