"""The Train and Runs pages as a newcomer meets them, in headless Chromium against `streamlit run app.py`:
the dataset default after an upload, a failed run's reason in red on Train and on Runs, and a running
flow's live loss chart with its (negative) NLL points, stopped from the page.

Screenshots of the steps go to test-artifacts/browser-train/ when the test fails (always with
GENESIS_KEEP_SCREENSHOTS=1).
"""

from __future__ import annotations


import pytest
from playwright.sync_api import expect

from conftest import ROOT, TINY_FLOW, browser_page, require_chromium, run_to_end, streamlit_app, tiny_cfg
from genesis import config, launcher, tracking
from test_browser import Steps, goto, wait_text

ARTIFACTS = ROOT / "test-artifacts" / "browser-train"
pytestmark = [pytest.mark.browser]
ERROR_BOX = "[data-testid='stAlertContentError']"
# the live chart (Plotly keeps its decoded traces on the chart's element) has points and at least one is negative
NEGATIVE_POINTS = """() => [...document.querySelectorAll('.js-plotly-plot')].some(
    g => (g._fullData || []).some(t => Array.from(t.y || []).some(y => y < 0)))"""


@pytest.fixture()
def project(tmp_path, small_data, geometry, monkeypatch):
    """A project home with data/demo.h5 (400 events) and a run that FAILED in a real trainer subprocess,
    plus a 5-event file to upload."""
    from genesis.data.simulate import simulate_to_file

    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "demo.h5").write_bytes(small_data.read_bytes())
    monkeypatch.setenv("GENESIS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tracking.Store.default()
    failed = launcher.launch(tiny_cfg(home, "train.fail_at_step=2", "train.log_every=1", "name=doomed"), store=store)
    assert run_to_end(store, failed).info.status == "FAILED", launcher.log_tail(store, failed, 30)
    return home, simulate_to_file(tmp_path / "upload.h5", 5, geometry, seed=5)


def red(page, text: str) -> None:
    """`text` inside a visible red st.error box (not folded in a collapsed expander)."""
    page.locator(ERROR_BOX, has_text=text).first.wait_for(state="visible")


def test_train_defaults_failure_reason_and_flow_live_chart(project, tmp_path):
    require_chromium()
    home, upload = project
    shots = tmp_path / "shots"
    ok = False
    with streamlit_app(home, tmp_path / "streamlit.log", {"GENESIS_LIVE_REFRESH_S": "2"}) as base, \
            browser_page() as page:
        steps = Steps(page, shots)
        store, running = tracking.Store.default(), None
        try:
            # 1. Data: upload a 5-event file; the Data page moves its picker to it
            goto(page, base, "data")
            page.get_by_text("Upload an HDF5 file").click()
            page.locator("[data-testid='stFileUploader'] input[type='file']").first.set_input_files(str(upload))
            page.get_by_role("button", name="Validate and keep").click()
            wait_text(page, "Kept data/upload.h5")
            steps.shot("data-upload")

            # 2. Train: still the preset's dataset, and the failed run's reason in red
            goto(page, base, "train")
            dataset = page.locator("[data-testid='stSelectbox']").filter(has_text="Dataset").first
            # the chosen value lives in the combobox's accessible value, not in the box's text
            expect(dataset).to_match_aria_snapshot('- combobox "Dataset": data/demo.h5', timeout=120_000)
            # opened by its URL, the page still has the app's menu (not one entry per file of a pages/ folder)
            expect(page.locator("[data-testid='stSidebarNav']")).to_contain_text("Checkpoints")
            expect(page.locator("[data-testid='stSidebarNav']")).not_to_contain_text("shared")
            red(page, "non-finite loss at step 2")
            steps.shot("train-default-and-failure")

            # 3. Runs: the newest run failed, its reason in red without selecting it
            goto(page, base, "runs")
            red(page, "non-finite loss at step 2")
            steps.shot("runs-failure")

            # 4. Train: a running flow's live chart gets its NLL points from the log; Stop ends the run
            running = launcher.launch(config.load(ROOT / "configs" / "flow_tiny.yaml", [
                f"data.path={home}/data/demo.h5", *TINY_FLOW, "train.max_steps=100000", "train.epochs=10000", "train.log_every=1",
                "train.warmup_steps=2", "name=watched-flow"]), store=store)
            goto(page, base, "train")
            page.wait_for_function(NEGATIVE_POINTS, timeout=600_000)  # the flow's NLL falls below 0 early
            page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
            steps.shot("train-flow-live")
            page.get_by_role("button", name="Stop").first.click()
            wait_text(page, "No active runs")
            assert store.run(running).info.status == "KILLED"
            ok = True
        finally:
            steps.keep(ARTIFACTS, failed=not ok)
            if running and store.run(running).info.status == "RUNNING":
                launcher.stop(running, timeout=20, store=store)
