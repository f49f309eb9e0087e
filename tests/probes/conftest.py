"""Tiny models and data for the probe tests that train through the real Trainer (nothing is
downloaded): the fine-tuning tests' keyword-separable topics and word-level tokenizer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
from tinydata import make_rows, save_tiny_bert, save_tiny_gpt2, write_csv


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT encoder with random weights (dropout on), saved as a directory."""
    return save_tiny_bert(tmp_path_factory.mktemp("probe-bert"))


@pytest.fixture
def topics_csv(tmp_path: Path) -> Path:
    """60 labelled rows (3 topics x 20)."""
    return write_csv(tmp_path / "topics.csv", make_rows())


@pytest.fixture
def old_task_csv(tmp_path: Path) -> Path:
    """An earlier task on the same texts with its own label names (the model never predicts them)."""
    rename = {"sport": "old-a", "money": "old-b", "film": "old-c"}
    rows = [{"text": r["text"], "label": rename[r["label"]]} for r in make_rows(30, seed=5)]
    return write_csv(tmp_path / "old.csv", rows)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide GPT-2 with random weights, saved as a directory."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("probe-gpt2"))


@pytest.fixture
def lm_file(tmp_path: Path) -> Path:
    """Plain text, one short document per line."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(r["text"] for r in make_rows(20, seed=2)) + "\n")
    return path
