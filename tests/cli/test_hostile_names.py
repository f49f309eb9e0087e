"""Stored strings that look like Rich markup or terminal control sequences, through every
command that prints them, as a user's terminal receives them (a real `tunescope` process with
colour forced on, so Rich's own styling and hyperlinks are in play).

A store holds whatever its writers put there: run names and projects, metric keys, event kinds
and messages. None of it may crash a command, turn into markup (a hyperlink, a hidden word), or
reach the terminal as a control sequence (clear screen, set title, move the cursor, reorder text).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import tunescope
from tunescope.store import EventRecord

# What each hostile name must look like on screen: every printable character as typed.
MARKUP = {
    "ablation[bs=32]": "ablation[bs=32]",
    "close[/s]tag": "close[/s]tag",
    "[link=https://evil.example]click[/link]": "[link=https://evil.example]click[/link]",
    "[bold red]loud[/]": "[bold red]loud[/]",
    "back\\[slash": "back\\[slash",
    "trailing\\": "trailing\\",
    "emoji:thumbs_up:": "emoji:thumbs_up:",
}
# Control characters: the printable parts must show; the control characters must not arrive.
CONTROL = {
    "esc\x1b[2Jclear": ("esc", "[2Jclear"),
    "title\x1b]0;pwned\x07end": ("title", "]0;pwned", "end"),
    "osc8\x1b]8;;https://evil.example\x1b\\here": ("osc8", "]8;;https://evil.example", "here"),
    "two\nlines\rcr": ("two", "lines", "cr"),
    "c1\x9bcsi\x85nel": ("c1", "csi", "nel"),
    "bidi\u202eevil\u2066iso\u200fmark": ("bidi", "evil", "iso", "mark"),
}
FORBIDDEN = ("\x1b", "\x07", "\r", "\x9b", "\x85", "\u202e", "\u2066", "\u200f")
HOSTILE_KEY = "eval/acc[/s][link=https://evil.example]x[/link]"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # Rich's own colours: the only escapes allowed through


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "TUNESCOPE_STORE": str(store),
        "FORCE_COLOR": "1",  # style and hyperlinks as on a real terminal
        "TERM": "xterm-256color",
        "COLUMNS": "2000",  # no folding, so each name is on one line
        "PYTHONIOENCODING": "utf-8",
    }
    env.pop("NO_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "tunescope", *args], capture_output=True, env=env, timeout=120
    )


def _screen(proc: subprocess.CompletedProcess[bytes]) -> str:
    """stdout + stderr as the terminal shows it, after checking that nothing but Rich's colours
    is an escape sequence and that no command crashed."""
    text = proc.stdout.decode("utf-8") + proc.stderr.decode("utf-8")
    assert "Traceback" not in text, text
    assert "MarkupError" not in text, text
    return _screen_text(text)


def _assert_literal(screen: str, name: str) -> None:
    if name in MARKUP:
        assert MARKUP[name] in screen, (name, screen)
    else:
        for part in CONTROL[name]:
            assert part in screen, (name, part, screen)
        assert "two\nlines" not in screen


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run per hostile name (also its project), each with a hostile metric key and events."""
    store = tmp_path_factory.mktemp("hostile") / "store"
    for name in [*MARKUP, *CONTROL]:
        with tunescope.init(name, name=name, store=store, mode=None) as run:
            for step in range(30):
                run.log({"loss": 1.0 / (step + 1), HOSTILE_KEY: 0.5}, step=step)
            run.event("note", name, f"a note about {name}")
            run.event(
                "finding",
                "plateau",
                f"finding message {name}",
                severity="warning",
                data={
                    "first_step": 3,
                    "last_step": 5,
                    "state": "raised",
                    "recommendation": {"text": f"recommendation {name}"},
                },
                ref="plateau@3",
            )
            run.event("intervention", name, f"intervention message {name}", severity="critical")
    return store


def test_runs_lists_every_hostile_name_literally(hostile_store: Path) -> None:
    proc = _cli(hostile_store, "runs")
    assert proc.returncode == 0
    screen = _screen(proc)
    for name in [*MARKUP, *CONTROL]:
        _assert_literal(screen, name)
    assert HOSTILE_KEY in screen
    proc = _cli(hostile_store, "runs", "--json")  # JSON escapes control characters itself
    assert proc.returncode == 0
    _screen(proc)
    assert {r["name"] for r in json.loads(proc.stdout)} == {*MARKUP, *CONTROL}


@pytest.mark.parametrize("name", [*MARKUP, *CONTROL])
def test_events_prints_kinds_and_messages_literally(hostile_store: Path, name: str) -> None:
    proc = _cli(hostile_store, "events", name)
    assert proc.returncode == 0
    screen = _screen(proc)
    for text in ("a note about", "finding message", "recommendation", "intervention message"):
        assert text in screen
    assert screen.count("plateau") == 1
    _assert_literal(screen.split("intervention", 1)[1], name)  # the action's name
    _assert_literal(screen.split("a note about", 1)[1], name)  # the note's message


@pytest.mark.parametrize("name", [*MARKUP, *CONTROL])
def test_diagnose_names_the_run_literally(hostile_store: Path, name: str) -> None:
    proc = _cli(hostile_store, "diagnose", name)
    assert proc.returncode == 0
    screen = _screen(proc)
    _assert_literal(screen.splitlines()[0], name)


@pytest.mark.parametrize("name", [*MARKUP, *CONTROL])
def test_export_reports_the_run_literally(hostile_store: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "out.csv"
    proc = _cli(hostile_store, "export", name, "-o", str(out))
    assert proc.returncode == 0
    _assert_literal(_screen(proc), name)
    assert HOSTILE_KEY in out.read_text()  # data files keep the key exactly


def test_export_tensorboard_stays_inside_the_output_directory(
    tmp_path: Path, hostile_store: Path
) -> None:
    """The default directory is tb/<run name>: a name is not a path."""
    store = tmp_path / "store"
    with tunescope.init("p", name="../../escaped\x1b[2J", store=store, mode=None) as run:
        run.log({"loss": 1.0}, step=0)
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    env_cwd = subprocess.run(
        [sys.executable, "-m", "tunescope", "export", run.id, "-f", "tensorboard"],
        capture_output=True,
        cwd=work,
        env={**os.environ, "TUNESCOPE_STORE": str(store), "PYTHONIOENCODING": "utf-8"},
        timeout=120,
    )
    assert env_cwd.returncode == 0, env_cwd.stderr
    _screen(env_cwd)
    (made,) = (work / "tb").iterdir()
    assert list(made.glob("events.out.tfevents.*"))
    assert not (tmp_path / "escaped\x1b[2J").exists()


@pytest.mark.parametrize("name", [*MARKUP, "esc\x1b[2Jclear", "bidi\u202eevil\u2066iso\u200fmark"])
def test_import_reports_the_new_run_literally(tmp_path: Path, name: str) -> None:
    data = tmp_path / "metrics.csv"
    data.write_text("step,metric,value\n0,loss,1.0\n1,loss,0.5\n")
    store = tmp_path / "store"
    proc = _cli(store, "import", str(data), "--name", name, "--project", name)
    assert proc.returncode == 0
    _assert_literal(_screen(proc), name)


@pytest.mark.parametrize(
    ("stem", "parts"),
    [
        ("run[bold]", ["run[bold]"]),  # a file name holds no "/": no closing tags
        ("run[link=evil.example]x", ["run[link=evil.example]x"]),
        ("r\x1b[2Jx", ["r", "[2Jx"]),
    ],
)
def test_file_names_are_printed_literally(tmp_path: Path, stem: str, parts: list[str]) -> None:
    """`diagnose FILE` and `import FILE` print the path (and the run named after it)."""
    data = tmp_path / f"{stem}.csv"
    data.write_text("step,metric,value\n0,loss,1.0\n1,loss,0.5\n")
    for args in (("diagnose", str(data)), ("import", str(data))):
        proc = _cli(tmp_path / "store", *args)
        assert proc.returncode == 0
        screen = _screen(proc)
        for part in parts:
            assert part in screen, (args, part, screen)


@pytest.mark.parametrize(
    ("stem", "parts"),
    [
        ("bad\x1b]0;pwned\x07", ["bad", "]0;pwned", ".csv:2"]),
        ("bad\u202egpj.exe", ["bad", "gpj.exe.csv"]),
    ],
)
def test_errors_print_hostile_paths_literally(tmp_path: Path, stem: str, parts: list[str]) -> None:
    data = tmp_path / f"{stem}.csv"
    data.write_text("step,metric,value\n0,loss,abc\n")
    proc = _cli(tmp_path / "store", "import", str(data))
    assert proc.returncode == 2
    screen = _screen(proc)
    assert "is not a number" in screen
    for part in parts:
        assert part in screen


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=2000, color_system="truecolor"), out


def _records(name: str) -> list[EventRecord]:
    data = {"state": "raised", "first_step": 3, "recommendation": {"text": f"do {name}"}}
    return [
        EventRecord("finding", name, "warning", f"finding {name}", data, 3, "f@3"),
        EventRecord("intervention", name, "critical", f"action {name}", {}, 4, "f@3"),
    ]


@pytest.mark.parametrize("name", [*MARKUP, *CONTROL])
def test_live_findings_of_a_run_print_literally(name: str) -> None:
    """The listener that prints findings on the training process's terminal (advise mode)."""
    from tunescope.diagnose.terminal import terminal_listener

    console, out = _terminal()
    terminal_listener(console)(_records(name))
    screen = _screen_text(out.getvalue())
    _assert_literal(screen.split("finding", 1)[0], name)  # the kind
    _assert_literal(screen.split("finding", 1)[1], name)  # the message
    _assert_literal(screen.split("do ", 1)[1], name)  # the recommendation


@pytest.mark.parametrize("name", [*MARKUP, *CONTROL])
def test_train_display_prints_literally(name: str) -> None:
    """What `tunescope train` draws: evaluation lines, findings, the final tables."""
    from tunescope.finetune.progress import Outcome, ProgressDisplay, print_outcome

    console, out = _terminal()
    display = ProgressDisplay(console)
    display.show_events(_records(name))
    outcome = Outcome(
        run_name=name,
        run_id="abc",
        store=f"/stores/{name}",
        steps=10,
        seconds=3.0,
        test={f"test/{name}": 0.5},
        best={"step": 5, "metric": f"eval/{name}", "value": 0.5},
        checkpoints={name: f"/ckpt/{name}"},
        per_class={name: {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 3}},
        stopped=f"stopped by {name}",
    )
    print_outcome(console, outcome)
    screen = _screen_text(out.getvalue())
    for marker in ("finding at step 3: ", "action at step 4: ", "run ", "test/", "eval/"):
        assert marker in screen
        _assert_literal(screen.split(marker, 1)[1], name)
    for marker in ("weights", "/ckpt/", "stopped by ", "/stores/", "tunescope diagnose "):
        _assert_literal(screen.split(marker, 1)[1], name)


def _screen_text(text: str) -> str:
    """`text` without Rich's colours, after checking that no other escape is left in it."""
    plain = SGR.sub("", text)
    for ch in FORBIDDEN:
        assert ch not in plain, f"{ch!r} reached the terminal: {plain!r}"
    assert "\x1b]8;" not in text  # no hyperlink
    return plain


@pytest.mark.slow
def test_train_prints_hostile_names_literally(tmp_path: Path) -> None:
    """`tunescope check` and `train` of a tiny model whose directory, run name and class names
    are hostile: check's tables; train's start line, evaluation lines, per-class table, summary."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "finetune"))
    from tinydata import make_rows, save_tiny_bert, write_csv

    model = save_tiny_bert(tmp_path / "tiny[bold]bert")
    labels = {"sport": "[red]sport", "money": "mo[/s]ney", "film": "film\x1b[2J"}
    rows = [{**r, "label": labels[r["label"]]} for r in make_rows()]
    data = write_csv(tmp_path / "topics.csv", rows)  # datasets globs paths: no brackets there
    name = "run[/s][link=https://evil.example]x[/link]"
    config = [
        f"model.name={model}",
        f"data.train_file={data}",
        "data.max_length=32",
        "data.validation_split=0.2",
        "data.test_split=0.2",
        "train.max_steps=10",
        "train.eval_every=5",
        "train.batch_size=8",
        f"train.output_dir={tmp_path / 'out'}",
    ]
    proc = _cli(tmp_path / "store", "check", *config, "--time-steps", "0")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    screen = _screen(proc)
    for text in ("config OK: ", "tiny[bold]bert", "[red]sport", "mo[/s]ney", "film\\x1b[2J"):
        assert text in screen, (text, screen)

    proc = _cli(tmp_path / "store", "train", *config, f"monitor.name={name}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    # The progress bar redraws itself: cursor hide/show, erase line, CR — Rich's, not ours.
    live = re.compile(r"\x1b\[\?25[lh]|\x1b\[2K|\x1b\[\d*A|\r")
    output = proc.stdout.decode("utf-8") + proc.stderr.decode("utf-8")
    assert "Traceback" not in output
    screen = _screen_text(live.sub("", output))
    for text in (
        "tiny[bold]bert",
        "[red]sport",
        "mo[/s]ney",
        "film\\x1b[2J",
        f"run {name}",
        f"tunescope diagnose {name}",
    ):
        assert text in screen, (text, screen)


def test_export_to_a_terminal_shows_keys_literally_and_a_pipe_gets_every_byte(
    tmp_path: Path,
) -> None:
    """Metric keys may hold C1 controls and bidi overrides (log() refuses only C0 and DEL)."""
    key = "eval/a\x9bb\u202ec"
    store = tmp_path / "store"
    with tunescope.init("p", name="keys", store=store, mode=None) as run:
        run.log({key: 1.0}, step=0)
    env = {**os.environ, "TUNESCOPE_STORE": str(store), "PYTHONIOENCODING": "utf-8"}
    argv = [sys.executable, "-m", "tunescope", "export", "keys"]
    master, slave = os.openpty()
    try:
        proc = subprocess.run(argv, stdout=slave, stderr=subprocess.PIPE, env=env, timeout=120)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end is closed and everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    shown = b"".join(chunks).decode("utf-8")
    assert "eval/a\\x9bb\\u202ec" in shown
    assert "\x9b" not in shown and "\u202e" not in shown

    piped = subprocess.run(argv, capture_output=True, env=env, timeout=120)
    assert piped.returncode == 0
    assert f"0,{key},1.0,".encode() in piped.stdout  # a data file keeps the key exactly
