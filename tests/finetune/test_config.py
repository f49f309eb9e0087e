"""Config validation as table tests: what users write, what they get back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunescope.finetune.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    stored_config,
    user_config,
)


def test_default_config_is_the_demo() -> None:
    cfg = load_config()
    assert cfg.model.name == "builtin:minilm"
    assert cfg.data.name == "builtin:bbc-news"
    assert cfg.monitor.mode == "act"
    assert cfg.best_metric == "accuracy"


@pytest.mark.parametrize(
    ("overrides", "attr", "expected"),
    [
        (["train.learning_rate=3e-5"], ("train", "learning_rate"), 3e-5),
        (["train.learning_rate=1.0e-4"], ("train", "learning_rate"), 1e-4),
        (["data.classes=[3,4]"], ("data", "classes"), [3, 4]),
        (["data.classes=[sport, film]"], ("data", "classes"), ["sport", "film"]),
        (["train.max_steps=null"], ("train", "max_steps"), None),
        (["train.eval_every="], ("train", "eval_every"), None),
        (
            ["model.freeze=[embeddings, 'layers:0-1']"],
            ("model", "freeze"),
            ["embeddings", "layers:0-1"],
        ),
        (
            ["model.lora.r=4"],
            ("model", "lora"),
            {"r": 4, "alpha": 16, "dropout": 0.05, "target_modules": None},
        ),
        (["train.scheduler=cosine"], ("train", "scheduler"), "cosine"),
        (["monitor.mode=observe"], ("monitor", "mode"), "observe"),
    ],
)
def test_overrides_parse_values_as_yaml(
    overrides: list[str], attr: tuple[str, str], expected: object
) -> None:
    cfg = load_config(None, overrides)
    value = getattr(getattr(cfg, attr[0]), attr[1])
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    assert value == expected


def test_train_file_replaces_the_builtin_dataset(tmp_path: Path) -> None:
    cfg = load_config(None, [f"data.train_file={tmp_path / 'x.csv'}"])
    assert cfg.data.name is None
    assert cfg.data.train_file == tmp_path / "x.csv"
    # ...also in a YAML file that does not mention data.name
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  train_file: x.csv\n")
    assert load_config(path).data.name is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["train.learning_rat=1e-4"],
            "unknown key train.learning_rat; did you mean train.learning_rate?",
        ),
        (["trian.seed=1"], "unknown key trian; did you mean train?"),
        (["data.text_colum=body"], "did you mean data.text_column?"),
        (["model.lora.rank=4"], "(valid keys in model.lora: r, alpha, dropout, target_modules)"),
        (["train.batch_size=abc"], "train.batch_size: Input should be a valid integer"),
        (["train.learning_rate=-1"], "train.learning_rate: Input should be greater than 0"),
        (["train.scheduler=step"], "'linear', 'cosine', 'exponential' or 'constant'"),
        (["monitor.mode=fix"], "'observe', 'advise' or 'act'"),
        (["model.task=regression"], "'classification' or 'causal-lm'"),
        (["data.validation_split=0.5", "data.test_split=0.5"], "leaves no training data"),
        (["data.name=builtin:bbc-news", "data.train_file=x.csv"], "both given"),
        (["data.name=null"], "no data"),
        (["data.validation_file=v.csv"], "need data.train_file"),
        (["model.freeze=[layers0-3]"], "is not a layer range"),
        (["model.freeze=['layers:3-1']"], "must go up"),
        (["model.freeze=[embeddings]", "model.lora.r=4"], "no effect with model.lora"),
        (["train.best_metric=perplexity"], "not measured for classification"),
        (["model.task=causal-lm", "data.classes=[1,2]"], "applies to classification"),
        (["train=3"], "train must be a section"),
        (["learning_rate"], "is not key=value"),
        (["train..seed=1"], "is not key=value"),
        (["train.seed.x=1"], "train.seed is not a section"),
    ],
)
def test_bad_config_names_the_problem(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_errors_are_listed_together() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.batch_size=0", "data.max_length=-3"])
    text = str(info.value)
    assert "train.batch_size" in text and "data.max_length" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model: [unclosed", "is not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("modle:\n  name: x\n", "did you mean model?"),
    ],
)
def test_bad_config_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_empty_config_file_means_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_overrides_do_not_change_their_input() -> None:
    base = {"train": {"seed": 1}}
    apply_overrides(base, ["train.seed=2"])
    assert base == {"train": {"seed": 1}}


def test_stored_config_round_trips_to_the_user_config() -> None:
    cfg = load_config(None, ["train.epochs=2"])
    stored = stored_config(cfg, {"train.max_steps": 214, "data.num_classes": 5})
    assert stored["train"]["max_steps"] == 214 and stored["data"]["num_classes"] == 5
    assert stored["derived"] == ["data.num_classes", "train.max_steps"]
    again = Config.model_validate(user_config(stored))
    assert again == cfg and again.train.max_steps is None
