"""`tunescope ui` under heavy and hostile clients (issue 18, defect 6), before and after.

    nice -n 10 .venv/bin/python bench/reliability/ui_load.py [--before SRC] [--points N]

Starts real `tunescope ui` processes on 127.0.0.1 and measures:

1. keep-alive latency: median and p95 of 500 GETs of one run's `/keys` JSON over one
   http.client connection; beside it a bare uvicorn + Starlette app serving the same bytes,
   once on a socket created as the old `tunescope ui` did (proto 0: asyncio never sets
   TCP_NODELAY) and once on the socket uvicorn creates itself;
2. memory: VmHWM and VmRSS of the server around 50 concurrent 10,000-point series requests
   on an N-point series (default 1,000,000; the store is built once under bench/.cache/);
3. slow clients: with the server's RLIMIT_NOFILE at 1,024 (a common default), N clients each
   send half a request head and hang (the client keeps every socket open); a fresh GET 1 s
   after the last connected and 12 s after the first (past the 10 s request deadline), and
   the bytes the server logged meanwhile.

`--before SRC` runs every tunescope measurement a second time with `PYTHONPATH=SRC`, e.g. a
tree from `git archive <rev> src | tar -x -C /tmp/before`, for the before/after columns.
Writes nothing but the table (stdout); bench/reliability/RESULTS_ui.md holds the latest.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "bench" / ".cache" / "reliability"
TUNESCOPE = str(Path(sys.executable).parent / "tunescope")
HALF_HEADER = b"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
SLOW_COUNTS = (500, 1_000, 2_000)
SERVER_NOFILE = 1_024


@dataclass
class Server:
    port: int
    pid: int
    output: Path

    def memory_mb(self) -> dict[str, float]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
        return out

    def logged(self) -> int:
        return self.output.stat().st_size


@contextmanager
def run_server(
    cmd: list[str], env: dict[str, str], nofile: int | None = None, ready: str = "press Ctrl-C"
) -> Iterator[Server]:
    """A child server whose output goes to a file; yields once it printed `ready` and a port."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "out.txt"
        with output.open("w") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=limit
            )
        try:
            for _ in range(600):
                text = output.read_text(errors="replace")
                m = re.search(r"127\.0\.0\.1:(\d+)", text)
                if m and ready in text:
                    yield Server(int(m.group(1)), proc.pid, output)
                    return
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited: {text}")
                time.sleep(0.05)
            raise RuntimeError(f"{cmd[0]} did not start: {output.read_text()}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tunescope_ui(store: Path, src: str | None, nofile: int | None = None) -> Any:
    env = {**os.environ, "COLUMNS": "200"}
    if src:
        env["PYTHONPATH"] = src
    return run_server([TUNESCOPE, "ui", "--store", str(store), "--port", "0"], env, nofile)


def bare_app(body: Path, proto0: bool) -> Any:
    cmd = [sys.executable, __file__, "--bare", str(body), "--proto0" if proto0 else "--own"]
    return run_server(cmd, dict(os.environ), ready="bare app on")


def serve_bare(body_file: str, proto0: bool) -> None:
    """Child mode: a bare Starlette app returning fixed JSON bytes under uvicorn."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    body = Path(body_file).read_bytes()

    def endpoint(request: Any) -> Response:
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", endpoint)])
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if proto0:  # as the old `tunescope ui` did: socket.socket(family, SOCK_STREAM), proto 0
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        print(f"bare app on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
        server.run(sockets=[sock])
    else:  # uvicorn binds: asyncio's create_server makes IPPROTO_TCP sockets (TCP_NODELAY)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        config.port = port
        print(f"bare app on 127.0.0.1:{port}", flush=True)
        server.run()


def wait_answering(port: int, path: str, seconds: float = 30) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return get(port, path, timeout=5)[2]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, float, bytes]:
    t0 = time.perf_counter()
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        con.request("GET", path)
        res = con.getresponse()
        body = res.read()
        return res.status, time.perf_counter() - t0, body
    finally:
        con.close()


def keep_alive_ms(port: int, path: str, n: int = 500) -> tuple[float, float]:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(n + 20):
        t0 = time.perf_counter()
        con.request("GET", path)
        res = con.getresponse()
        res.read()
        times.append((time.perf_counter() - t0) * 1e3)
    con.close()
    times = sorted(times[20:])  # the first few warm the connection and caches
    return statistics.median(times), times[int(0.95 * len(times))]


def burst(server: Server, port: int, path: str, n: int = 50) -> dict[str, float]:
    get(port, path, timeout=120)  # warm
    base = server.memory_mb()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(lambda _: get(port, path, timeout=300)[0], range(n)))
    wall = time.perf_counter() - t0
    time.sleep(1)
    after = server.memory_mb()
    fresh = get(port, "/api/runs", timeout=30)[1]
    return {
        "ok": sum(s == 200 for s in statuses),
        "base_rss": base["VmRSS"],
        "peak": after["VmHWM"],
        "rss_after": after["VmRSS"],
        "wall": wall,
        "fresh_ms": fresh * 1e3,
    }


def probe(port: int) -> str:
    try:
        status, took, _ = get(port, "/api/runs", timeout=2)
        return f"{status} in {took * 1e3:.0f} ms"
    except OSError as exc:
        return f"no answer ({type(exc).__name__})"


def slow_clients(store: Path, src: str | None, n: int) -> dict[str, Any]:
    with tunescope_ui(store, src, nofile=SERVER_NOFILE) as server, ExitStack() as stack:
        wait_answering(server.port, "/api/runs")
        before = server.logged()
        opened = 0
        t0 = time.monotonic()
        for _ in range(n):
            try:
                s = stack.enter_context(
                    socket.create_connection(("127.0.0.1", server.port), timeout=1)
                )
                s.sendall(HALF_HEADER)
                opened += 1
            except OSError:
                pass
        opening = time.monotonic() - t0
        time.sleep(1)
        at_1s = probe(server.port)
        time.sleep(max(0.0, 12 - (time.monotonic() - t0)))
        at_12s = probe(server.port)
        return {
            "opened": opened,
            "opening": opening,
            "at_1s": at_1s,
            "at_12s": at_12s,
            "log_bytes": server.logged() - before,
            "secs": time.monotonic() - t0,
        }


def build_store(points: int) -> Path:
    import tunescope

    path = CACHE / f"series-{points}"
    if (path / ".complete").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    with tunescope.init("load", name="big", store=path) as run:
        for i in range(points):
            run.log({"train/loss": 2.0 * math.exp(-i / (points / 5)) + 0.01 * math.sin(i)}, step=i)
    (path / ".complete").write_text("built\n")
    return path


def measure(store: Path, src: str | None, label: str, log: Callable[[str], None]) -> dict:
    keys = "/api/runs/big/keys"
    series = "/api/runs/big/series?key=train/loss&points=10000"
    out: dict[str, Any] = {}
    with tunescope_ui(store, src) as server:
        body = wait_answering(server.port, keys)
        out["keep_alive"] = keep_alive_ms(server.port, keys)
        log(f"{label}: keep-alive {out['keep_alive']}")
        out["burst"] = burst(server, server.port, series)
        log(f"{label}: burst {out['burst']}")
    out["slow"] = {}
    for n in SLOW_COUNTS:
        out["slow"][n] = slow_clients(store, src, n)
        log(f"{label}: {n} slow clients {out['slow'][n]}")
    out["body"] = body
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", help="a tunescope src/ tree to measure as 'before'")
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--bare", help=argparse.SUPPRESS)
    ap.add_argument("--proto0", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--own", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        serve_bare(args.bare, args.proto0)
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this process opens the clients
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    store = build_store(args.points)
    runs = [("before", args.before)] if args.before else []
    runs.append(("after", None))
    results = {label: measure(store, src, label, log) for label, src in runs}
    bare = {}
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(results["after"]["body"])
        for name, proto0 in (("proto 0 socket", True), ("uvicorn's own socket", False)):
            with bare_app(body, proto0) as server:
                wait_answering(server.port, "/x")
                bare[name] = keep_alive_ms(server.port, "/x")
    report(results, bare, args)


def report(results: dict[str, dict], bare: dict[str, tuple[float, float]], args: Any) -> None:
    labels = list(results)
    print(f"store: one run, {args.points:,}-point train/loss; server RLIMIT_NOFILE for the slow-")
    print(f"client rows: {SERVER_NOFILE:,}. Columns: {', '.join(labels)}.\n")
    print("| measure | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))

    def row(name: str, fn: Callable[[dict], str]) -> None:
        print(f"| {name} | " + " | ".join(fn(results[k]) for k in labels) + " |")

    row("keep-alive GET /keys, median ms", lambda r: f"{r['keep_alive'][0]:.2f}")
    row("keep-alive GET /keys, p95 ms", lambda r: f"{r['keep_alive'][1]:.2f}")
    row("50 x 10k-point series: answered", lambda r: f"{r['burst']['ok']}/50")
    row("  RSS before the burst, MB", lambda r: f"{r['burst']['base_rss']:.0f}")
    row("  peak RSS (VmHWM), MB", lambda r: f"{r['burst']['peak']:.0f}")
    row("  RSS 1 s after, MB", lambda r: f"{r['burst']['rss_after']:.0f}")
    row("  wall time of the burst, s", lambda r: f"{r['burst']['wall']:.1f}")
    row("  a fresh /api/runs after it, ms", lambda r: f"{r['burst']['fresh_ms']:.1f}")
    for n in SLOW_COUNTS:
        row(
            f"{n:,} slow clients: connected, s to connect them",
            lambda r, n=n: f"{r['slow'][n]['opened']:,}, {r['slow'][n]['opening']:.1f} s",
        )
        row("  fresh GET 1 s after the last", lambda r, n=n: r["slow"][n]["at_1s"])
        row("  fresh GET 12 s after the first", lambda r, n=n: r["slow"][n]["at_12s"])
        row("  bytes logged in those 12 s", lambda r, n=n: f"{r['slow'][n]['log_bytes']:,}")
    print()
    print("| bare uvicorn + Starlette, same JSON | keep-alive median ms | p95 ms |")
    print("|---|---:|---:|")
    for name, (med, p95) in bare.items():
        print(f"| {name} | {med:.2f} | {p95:.2f} |")
    print()
    print(json.dumps({"python": sys.version.split()[0], "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
