"""Reading, checking, splitting and tokenizing data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from tinydata import make_rows, write_csv, write_jsonl

from tunescope.finetune import data
from tunescope.finetune.builtin import bbc_news
from tunescope.finetune.config import ConfigError, DataConfig
from tunescope.finetune.models import load_tokenizer


def _cfg(**kw: object) -> DataConfig:
    return DataConfig.model_validate({"name": None, **kw})


def test_builtin_bbc_news_has_five_topics_without_duplicates() -> None:
    ds = bbc_news()
    assert ds.features["label"].names == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(ds) == 2127  # 2,225 articles, 98 exact duplicates dropped
    assert len(set(ds["text"])) == len(ds)


def test_csv_is_split_stratified_and_seeded(topic_csv: Path) -> None:
    cfg = _cfg(train_file=topic_csv, validation_split=0.2, test_split=0.2)
    a = data.load_splits(cfg, task="classification", seed=1)
    assert a.class_names == ["film", "money", "sport"]
    assert (len(a.train), len(a.validation or []), len(a.test or [])) == (36, 12, 12)
    for split in (a.validation, a.test):
        assert split is not None
        assert Counter(split["labels"]) == {0: 4, 1: 4, 2: 4}  # stratified: 4 of each
    b = data.load_splits(cfg, task="classification", seed=1)
    assert a.test is not None and b.test is not None
    assert a.test["text"] == b.test["text"]
    c = data.load_splits(cfg, task="classification", seed=2)
    assert c.test is not None and c.test["text"] != a.test["text"]
    assert not set(a.train["text"]) & set(a.test["text"])


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "saved"])
def test_other_formats(tmp_path: Path, suffix: str) -> None:
    from datasets import Dataset

    rows = make_rows()
    if suffix == "jsonl":
        path = write_jsonl(tmp_path / "d.jsonl", rows)
    elif suffix == "parquet":
        path = tmp_path / "d.parquet"
        Dataset.from_list(rows).to_parquet(str(path))
    else:
        path = tmp_path / "saved"
        Dataset.from_list(rows).save_to_disk(str(path))
    splits = data.load_splits(_cfg(train_file=path), task="classification", seed=0)
    assert len(splits.train) + len(splits.validation or []) + len(splits.test or []) == 60


def test_validation_and_test_files_are_used_as_given(tmp_path: Path) -> None:
    rows = make_rows(10)
    cfg = _cfg(
        train_file=write_csv(tmp_path / "tr.csv", rows),
        validation_file=write_csv(tmp_path / "va.csv", rows[:5]),
        test_file=write_csv(tmp_path / "te.csv", rows[5:12]),
    )
    s = data.load_splits(cfg, task="classification", seed=0)
    assert (len(s.train), len(s.validation or []), len(s.test or [])) == (30, 5, 7)


def test_classes_subset_by_name_or_id(topic_csv: Path) -> None:
    by_name = data.load_splits(
        _cfg(train_file=topic_csv, classes=["sport", "film"]), task="classification", seed=0
    )
    assert by_name.class_names == ["film", "sport"]
    assert set(by_name.train["labels"]) == {0, 1}
    by_id = data.load_splits(
        _cfg(train_file=topic_csv, classes=[0, 2]), task="classification", seed=0
    )
    assert by_id.class_names == ["film", "sport"]
    total = len(by_id.train) + len(by_id.validation or []) + len(by_id.test or [])
    assert total == 40


def test_limits_on_samples(topic_csv: Path) -> None:
    cfg = _cfg(train_file=topic_csv, max_train_samples=10, max_eval_samples=3, max_test_samples=4)
    s = data.load_splits(cfg, task="classification", seed=0)
    assert (len(s.train), len(s.validation or []), len(s.test or [])) == (10, 3, 4)


def test_zero_split_means_no_such_split(topic_csv: Path) -> None:
    s = data.load_splits(
        _cfg(train_file=topic_csv, validation_split=0, test_split=0), task="classification", seed=0
    )
    assert s.validation is None and s.test is None and len(s.train) == 60


# -- bad input ----------------------------------------------------------------------------------


def test_missing_column_lists_the_available_ones(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [{"body": "x", "label": "a"}, {"body": "y", "label": "b"}])
    with pytest.raises(ConfigError) as info:
        data.load_splits(_cfg(train_file=path), task="classification", seed=0)
    message = str(info.value)
    assert "no column 'text'" in message and "Available columns: body, label" in message


def test_labels_training_never_saw(tmp_path: Path) -> None:
    rows = make_rows(5)
    bad = [{"text": "hello there", "label": "weather"}, *rows[:3]]
    cfg = _cfg(
        train_file=write_csv(tmp_path / "tr.csv", rows),
        test_file=write_csv(tmp_path / "te.csv", bad),
    )
    with pytest.raises(ConfigError, match="test data has labels that training never saw: weather"):
        data.load_splits(cfg, task="classification", seed=0)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "is empty"),
        ("header.csv", "text,label\n", "has no rows"),
        ("d.xlsx", "x", "unknown file type '.xlsx'"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        data.load_splits(_cfg(train_file=path), task="classification", seed=0)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        data.load_splits(_cfg(train_file=tmp_path / "nope.csv"), task="classification", seed=0)


def test_unknown_class(topic_csv: Path) -> None:
    with pytest.raises(ConfigError, match=r"no class 'sprot'.*did you mean 'sport'"):
        data.load_splits(
            _cfg(train_file=topic_csv, classes=["sprot", "film"]), task="classification", seed=0
        )


def test_too_small_to_stratify(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", make_rows(1))  # one row per class
    with pytest.raises(ConfigError, match="cannot split"):
        data.load_splits(_cfg(train_file=path), task="classification", seed=0)


def test_one_class_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [{"text": f"t {i}", "label": "a"} for i in range(10)])
    with pytest.raises(ConfigError, match="only one class"):
        data.load_splits(_cfg(train_file=path), task="classification", seed=0)


def test_rows_without_text(tmp_path: Path) -> None:
    rows = [{"text": "" if i % 2 else "word", "label": "ab"[i % 2]} for i in range(10)]
    with pytest.raises(ConfigError, match="rows have no text"):
        data.load_splits(
            _cfg(train_file=write_csv(tmp_path / "d.csv", rows)), task="classification", seed=0
        )


# -- tokenizing --------------------------------------------------------------------------------


def test_tokenize_truncates_and_reports_the_share_cut(topic_csv: Path, tiny_bert: Path) -> None:
    tok = load_tokenizer(str(tiny_bert))
    cfg = _cfg(train_file=topic_csv, max_length=8)
    raw = data.load_splits(cfg, task="classification", seed=0)
    splits = data.tokenize(raw, tok, cfg, "classification")
    assert max(len(ids) for ids in splits.train["input_ids"]) == 8
    assert set(splits.train.column_names) >= {"input_ids", "attention_mask", "labels"}
    stats = data.stats(raw, tok, cfg, "classification")
    assert stats["train"].truncated == 1.0  # 13 tokens with [CLS] > 8
    assert sum(stats["test"].class_counts.values()) == stats["test"].examples
    wide = data.stats(raw, tok, _cfg(train_file=topic_csv, max_length=32), "classification")
    assert wide["train"].truncated == 0.0


def test_causal_lm_text_is_packed_into_blocks(lm_text: Path, tiny_gpt2: Path) -> None:
    tok = load_tokenizer(str(tiny_gpt2))
    cfg = _cfg(train_file=lm_text, max_length=16, validation_split=0.2, test_split=0.2)
    raw = data.load_splits(cfg, task="causal-lm", seed=0)
    assert (
        len(raw.train) + len(raw.validation or []) + len(raw.test or []) == 60
    )  # blank lines gone
    splits = data.tokenize(raw, tok, cfg, "causal-lm")
    lengths = {len(ids) for ids in splits.train["input_ids"]}
    assert lengths == {16}
    assert splits.train["labels"] == splits.train["input_ids"]
    stats = data.stats(raw, tok, cfg, "causal-lm")
    # 36 documents x (13 tokens + EOS) = 504 tokens -> 31 blocks of 16
    assert stats["train"].tokens == 504 and stats["train"].blocks == 31
    assert len(splits.train) == 31


def test_causal_lm_too_little_text(tmp_path: Path, tiny_gpt2: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [{"text": "match goal"} for _ in range(10)])
    tok = load_tokenizer(str(tiny_gpt2))
    cfg = _cfg(train_file=path, max_length=64, validation_split=0.2, test_split=0.2)
    raw = data.load_splits(cfg, task="causal-lm", seed=0)
    with pytest.raises(ConfigError, match="fewer than one block"):
        data.tokenize(raw, tok, cfg, "causal-lm")
