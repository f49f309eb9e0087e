"""Data for fine-tuning: read the files (or the built-in set), check them, split, tokenize.

Everything a user can get wrong is checked here, before a run exists: missing files, empty
files, missing columns (the error lists the ones there are), labels in validation/test that
training never saw, classes that do not exist, splits too small to stratify.

Classification rows end up as `input_ids`, `attention_mask` (...) and `labels` (0..k-1, in the
order of `Splits.class_names`). Causal-LM text is tokenized, joined with the EOS token and
packed into blocks of `data.max_length` tokens.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .builtin import dataset as builtin_dataset
from .config import ConfigError, DataConfig

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

SPLITS = ("train", "validation", "test")
READERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
}


@dataclass
class Splits:
    """The examples of each split: raw (`text`, `labels`) or tokenized."""

    train: Dataset
    validation: Dataset | None = None
    test: Dataset | None = None
    class_names: list[str] | None = None  # classification: label id -> name

    def items(self) -> list[tuple[str, Dataset]]:
        """(split name, dataset) for each split present."""
        found = ((n, getattr(self, n)) for n in SPLITS)
        return [(n, d) for n, d in found if d is not None]


@dataclass
class SplitStats:
    """What `tunescope check` prints about one split."""

    examples: int
    class_counts: dict[str, int] = field(default_factory=dict)
    truncated: float | None = None  # share of texts longer than max_length (classification)
    tokens: int | None = None  # causal-LM: tokens before packing
    blocks: int | None = None  # causal-LM: packed blocks of max_length


# -- reading ----------------------------------------------------------------------------------


def read_file(path: Path) -> Dataset:
    """Read a CSV/TSV, JSON/JSONL, Parquet, plain text file, or a saved `datasets` directory."""
    import datasets

    if not path.exists():
        raise ConfigError(f"data file {path} does not exist")
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"{path} is a directory but not a saved `datasets` dataset ({exc}); give a file "
                "(.csv, .jsonl, .parquet, .txt) or a directory written by Dataset.save_to_disk"
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            raise ConfigError(
                f"{path} holds several splits ({', '.join(loaded)}); point train_file, "
                f"validation_file and test_file at {path}/<split> instead"
            )
        ds = loaded
    else:
        kind = READERS.get(path.suffix.lower())
        if kind is None:
            raise ConfigError(
                f"cannot read {path}: unknown file type {path.suffix!r}; use one of "
                f"{', '.join(READERS)} or a saved `datasets` directory"
            )
        if path.stat().st_size == 0:
            raise ConfigError(f"data file {path} is empty")
        ds = _read(path, kind)
    if len(ds) == 0:
        raise ConfigError(f"data file {path} has no rows")
    return ds


def _read(path: Path, kind: str) -> Dataset:
    from datasets import Dataset

    try:
        if kind == "csv":
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            return Dataset.from_csv(str(path), sep=sep)
        if kind == "json":
            return Dataset.from_json(str(path))
        if kind == "parquet":
            return Dataset.from_parquet(str(path))
        ds = Dataset.from_text(str(path))
        # Blank lines separate paragraphs; they carry no tokens worth training on.
        return ds.filter(lambda row: bool(row["text"].strip()))
    except Exception as exc:  # the readers raise many types (pyarrow, pandas, json)
        if "corresponds to no data" in str(exc):  # datasets' words for "zero rows"
            raise ConfigError(f"data file {path} has no rows") from None
        raise ConfigError(f"cannot read {path} as {kind}: {exc}") from None


def _check_columns(ds: Dataset, columns: list[tuple[str, str]], where: str) -> None:
    for key, column in columns:
        if column not in ds.column_names:
            close = difflib.get_close_matches(column, ds.column_names, n=1)
            hint = f"; did you mean {close[0]!r} (data.{key}={close[0]})?" if close else ""
            raise ConfigError(
                f"{where} has no column {column!r} (data.{key}){hint} "
                f"Available columns: {', '.join(ds.column_names)}"
            )


def _check_text(ds: Dataset, column: str, where: str) -> None:
    missing = sum(1 for t in ds[column] if not isinstance(t, str))
    if missing:
        raise ConfigError(
            f"{where}: {missing} of {len(ds)} rows have no text in column {column!r} "
            "(empty or not a string); remove those rows or pick another data.text_column"
        )


# -- labels -----------------------------------------------------------------------------------


def _label_names(ds: Dataset, column: str) -> list[str]:
    """Each row's label as a string (ClassLabel ids become their names)."""
    feature = ds.features[column]
    values = ds[column]
    names = getattr(feature, "names", None)
    if names is not None:
        return [names[v] for v in values]
    if any(v is None for v in values):
        raise ConfigError(f"{sum(v is None for v in values)} rows have no label in {column!r}")
    return [str(v) for v in values]


def _ordered(ds: Dataset, column: str, labels: list[str]) -> list[str]:
    names = getattr(ds.features[column], "names", None)
    if names is not None:
        return [n for n in names if n in set(labels)]
    unique = set(labels)
    if all(_is_int(v) for v in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _select_classes(names: list[str], wanted: list[str | int]) -> list[str]:
    chosen: list[str] = []
    for item in wanted:
        if str(item) in names:
            chosen.append(str(item))
        elif isinstance(item, int) and 0 <= item < len(names):
            chosen.append(names[item])
        else:
            close = difflib.get_close_matches(str(item), names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"data.classes: no class {item!r} in the training data; {hint}"
                f"classes: {', '.join(names)} (or their ids 0-{len(names) - 1})"
            )
    if len(set(chosen)) < 2:
        raise ConfigError(f"data.classes must name at least 2 different classes; got {wanted}")
    return [n for n in names if n in set(chosen)]


# -- splitting --------------------------------------------------------------------------------


def _carve(ds: Dataset, share: float, labels: list[str] | None, seed: int, what: str) -> Any:
    """Split `share` of `ds` off (stratified by `labels` when given): (rest, held out)."""
    from sklearn.model_selection import train_test_split

    index = list(range(len(ds)))
    try:
        keep, held = train_test_split(
            index, test_size=share, random_state=seed, shuffle=True, stratify=labels
        )
    except ValueError as exc:
        raise ConfigError(
            f"cannot split {share:g} of {len(ds)} training examples off as {what} "
            f"({exc}); give data.{what}_file, change data.{what}_split, or set it to 0"
        ) from None
    return sorted(keep), sorted(held)


def load_splits(cfg: DataConfig, *, task: str, seed: int) -> Splits:
    """Read and check the data and split it; rows get `text` and (classification) `labels`."""
    lm = task == "causal-lm"
    columns = [("text_column", cfg.text_column)] + (
        [] if lm else [("label_column", cfg.label_column)]
    )
    if cfg.train_file is not None:
        raw = {"train": read_file(cfg.train_file)}
        for split in ("validation", "test"):
            path = getattr(cfg, f"{split}_file")
            if path is not None:
                raw[split] = read_file(path)
    else:
        assert cfg.name is not None  # DataConfig guarantees one of name / train_file
        raw = {"train": builtin_dataset(cfg.name)}
    for split, ds in raw.items():
        where = f"{split} data ({getattr(cfg, f'{split}_file', None) or cfg.name})"
        _check_columns(ds, columns, where)
        _check_text(ds, cfg.text_column, where)
    if lm:
        splits = {s: _text_only(ds, cfg.text_column) for s, ds in raw.items()}
        return _finish(_split(splits, None, cfg, seed), cfg, seed, None)
    labels = {s: _label_names(ds, cfg.label_column) for s, ds in raw.items()}
    names = _ordered(raw["train"], cfg.label_column, labels["train"])
    for split in ("validation", "test"):
        unseen = sorted(set(labels.get(split, [])) - set(names))
        if unseen:
            raise ConfigError(
                f"{split} data has labels that training never saw: {', '.join(unseen[:10])}"
                f"{' ...' if len(unseen) > 10 else ''}; training has: {', '.join(names)}. "
                f"Fix the {split} file or add examples of those classes to training."
            )
    if cfg.classes is not None:
        names = _select_classes(names, cfg.classes)
    if len(names) < 2:
        raise ConfigError(
            f"training data has only one class ({names[0] if names else 'none'}) in column "
            f"{cfg.label_column!r}; classification needs at least 2"
        )
    ids = {n: i for i, n in enumerate(names)}
    splits = {s: _with_labels(ds, cfg.text_column, labels[s], ids) for s, ds in raw.items()}
    for split, ds in splits.items():
        if len(ds) == 0:
            raise ConfigError(f"{split} data has no examples of data.classes {cfg.classes}")
    return _finish(_split(splits, names, cfg, seed), cfg, seed, names)


def _text_only(ds: Dataset, column: str) -> Dataset:
    from datasets import Dataset

    return Dataset.from_dict({"text": ds[column]})


def _with_labels(ds: Dataset, column: str, labels: list[str], ids: dict[str, int]) -> Dataset:
    from datasets import Dataset

    keep = [i for i, lab in enumerate(labels) if lab in ids]
    texts = ds[column]
    return Dataset.from_dict(
        {"text": [texts[i] for i in keep], "labels": [ids[labels[i]] for i in keep]}
    )


def _split(
    splits: dict[str, Dataset], names: list[str] | None, cfg: DataConfig, seed: int
) -> dict[str, Dataset]:
    train = splits["train"]
    wanted = [
        (s, share)
        for s, share in (("test", cfg.test_split), ("validation", cfg.validation_split))
        if s not in splits and share > 0
    ]
    total = len(train)
    for split, share in wanted:
        # Both shares are of the original training data, whatever was carved before.
        labels = [str(v) for v in train["labels"]] if names is not None else None
        keep, held = _carve(train, share * total / len(train), labels, seed, split)
        splits[split] = train.select(held)
        train = train.select(keep)
    splits["train"] = train
    return splits


def _finish(
    splits: dict[str, Dataset], cfg: DataConfig, seed: int, names: list[str] | None
) -> Splits:
    limits = {
        "train": cfg.max_train_samples,
        "validation": cfg.max_eval_samples,
        "test": cfg.max_test_samples,
    }
    for split, limit in limits.items():
        ds = splits.get(split)
        if ds is not None and limit is not None and len(ds) > limit:
            splits[split] = ds.shuffle(seed=seed).select(range(limit))
    return Splits(
        train=splits["train"],
        validation=splits.get("validation"),
        test=splits.get("test"),
        class_names=names,
    )


# -- tokenizing -------------------------------------------------------------------------------


def tokenize(
    splits: Splits, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, task: str
) -> Splits:
    """Tokenize every split (classification: truncate; causal-LM: pack into blocks)."""
    out: dict[str, Dataset] = {}
    for split, ds in splits.items():
        if task == "causal-lm":
            out[split] = _pack(ds, tokenizer, cfg.max_length, split)
        else:
            out[split] = ds.map(
                lambda batch: tokenizer(batch["text"], truncation=True, max_length=cfg.max_length),
                batched=True,
                remove_columns=["text"],
                desc=f"tokenizing {split}",
            )
    return replace(splits, **out)


def _pack(ds: Dataset, tokenizer: PreTrainedTokenizerBase, block: int, split: str) -> Dataset:
    from datasets import Dataset

    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for chunk in _token_lists(tokenizer, ds["text"]):
        for row in chunk:
            ids.extend(row)
            if eos is not None:
                ids.append(eos)
    n = len(ids) // block
    if n == 0:
        raise ConfigError(
            f"{split} data has {len(ids)} tokens, fewer than one block of data.max_length="
            f"{block}; lower data.max_length or add text"
        )
    blocks = [ids[i * block : (i + 1) * block] for i in range(n)]
    return Dataset.from_dict({"input_ids": blocks, "labels": [list(b) for b in blocks]})


def _token_lists(tokenizer: PreTrainedTokenizerBase, texts: list[str], batch: int = 512) -> Any:
    for i in range(0, len(texts), batch):
        # verbose=False: lengths beyond the model limit are expected here (we cut ourselves).
        yield tokenizer(texts[i : i + batch], truncation=False, verbose=False)["input_ids"]


def stats(
    splits: Splits, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, task: str
) -> dict[str, SplitStats]:
    """Examples, class balance and the share of texts cut at max_length, per raw split."""
    out: dict[str, SplitStats] = {}
    for split, ds in splits.items():
        lengths = [len(r) for chunk in _token_lists(tokenizer, ds["text"]) for r in chunk]
        s = SplitStats(examples=len(ds))
        if task == "causal-lm":
            eos = 1 if tokenizer.eos_token_id is not None else 0
            s.tokens = sum(lengths) + eos * len(lengths)
            s.blocks = s.tokens // cfg.max_length
        else:
            names = splits.class_names or []
            counts = Counter(ds["labels"])
            s.class_counts = {names[i]: counts.get(i, 0) for i in range(len(names))}
            s.truncated = sum(n > cfg.max_length for n in lengths) / max(len(lengths), 1)
        out[split] = s
    return out
