"""Starting `tunescope ui` as a real process on a free port, for tests that need a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TUNESCOPE = str(Path(sys.executable).parent / "tunescope")


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
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
