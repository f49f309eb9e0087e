"""Time to draw a run page with 20 charts in headless Chromium.

    nice -n 10 .venv/bin/python bench/ui/bench_page.py [--repeat 7]

A real `tunescope ui` process serves a run with 20 metrics of 10,000 points each (and three
findings drawn on every chart); Debian's Chromium (Playwright, `executable_path`) opens the run
page. The page records `performance.now()` when every chart has been drawn
(`body[data-drawn-ms]`, measured from navigation start, so it includes fetching and parsing
plotly.js, the API calls and plotly's drawing). The first navigation of a fresh browser is
reported apart (cold: no compiled-code cache); the median is over the --repeat later ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from stores import page_store

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "ui"))
from ui_server import serve

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TARGET_MS = 1_500.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    store = page_store(20, 10_000)
    with serve(store) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        times = []
        for _ in range(args.repeat + 1):
            page.goto(url + "runs/page-20")
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            charts = page.locator(".chart.js-plotly-plot").count()
            times.append(float(page.get_attribute("body", "data-drawn-ms") or "nan"))
        browser.close()
    cold, warm = times[0], statistics.median(times[1:])
    print("| page | charts | cold first load ms | median ms (warm) | target ms | ok |")
    print("|---|---:|---:|---:|---:|---|")
    ok = "yes" if warm <= TARGET_MS else "NO"
    print(
        f"| run page, 20 metrics x 10,000 points | {charts} | {cold:.0f} | {warm:.0f} | "
        f"{TARGET_MS:.0f} | {ok} |"
    )


if __name__ == "__main__":
    main()
