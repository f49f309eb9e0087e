"""The store: a directory holding the SQLite database `store.db` and one folder per run.

>>> store = Store("/tmp/example-store")            # doctest: +SKIP
>>> [r.name for r in store.reader().runs()]        # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import errno
import os
import sqlite3
import threading
from pathlib import Path

from ..records import EventRecord
from .reader import Event, Reader, RunInfo, RunNotFound, Series, jsonable
from .records import SummaryRecord
from .schema import DB_NAME, StoreError, check_readable, connect, create
from .writer import Writer, WriterError

__all__ = [
    "Event",
    "EventRecord",
    "Reader",
    "RunInfo",
    "RunNotFound",
    "Series",
    "Store",
    "StoreError",
    "SummaryRecord",
    "WriterError",
    "default_path",
    "jsonable",
]

ENV_VAR = "TUNESCOPE_STORE"
DEFAULT_DIR = ".tunescope"

_writers: dict[Path, Writer] = {}
_writers_lock = threading.Lock()


def default_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The store directory: `path`, else $TUNESCOPE_STORE, else ./.tunescope."""
    if path is None:
        path = os.environ.get(ENV_VAR) or DEFAULT_DIR
    try:
        return Path(path).expanduser().absolute()
    except (TypeError, RuntimeError) as exc:  # not a path; or ~user of an unknown user
        raise StoreError(
            f"store must be a directory path (str or Path) for store= / {ENV_VAR}; got "
            f"{type(path).__name__} {path!r:.80} ({exc})"
        ) from None


def _path_error(path: Path, exc: OSError) -> StoreError:
    """An OS error about the store path itself, said about the store= parameter."""
    if exc.errno == errno.ENAMETOOLONG:
        return StoreError(
            f"the store path is too long for the file system ({len(str(path))} characters, "
            f"{exc.strerror}): {str(path)[:80]}…; choose a shorter directory for store= / "
            f"{ENV_VAR}"
        )
    return StoreError(
        f"cannot use the store path {path}: {exc.strerror or exc}. Choose a directory you can "
        f"read and write for store= / {ENV_VAR}."
    )


class Store:
    """A tunescope store directory.

    `Store(path)` opens (and, for writers, creates) the store; `reader()` gives a query
    connection; `writer()` the process-wide background writer.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, create_if_missing: bool = True
    ):
        self.path = default_path(path)
        self.db_path = self.path / DB_NAME
        try:
            exists = self.db_path.exists()
        except OSError as exc:  # a name too long, a loop of links
            raise _path_error(self.path, exc) from None
        if create_if_missing:
            self._create()
        elif not exists:
            raise StoreError(
                f"no tunescope store at {self.path} (no {DB_NAME}). Run a training with tunescope "
                f"first, or pass --store / set {ENV_VAR} to the directory that holds your runs."
            )

    def _create(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(
                f"store path {self.path} is a file, not a directory; choose a directory for "
                f"store= / {ENV_VAR}"
            )
        try:
            (self.path / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise _path_error(self.path, exc) from None
            raise StoreError(
                f"cannot create the store directory {self.path}: {exc.strerror}. Choose a "
                f"writable directory with store= or {ENV_VAR}."
            ) from exc
        if not os.access(self.path, os.W_OK):
            raise StoreError(
                f"the store directory {self.path} is not writable; choose a writable directory "
                f"with store= or {ENV_VAR}."
            )
        con = connect(self.db_path)
        try:
            create(con, self.db_path)
        finally:
            con.close()

    def connect(self) -> sqlite3.Connection:
        """A new read/write connection (for short synchronous writes such as creating a run)."""
        return connect(self.db_path)

    def reader(self) -> Reader:
        """A reader on its own connection."""
        if not self.db_path.exists():
            raise StoreError(f"no tunescope store at {self.path}")
        con = connect(self.db_path, readonly=True)
        try:
            check_readable(con, self.db_path)
        except StoreError:
            con.close()
            raise
        return Reader(con)

    def writer(self) -> Writer:
        """The background writer for this store, shared by all runs of this process."""
        key = self.db_path.resolve()
        with _writers_lock:
            w = _writers.get(key)
            if w is None or not w.alive:
                w = Writer(key)
                _writers[key] = w
            return w

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run's checkpoints and artifacts."""
        return self.path / "runs" / run_id


def _stop_writers() -> None:
    with _writers_lock:
        writers = list(_writers.values())
    for w in writers:
        w.stop()


# Registered at import, so it runs after the run-level atexit hooks registered later
# (atexit is last-in, first-out): runs finish first, then their writers stop.
atexit.register(_stop_writers)
