"""`tunescope import` streams a CSV: its memory does not grow with the file (it held every row,
1.74 GB for 10M rows). The 10M-row measurement is bench/reliability/import_memory.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunescope.store import Store


def _write(path: Path, rows: int) -> None:
    with path.open("w") as fh:
        fh.write("step,metric,value\n")
        for start in range(0, rows, 10_000):
            fh.write(
                "".join(
                    f"{i // 2},{'loss' if i % 2 else 'lr'},{1 / (i + 1)!r}\n"
                    for i in range(start, min(rows, start + 10_000))
                )
            )


# The real CLI in a fresh process, which then reports its own peak RSS (VmHWM starts again at
# exec; the rusage of a child also counts the parent's pages it was forked with: pytest's, with
# torch imported by other tests, is larger than any import).
CHILD = """
import sys
from tunescope.cli import main
code = main(sys.argv[1:])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(peak.split()[1]) / 1024)
sys.exit(code)
"""


def _peak_rss_mib(store: Path, path: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "import", str(path)],
        env={**os.environ, "TUNESCOPE_STORE": str(store)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_import_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    _write(small, 10)
    _write(large, 500_000)
    base = _peak_rss_mib(tmp_path / "s1", small)
    peak = _peak_rss_mib(tmp_path / "s2", large)
    # Holding 500k parsed rows costs > 100 MiB; streaming stays within the writer's queue.
    assert peak - base < 40, (base, peak)
    reader = Store(tmp_path / "s2", create_if_missing=False).reader()
    (info,) = reader.runs()
    assert len(reader.series(info.id, "train/loss")) == 250_000
    assert len(reader.series(info.id, "train/lr")) == 250_000
