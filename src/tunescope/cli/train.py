"""`tunescope train [CONFIG.yaml] [key=value ...]`: fine-tune and watch it happen."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..text import literal
from .app import StoreOption, app, console

if TYPE_CHECKING:
    from ..finetune.config import Config

ArgsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="An optional CONFIG.yaml, then key=value overrides with dotted keys "
        "(values are YAML: data.classes=[3,4], data.name=null).",
        show_default=False,
        metavar="CONFIG.yaml KEY=VALUE",
    ),
]


def split_args(args: list[str]) -> tuple[Path | None, list[str]]:
    """(config file, overrides): the first argument without `=` is the config file."""
    from ..finetune.config import ConfigError

    path: Path | None = None
    overrides: list[str] = []
    for i, arg in enumerate(args):
        if "=" in arg:
            overrides.append(arg)
        elif i == 0:
            path = Path(arg)
        else:
            raise ConfigError(f"{arg!r}: expected key=value (the config file, if any, comes first)")
    return path, overrides


def quiet_libraries() -> None:
    """Keep the terminal for tunescope's own output: no library progress bars or load reports."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def resolve_config(args: list[str], store: Path | None, resume: str | None) -> Config:
    """The config to run: the file (or, resuming, the run's stored config, else the built-in
    default), then the overrides, then --store."""
    from ..finetune.config import apply_overrides, load_config, read_yaml, user_config, validate
    from ..store import Store

    path, overrides = split_args(args)
    if store is not None:
        overrides.append(f"monitor.store={store}")
    if resume is None or path is not None:
        return load_config(path, overrides)
    info = Store(store, create_if_missing=False).reader().run(resume)
    base = user_config(info.config) if info.config else read_yaml(None)
    return validate(apply_overrides(base, overrides), where=f"config of run {info.name}")


@app.command("train")
def train_command(
    args: ArgsArgument = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue this run (name or id) from its last checkpoint: same run in the "
            "store, its stored config unless a CONFIG is given.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Fine-tune a model (default: MiniLM on BBC News) while tunescope monitors the run."""
    cfg = resolve_config(list(args or []), store, resume)
    quiet_libraries()
    from ..finetune.progress import print_outcome
    from ..finetune.recipe import train

    console.print(
        f"tunescope train: {literal(cfg.model.name)} ({literal(cfg.model.task)}) on "
        f"{literal(cfg.data.name or cfg.data.train_file)}, monitor mode {literal(cfg.monitor.mode)}",
        highlight=False,
    )
    outcome = train(cfg, resume=resume, console=console)
    print_outcome(console, outcome)
