"""Tiny models and datasets built inside the tests: random weights from a config, a word-level
tokenizer trained on the test texts, keyword-separable classes. Nothing is downloaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tinydata import make_rows, save_tiny_bert, save_tiny_gpt2, write_csv


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the
    # threads' spin-waiting makes each step many times slower; restored afterwards.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT encoder with random weights, saved as a model directory."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide GPT-2 with random weights, saved as a model directory."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def topic_csv(tmp_path: Path) -> Path:
    """60 labelled rows (3 topics x 20) in a CSV."""
    return write_csv(tmp_path / "topics.csv", make_rows())


@pytest.fixture
def lm_text(tmp_path: Path) -> Path:
    """Plain text for causal-LM tests: one short document per line, with blank lines."""
    lines = [r["text"] for r in make_rows(20, seed=2)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(lines) + "\n")
    return path
