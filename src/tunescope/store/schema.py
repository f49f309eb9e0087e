"""The SQLite schema of a tunescope store, and opening connections to it.

Tables:
- `runs`: one row per run (config and environment as JSON, status, heartbeat for crash detection).
- `series`: one row per (run, metric) with its latest value, for fast run listings.
- `chunks`: summaries of the points, `CHUNK` at a time (see chunks.py); `chunk_data` holds the
  points themselves as packed columns, apart, so scanning summaries never reads point data.
- `rollups`: summaries of `ROLLUP` consecutive chunks, for cheap downsampling of long series.
- `events`: findings, interventions and other annotations, append-only, in log order.

A run's `segment` grows by one whenever a step lower than the last logged one arrives (rollback,
resume): points keep the segment they were logged in, so nothing is ever overwritten and readers
can tell an abandoned stretch from the one that replaced it.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path

from ..errors import TunescopeError
from .chunks import SUMMARY_COLUMNS

SCHEMA_VERSION = 1
DB_NAME = "store.db"

_SUMMARY_SQL = """
  n INTEGER NOT NULL, step_lo INTEGER NOT NULL, step_hi INTEGER NOT NULL,
  wall_lo REAL NOT NULL, wall_hi REAL NOT NULL, first REAL, last REAL,
  vmin REAL, vmax REAL, min_step INTEGER, max_step INTEGER,
  nan INTEGER NOT NULL, posinf INTEGER NOT NULL, neginf INTEGER NOT NULL
"""

DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  project TEXT NOT NULL,
  status TEXT NOT NULL,
  config TEXT NOT NULL,
  env TEXT NOT NULL,
  summary TEXT NOT NULL DEFAULT '{{}}',
  created REAL NOT NULL,
  ended REAL,
  heartbeat REAL NOT NULL,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  proc TEXT NOT NULL,
  last_step INTEGER,
  segment INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_project ON runs(project, created);
CREATE INDEX IF NOT EXISTS runs_name ON runs(name);
CREATE TABLE IF NOT EXISTS series (
  id INTEGER PRIMARY KEY,
  run TEXT NOT NULL REFERENCES runs(id),
  key TEXT NOT NULL,
  n INTEGER NOT NULL DEFAULT 0,
  last_step INTEGER,
  last_value REAL,
  last_nan INTEGER NOT NULL DEFAULT 0,
  last_wall REAL,
  UNIQUE (run, key)
);
CREATE TABLE IF NOT EXISTS chunks (
  series INTEGER NOT NULL,
  seg INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  {_SUMMARY_SQL},
  PRIMARY KEY (series, seg, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunk_data (
  series INTEGER NOT NULL,
  seg INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  steps BLOB NOT NULL, vals BLOB NOT NULL, walls BLOB NOT NULL,
  PRIMARY KEY (series, seg, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_step ON chunks(series, seg, step_hi);
CREATE TABLE IF NOT EXISTS rollups (
  series INTEGER NOT NULL,
  seg INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  {_SUMMARY_SQL},
  PRIMARY KEY (series, seg, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  run TEXT NOT NULL REFERENCES runs(id),
  step INTEGER NOT NULL,
  seg INTEGER NOT NULL,
  wall REAL NOT NULL,
  type TEXT NOT NULL,
  kind TEXT NOT NULL,
  severity TEXT NOT NULL,
  message TEXT NOT NULL,
  data TEXT NOT NULL,
  ref TEXT
);
CREATE INDEX IF NOT EXISTS events_run ON events(run, id);
"""

SUMMARY_SELECT = ", ".join(SUMMARY_COLUMNS)


class StoreError(TunescopeError, RuntimeError):
    """The store cannot be opened or written; the message names the path and the fix."""


def connect(path: Path, *, readonly: bool = False, timeout: float = 30.0) -> sqlite3.Connection:
    """Open the store database with the settings every tunescope connection uses.

    WAL lets one writer and many readers (the dashboard, `diagnose`) work at once, and several
    processes append different runs; `busy_timeout` makes writers queue instead of failing.
    """
    # The file system's bytes, so any name it holds opens (sqlite3 would encode a str as strict
    # UTF-8); quoted in the URI, where '?', '#' and '%' have meanings.
    raw = os.fsencode(path)
    try:
        if readonly:
            con = sqlite3.connect(
                "file:" + urllib.parse.quote(raw) + "?mode=ro",
                uri=True,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            con = sqlite3.connect(
                raw, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        if not readonly:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: could not switch the database to WAL mode ({mode})")
            # NORMAL in WAL mode is durable against a crashed process (kill -9), which is what
            # training runs die of; FULL would only add fsyncs that guard against power loss.
            con.execute("PRAGMA synchronous=NORMAL")
        return con
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{path} is not a tunescope store ({exc}). Point --store / TUNESCOPE_STORE at a "
            "directory tunescope created, or at an empty one."
        ) from exc


def _not_a_store(path: Path, exc: BaseException) -> StoreError:
    return StoreError(
        f"{path} is not a tunescope store ({exc}). Point --store / TUNESCOPE_STORE at a "
        "directory tunescope created, or at an empty one."
    )


def _tunescope_version() -> str:
    from .. import __version__  # the package is imported by the time a store is opened

    return __version__


def check_version(con: sqlite3.Connection, path: Path) -> int | None:
    """The store's schema version (None if it has none yet); `StoreError` if this tunescope
    cannot read it: written by a newer one, or a version that is not a positive integer."""
    rows = dict(
        con.execute(
            "SELECT key, value FROM meta WHERE key IN ('schema_version', 'created_by')"
        ).fetchall()
    )
    value = rows.get("schema_version")
    if value is None:
        return None
    try:
        version = int(str(value), 10)
        if version < 1 or str(version) != str(value).strip():
            raise ValueError(value)
    except ValueError:
        raise StoreError(
            f"{path}: the schema version in its meta table is corrupt ({value!r}; expected a "
            "positive integer), so tunescope cannot tell how to read it. Restore store.db from a "
            "backup, or point --store / TUNESCOPE_STORE at another directory."
        ) from None
    if version > SCHEMA_VERSION:
        ours = _tunescope_version()
        by = rows.get("created_by") or ""
        by = f" ({by})" if by and by != f"tunescope {ours}" else ""
        raise StoreError(
            f"{path} was written by a newer tunescope{by}: schema {version}, and tunescope "
            f"{ours} reads schema {SCHEMA_VERSION}; upgrade tunescope to read it "
            "(pip install -U tunescope)."
        )
    return version


def check_readable(con: sqlite3.Connection, path: Path) -> None:
    """What a reader checks before its first query: a tunescope store it can read."""
    try:
        check_version(con, path)
    except sqlite3.DatabaseError as exc:  # no meta table: another SQLite file, or not SQLite
        raise _not_a_store(path, exc) from exc


def create(con: sqlite3.Connection, path: Path) -> None:
    """Create the tables if missing and check the schema version."""
    try:
        con.executescript(DDL)
        if check_version(con, path) is None:
            con.executemany(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("created_by", f"tunescope {_tunescope_version()}"),
                ],
            )
    except sqlite3.DatabaseError as exc:
        raise _not_a_store(path, exc) from exc
