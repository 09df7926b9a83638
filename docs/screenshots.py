"""Screenshots for the README, taken from the real app in headless Chromium.

    python docs/screenshots.py            # docs/sample-demo.png: the Sample page on a fresh home (demo model)
    GENESIS_KEEP_SCREENSHOTS=1 .venv/bin/pytest tests/test_browser.py -k new_user_flow
                                          # every step of the new-user flow, kept in test-artifacts/browser
                                          # (train-live, runs-compare, ...), copied from there into docs/

The Sample page shot starts the dashboard on an empty GENESIS_HOME, so the only checkpoint is the shipped
demo diffusion model, exactly what a new user sees after `make run`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM_ARGS, require_chromium, streamlit_app  # noqa: E402

TIMEOUT_MS = 300_000


def sample_page(out: Path, events: int = 4) -> Path:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="genesis-shots-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        with streamlit_app(home, Path(tmp) / "streamlit.log", timeout=300) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(require_chromium()), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1750})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{base}/sample")
            page.get_by_text("Labels from").first.wait_for()
            box = page.get_by_label("Number of events", exact=True).first
            box.fill(str(events))
            box.press("Enter")
            page.wait_for_timeout(1500)
            page.get_by_role("button", name="Generate").click()
            page.get_by_text("median per event").first.wait_for()
            page.wait_for_timeout(2000)  # let Plotly draw the 3D views
            page.screenshot(path=str(out))  # a tall viewport: Streamlit scrolls inside the page, not the window
            browser.close()
    return out


if __name__ == "__main__":
    print(f"wrote {sample_page(ROOT / 'docs' / 'sample-demo.png')}")
