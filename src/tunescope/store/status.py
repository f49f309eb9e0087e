"""Run status as readers should see it: a run whose process died is `crashed`, never `running`.

The writer stores who writes a run: the host, the pid, and a process identity (pid namespace,
boot and process start time) that tells a live process from a reused pid. Readers on the same
machine check the process directly; elsewhere a heartbeat older than `STALE_AFTER` means the
process is gone.
"""

from __future__ import annotations

import os
import socket
import time
from functools import cache
from pathlib import Path

STATUSES = ("running", "finished", "failed", "crashed")
STALE_AFTER = 120.0  # seconds without a heartbeat before a run on another host counts as crashed


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


@cache
def _namespace() -> str:
    """Identifies this machine's boot and pid namespace: pids are only comparable within it."""
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = ""
    return f"{socket.gethostname()}|{_read('/proc/sys/kernel/random/boot_id')}|{ns}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name may contain spaces and parentheses; fields resume after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_identity(pid: int | None = None) -> str:
    """A string naming this process uniquely on this machine since boot."""
    pid = os.getpid() if pid is None else pid
    return f"{_namespace()}|{pid}|{_start_time(pid) or ''}"


def _alive_here(proc: str) -> bool | None:
    """True/False when `proc` belongs to this machine's namespace; None when it can't be told."""
    parts = proc.rsplit("|", 2)
    if len(parts) != 3:
        return None
    head, pid_s, start = parts
    if head != _namespace() or not pid_s.isdigit():
        return None
    pid = int(pid_s)
    current = _start_time(pid)
    if current is None:
        if not Path("/proc").is_dir():  # no procfs (macOS): fall back to signal 0
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return False
    return current == start


def effective_status(status: str, proc: str, heartbeat: float, now: float | None = None) -> str:
    """The status a reader should show for a run row."""
    if status != "running":
        return status
    now = time.time() if now is None else now
    age = now - heartbeat
    alive = _alive_here(proc)
    if alive is False:
        return "crashed"
    if alive is None and age > STALE_AFTER:
        return "crashed"
    return "running"
