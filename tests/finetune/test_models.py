"""Resolving, checking and setting up the pretrained model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunescope.finetune import models
from tunescope.finetune.builtin import model_dir
from tunescope.finetune.config import ConfigError, ModelConfig


def _build(path: Path, **kw: object) -> object:
    cfg = ModelConfig.model_validate({"name": str(path), **kw})
    source = models.resolve(cfg.name)
    tok = models.load_tokenizer(source)
    return models.build(cfg, source, models.load_config(source), tok, ["a", "b", "c"], seed=0)


def test_builtin_minilm_resolves_to_its_package_directory() -> None:
    path = Path(models.resolve("builtin:minilm"))
    assert path == model_dir("builtin:minilm") and (path / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("./no/such/model", "model path './no/such/model' does not exist"),
        ("/abs/missing", "does not exist"),
        ("a/b/c", "does not exist"),
        ("builtin:bert", "unknown built-in model 'builtin:bert'; built-in models: builtin:minilm"),
        ("someone/not-cached-model", "not in the local Hugging Face cache"),
    ],
)
def test_model_names_that_cannot_be_loaded(
    name: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=message):
        models.resolve(name)


def test_hub_id_in_the_local_cache_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    repo = tmp_path / "models--someone--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert models.resolve("someone/tiny") == "someone/tiny"
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        models.resolve("someone/other")


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config\.json"):
        models.resolve(str(tmp_path))


def test_max_length_above_the_model_limit(tiny_bert: Path) -> None:
    tok = models.load_tokenizer(str(tiny_bert))
    limit = models.length_limit(models.load_config(str(tiny_bert)), tok)
    assert limit == 64
    models.check_max_length(64, limit, "tiny")
    with pytest.raises(ConfigError, match=r"data\.max_length=65 is above the limit of tiny"):
        models.check_max_length(65, limit, "tiny")


def test_classification_head_gets_the_class_names(tiny_bert: Path) -> None:
    model = _build(tiny_bert)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}  # type: ignore[attr-defined]
    assert model.config.num_labels == 3  # type: ignore[attr-defined]


def test_freeze_embeddings_and_layers(tiny_bert: Path) -> None:
    model = _build(tiny_bert, freeze=["embeddings", "layers:0"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}  # type: ignore[attr-defined]
    assert any("embeddings" in n for n in frozen)
    assert any(".layer.0." in n for n in frozen)
    assert not any(".layer.1." in n for n in frozen)
    assert not any(n.startswith("classifier") for n in frozen)


@pytest.mark.parametrize(
    ("freeze", "message"),
    [
        (["layers:0-5"], "the model has 2 layers, numbered 0-1"),
        (["decoder"], "matches no parameter"),
    ],
)
def test_bad_freeze(tiny_bert: Path, freeze: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _build(tiny_bert, freeze=freeze)


def test_dropout_override(tiny_bert: Path) -> None:
    model = _build(tiny_bert, dropout=0.3)
    assert model.config.hidden_dropout_prob == 0.3  # type: ignore[attr-defined]
    assert model.config.attention_probs_dropout_prob == 0.3  # type: ignore[attr-defined]


def test_lora_trains_few_parameters(tiny_bert: Path) -> None:
    full = models.count_params(_build(tiny_bert))  # type: ignore[arg-type]
    lora = models.count_params(_build(tiny_bert, lora={"r": 2}))  # type: ignore[arg-type]
    assert full.trainable == full.total
    assert lora.trainable < full.trainable / 5
    assert lora.total > full.total  # the adapters are extra weights


def test_lora_with_unknown_modules(tiny_bert: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.lora"):
        _build(tiny_bert, lora={"target_modules": ["nothing_here"]})
