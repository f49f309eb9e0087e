"""Starting `tunescope ui` as a real process on a free port, for tests that need a live server."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TUNESCOPE = str(Path(sys.executable).parent / "tunescope")


def stop(proc: subprocess.Popen[Any]) -> None:
    """End a server: SIGTERM, then SIGKILL if it has not gone within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def serve(store: Path, *args: str, timeout: float = 30.0) -> Iterator[tuple[str, list[str]]]:
    """Run `tunescope ui --store STORE --port 0 ARGS`; yield (url it printed, output lines)."""
    proc = subprocess.Popen(
        [TUNESCOPE, "ui", "--store", str(store), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"tunescope ui exited early: {''.join(lines)}")
            lines.append(line)
            m = re.search(r"(http://\S+)", line)
            if m:
                yield m.group(1), lines
                return
        raise RuntimeError(f"tunescope ui printed no URL within {timeout}s: {''.join(lines)}")
    finally:
        stop(proc)


@dataclass
class Live:
    """A running `tunescope ui`: where it answers, its pid, and the file its output goes to."""

    url: str
    port: int
    pid: int
    output: Path

    def text(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return self.output.read_text(errors="replace")

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak) of the server process, in MB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
        return out


@contextmanager
def start(
    store: Path, *args: str, nofile: int | None = None, timeout: float = 30.0
) -> Iterator[Live]:
    """Like `serve`, with the output going to a file (a flooding server never blocks on a full
    pipe, and the test can measure it) and, with `nofile`, RLIMIT_NOFILE lowered to that."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "output.txt"
        with output.open("w") as out:
            proc = subprocess.Popen(
                [TUNESCOPE, "ui", "--store", str(store), "--port", "0", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200"},
                preexec_fn=limit,
            )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                text = output.read_text(errors="replace")
                m = re.search(r"(https?://\S+:(\d+)/\S*)\n(?:.*\n)*.*press Ctrl-C", text)
                if m:
                    yield Live(m.group(1), int(m.group(2)), proc.pid, output)
                    return
                if proc.poll() is not None:
                    raise RuntimeError(f"tunescope ui exited early: {text}")
                time.sleep(0.05)
            raise RuntimeError(f"tunescope ui printed no URL within {timeout}s: {text}")
        finally:
            stop(proc)
