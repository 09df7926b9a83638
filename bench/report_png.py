"""A figure of an evaluation report (the HTML that `genesis evaluate --html` and bench/scorecard.py write)
as a PNG, for docs/: the report is opened in headless Chromium and one figure is screenshotted, so the
picture is exactly what the report shows.

    python bench/report_png.py data/scorecard_cpu/report_abl-DDIM_100_eta_1_preset.html \\
        docs/feature-histograms.png [--figure 0]
    python bench/report_png.py REPORT.html docs/response-curves.png --title "Response to the labels"
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def screenshot_figure(report: Path, out: Path, figure: int = 0, width: int = 1400, title: str | None = None) -> Path:
    """Write figure number `figure` (0 = the high-level feature histograms) of `report` to `out`, or with
    `title` the first figure after the heading of that text (e.g. "Response to the labels")."""
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(report.resolve().as_uri())
        if title:
            graph = page.locator(f"xpath=(//h2[normalize-space()={_xpath_literal(title)}]"
                                 "/following::div[contains(@class, 'plotly-graph-div')])[1]")
        else:
            graph = page.locator(".plotly-graph-div").nth(figure)
        graph.wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(1000)  # let Plotly finish drawing
        out.parent.mkdir(parents=True, exist_ok=True)
        graph.screenshot(path=str(out))
        browser.close()
    return out


def _xpath_literal(text: str) -> str:
    """text as an XPath string literal (XPath 1.0 has no escapes: quote with the quote it lacks)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path, help="evaluation report HTML")
    p.add_argument("out", type=Path, help="PNG to write")
    p.add_argument("--figure", type=int, default=0, help="which figure of the report (0 = feature histograms)")
    p.add_argument("--title", default=None,
                   help="the figure under this heading instead (e.g. 'Response to the labels')")
    args = p.parse_args()
    if not args.report.is_file():
        raise SystemExit(f"{args.report}: no such report; run bench/scorecard.py or genesis evaluate --html first")
    print(f"wrote {screenshot_figure(args.report, args.out, args.figure, title=args.title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
