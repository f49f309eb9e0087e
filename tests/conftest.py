"""Shared fixtures: every test gets its own store directory and never touches ./.tunescope."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh store directory, also set as $TUNESCOPE_STORE."""
    path = tmp_path / "store"
    monkeypatch.setenv("TUNESCOPE_STORE", str(path))
    return path


@pytest.fixture(autouse=True)
def _no_rank_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CI runner or a launcher may export RANK; tests decide their own rank.
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
