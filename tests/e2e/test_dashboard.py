"""The dashboard in real headless Chromium (Debian's, driven by Playwright), against a real
`tunescope ui` process and a store that another process writes while the page is open."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ui"))
import ui_stores
from ui_server import serve

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
OUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(
            f"the browser tests need Debian's Chromium at {CHROMIUM}; install it with "
            "`bash scripts/ensure-chromium.sh` (run by `make install`)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("e2e-store")
    return {
        "path": path,
        "spiky": ui_stores.spiky(path),
        "annotated": ui_stores.annotated(path),
    }


@pytest.fixture(scope="module")
def url(store: dict[str, Any]) -> Iterator[str]:
    with serve(store["path"]) as (u, _):
        yield u.rstrip("/")


@pytest.fixture()
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page that fails the test on any script error, console error or dialog (alert)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))

    def dialog(d: Any) -> None:
        problems.append(f"dialog opened: {d.message}")
        d.dismiss()

    pg.on("dialog", dialog)
    yield pg
    OUT.mkdir(exist_ok=True)
    pg.screenshot(path=str(OUT / f"dashboard-{request.node.name}.png"), full_page=True)
    ctx.close()
    assert not problems, problems


def _ready(pg: Any) -> None:
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)


def test_runs_list_shows_hostile_name_as_text(page: Any, url: str) -> None:
    page.goto(url + "/")
    _ready(page)
    link = page.locator("td.name a", has_text="onerror")
    assert link.inner_text() == ui_stores.XSS
    assert page.locator("img").count() == 0  # the name was never parsed as HTML
    page.fill("#search", "spik")
    assert page.locator("#rows tr").count() == 1
    assert page.inner_text("#rows td.name") == "spiky"


def _trace_points(page: Any, key: str, meta: str) -> Any:
    """The SVG points of the trace tagged `meta` in the chart of `key`."""
    index = page.evaluate(
        """([key, meta]) => {
            const gd = document.querySelector(`.chart[data-key="${CSS.escape(key)}"]`);
            return gd.data.findIndex((t) => t.meta === meta);
        }""",
        [key, meta],
    )
    assert index >= 0, f"no {meta} trace on {key}"
    return (
        page.locator(f'.chart[data-key="{key}"] .scatterlayer .trace')
        .nth(index)
        .locator("path.point")
    )


def test_run_page_finding_marker_hover_and_escaping(
    page: Any, url: str, store: dict[str, Any]
) -> None:
    page.goto(f"{url}/runs/{store['annotated']}")
    _ready(page)
    assert page.inner_text("#title") == ui_stores.XSS
    assert page.locator("img").count() == 0
    # the metric named like an <img> tag has a chart whose title is that text
    key = f"train/{ui_stores.XSS}"
    title = page.locator(f'.chart[data-key="{key}"] .gtitle')
    assert title.text_content() == key
    # hover the critical finding's marker: its message appears in the hover box
    markers = _trace_points(page, "train/loss", "findings")
    assert markers.count() == 2
    markers.first.hover(force=True)
    page.wait_for_selector(".chart[data-key='train/loss'] .hoverlayer .hovertext", timeout=5_000)
    hover = page.locator(".chart[data-key='train/loss'] .hoverlayer").text_content()
    assert "eval/loss rose 20% while train/loss fell" in hover and "overfitting" in hover
    # timeline, config and confusion matrix show hostile strings as text
    assert "overfitting" in page.inner_text("#timeline")
    assert ui_stores.XSS in page.inner_text("#config")
    assert ui_stores.XSS in page.locator("#confusion").text_content()


def test_spike_nan_inf_marked_and_zoom_refetches(
    page: Any, url: str, store: dict[str, Any]
) -> None:
    page.goto(f"{url}/runs/{store['spiky']}")
    _ready(page)
    spikes = page.evaluate(
        """() => document.querySelector('.chart[data-key="train/loss"]').data
              .filter((t) => t.meta === 'spikes').map((t) => [t.x, t.y])"""
    )
    assert spikes == [[[3217], [40]]]
    bad = page.evaluate(
        """() => document.querySelector('.chart[data-key="train/loss"]').data
              .filter((t) => t.meta === 'nonfinite').map((t) => t.x)"""
    )
    assert bad == [[4000, 4500]]
    page.evaluate(
        """() => Plotly.relayout(document.querySelector('.chart[data-key="train/loss"]'),
              {'xaxis.range[0]': 3200, 'xaxis.range[1]': 3240})"""
    )
    page.wait_for_function(
        """() => Number(document.querySelector('.chart[data-key="train/loss"]').dataset.points) <= 41""",
        timeout=10_000,
    )
    steps = page.evaluate(
        """() => document.querySelector('.chart[data-key="train/loss"]').data
              .find((t) => t.meta === 'line').x"""
    )
    assert steps[0] == 3200 and steps[-1] == 3240 and 3217 in steps  # one bucket per step now


LOGGER = textwrap.dedent(
    """
    import sys, time, tunescope
    run = tunescope.init("e2e", name="live", store=sys.argv[1])
    for step in range(400):  # bounded: about 40 s at most
        run.log({"train/loss": 1.0 / (step + 1)}, step=step)
        run.flush()
        time.sleep(0.1)
    run.finish()
    """
)


def test_live_curve_grows_without_reload(page: Any, url: str, store: dict[str, Any]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", LOGGER, str(store["path"])])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            res = httpx.get(f"{url}/api/runs/live/keys")
            if res.status_code == 200 and res.json()["keys"]:
                break
            time.sleep(0.2)
        page.goto(f"{url}/runs/live")
        _ready(page)
        page.evaluate("window.__sameDocument = true")
        chart = ".chart[data-key='train/loss']"
        before = int(page.get_attribute(chart, "data-points"))
        page.wait_for_function(
            f"""() => Number(document.querySelector("{chart}").dataset.points) >= {before + 10}""",
            timeout=20_000,
        )
        drawn = page.evaluate(
            f"""() => document.querySelector("{chart}").data.find((t) => t.meta === 'line').x.length"""
        )
        assert drawn >= before + 10  # the drawn curve grew, not only a counter
        assert page.evaluate("window.__sameDocument") is True  # no reload happened
        assert page.inner_text(".summary .status") == "running"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_compare_two_runs(page: Any, url: str, store: dict[str, Any]) -> None:
    page.goto(url + "/")
    _ready(page)
    for rid in (store["spiky"], store["annotated"]):
        page.check(f"#rows tr[data-id='{rid}'] input[type=checkbox]")
    page.click("#compare")
    _ready(page)
    legend = page.locator("#chart .legend").text_content()
    assert "spiky" in legend and ui_stores.XSS in legend
    assert page.locator("img").count() == 0
    assert "lr" in page.inner_text("#diff")


def test_smoothing_is_density_aware_and_can_be_switched_off(
    page: Any, url: str, store: dict[str, Any]
) -> None:
    page.goto(f"{url}/runs/{store['spiky']}")
    _ready(page)
    got = page.evaluate(
        """() => {
            // the same step from 0 to 1 at step 500, logged every step and every 10th step
            const a = [...Array(1000).keys()], b = a.filter((s) => s % 10 === 0);
            const f = (s) => (s < 500 ? 0 : 1);
            const sa = TS.ema(a, a.map(f), 0.9, 1000), sb = TS.ema(b, b.map(f), 0.9, 1000);
            const off = TS.ema(a, a.map(f), 0, 1000);
            const withNaN = TS.ema([0, 1, 2], [1, null, 1], 0.9, 1000);
            // TensorBoard's EMA decays per point, not per step: the sparse line lags far behind
            const perPoint = (ys) => { let v = 0, w = 0;
                return ys.map((y) => { v = 0.9 * v + 0.1 * y; w = 0.9 * w + 0.1; return v / w; }); };
            return { dense: sa[520], sparse: sb[52], tbDense: perPoint(a.map(f))[520],
                     tbSparse: perPoint(b.map(f))[52], offSame: off.every((v, i) => v === f(i)),
                     withNaN };
        }"""
    )
    # 20 steps after the jump both lines have moved alike, whatever their point density (the
    # sparse line's first 1 stands for the 10 steps before it, hence a small difference) ...
    assert abs(got["dense"] - got["sparse"]) < 0.1, got
    assert 0.85 < got["dense"] < 0.95
    # ... while a per-point EMA puts them far apart
    assert abs(got["tbDense"] - got["tbSparse"]) > 0.5, got
    assert got["offSame"] is True
    assert got["withNaN"] == [1, None, 1]
    # the checkbox switches smoothing off: no smoothed trace is drawn
    page.uncheck("#smooth")
    metas = page.evaluate(
        """() => document.querySelector('.chart[data-key="train/loss"]').data.map((t) => t.meta)"""
    )
    assert "smoothed" not in metas and "line" in metas
    page.check("#smooth")
