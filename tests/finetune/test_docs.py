"""The config reference in docs/finetuning.md and the example configs stay in step with the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from tunescope.finetune.config import Config, LoraConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


def _keys(model: type[BaseModel], prefix: str) -> list[str]:
    return [f"{prefix}{name}" for name in model.model_fields]


def test_every_config_field_is_documented() -> None:
    doc = (ROOT / "docs" / "finetuning.md").read_text()
    keys = _keys(LoraConfig, "model.lora.")
    for section, field in Config.model_fields.items():
        keys += _keys(field.annotation, f"{section}.")  # type: ignore[arg-type]
    missing = [k for k in keys if f"| `{k}` |" not in doc]
    assert not missing, f"docs/finetuning.md lacks a row for {missing}"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path) -> None:
    load_config(path)
