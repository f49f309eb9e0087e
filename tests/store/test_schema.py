"""A store this tunescope cannot read is refused with one clear sentence (issue 18, defect 8)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import tunescope
from tunescope.store import Store, StoreError
from tunescope.store.schema import SCHEMA_VERSION


def _store_with_version(tmp_path: Path, version: str) -> Path:
    path = tmp_path / "s"
    with tunescope.init("p", store=path, mode=None) as run:
        run.log({"a": 1.0}, step=0)
    con = sqlite3.connect(path / "store.db")
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
    con.commit()
    con.close()
    return path


def test_a_newer_schema_is_refused_by_readers_and_writers(tmp_path: Path) -> None:
    current = _store_with_version(tmp_path / "current", str(SCHEMA_VERSION))
    assert len(Store(current, create_if_missing=False).reader().runs()) == 1
    path = _store_with_version(tmp_path, "99")
    for open_it in (
        lambda: Store(path, create_if_missing=False).reader(),
        lambda: Store(path),
        lambda: tunescope.init("p", store=path, mode=None),
    ):
        with pytest.raises(StoreError) as info:
            open_it()
        message = str(info.value)
        assert "written by a newer tunescope" in message
        assert "schema 99" in message
        assert f"reads schema {SCHEMA_VERSION}" in message
        assert "upgrade tunescope" in message
        assert str(path) in message


@pytest.mark.parametrize("version", ["abc", "1.5", "", "-1"])
def test_a_corrupt_schema_version_is_a_clear_error(tmp_path: Path, version: str) -> None:
    path = _store_with_version(tmp_path, version)
    for open_it in (lambda: Store(path, create_if_missing=False).reader(), lambda: Store(path)):
        with pytest.raises(StoreError) as info:
            open_it()
        assert "schema version" in str(info.value)
        assert repr(version) in str(info.value)
        assert "corrupt" in str(info.value)


def test_a_sqlite_file_without_tunescope_tables_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.mkdir()
    con = sqlite3.connect(path / "store.db")
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a tunescope store"):
        Store(path, create_if_missing=False).reader()


def test_a_store_path_too_long_for_the_file_system_names_the_parameter(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 300)
    with pytest.raises(StoreError) as info:
        tunescope.init("p", store=path, mode=None)
    assert "store" in str(info.value)
    assert "too long" in str(info.value)
    with pytest.raises(StoreError, match="too long"):
        Store(path, create_if_missing=False)
