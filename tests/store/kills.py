"""`kill -9` a logging child process and open what it left: shared by the durability tests."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tunescope.store import Reader, Store


def kill_and_open(proc: subprocess.Popen[Any], store: Path) -> tuple[float, Reader]:
    """SIGKILL `proc` now; check the store file's integrity; return (kill time, a reader)."""
    killed_at = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(store / "store.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    return killed_at, Store(store).reader()
