"""A figure of an evaluation report (the HTML that `genesis evaluate --html` and bench/scorecard.py write)
as a PNG, for docs/: the report is opened in headless Chromium and one figure is screenshotted, so the
picture is exactly what the report shows.

    python bench/report_png.py data/scorecard_cpu/report_abl-DDIM_100_eta_1_preset.html \\
        docs/feature-histograms.png [--figure 0]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def screenshot_figure(report: Path, out: Path, figure: int = 0, width: int = 1400) -> Path:
    """Write figure number `figure` (0 = the high-level feature histograms) of `report` to `out`."""
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(report.resolve().as_uri())
        graphs = page.locator(".plotly-graph-div")
        graphs.nth(figure).wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(1000)  # let Plotly finish drawing
        out.parent.mkdir(parents=True, exist_ok=True)
        graphs.nth(figure).screenshot(path=str(out))
        browser.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path, help="evaluation report HTML")
    p.add_argument("out", type=Path, help="PNG to write")
    p.add_argument("--figure", type=int, default=0, help="which figure of the report (0 = feature histograms)")
    args = p.parse_args()
    if not args.report.is_file():
        raise SystemExit(f"{args.report}: no such report; run bench/scorecard.py or genesis evaluate --html first")
    print(f"wrote {screenshot_figure(args.report, args.out, args.figure)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
