"""The whole flow a new user follows, in headless Chromium against `streamlit run app.py`.

A temporary project home (data/ and MLflow store) is used. Screenshots of every step are written to
test-artifacts/browser/ when the test fails (and always when GENESIS_KEEP_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import CHROMIUM_ARGS, ROOT, assert_no_exception_box, browser_page, require_chromium, streamlit_app

from genesis import live
from genesis.launcher import form_label

ARTIFACTS = ROOT / "test-artifacts" / "browser"
pytestmark = [pytest.mark.browser]
TIMEOUT_MS = 120_000
SLOW_MS = 300_000  # generation + reference simulation, or inpainting, on a loaded 2-core machine


@pytest.fixture()
def chromium() -> Path:
    """Debian's chromium; missing: skip, or fail under GENESIS_REQUIRE_SHARED=1 (CI)."""
    return require_chromium()


@pytest.fixture()
def server(tmp_path):
    """`streamlit run app.py` on a free port with a fresh project home; yields (base url, home)."""
    home = tmp_path / "home"
    home.mkdir()
    # a 1 s live refresh: the live curve must be caught while the short training run is still RUNNING
    env = {"GENESIS_DEMO_EVENTS": "300", live.REFRESH_ENV: "1"}
    with streamlit_app(home, tmp_path / "streamlit.log", env) as base:
        yield base, home


class Steps:
    """Names each step, screenshots it, and keeps the shots when the test fails."""

    def __init__(self, page, folder: Path) -> None:
        self.page, self.folder, self.n, self.checked = page, folder, 0, []
        folder.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str, check: bool = True) -> None:
        """Screenshot the step and (unless check=False) assert that no exception box is on the page."""
        self.n += 1
        self.page.screenshot(path=str(self.folder / f"{self.n:02d}-{name}.png"), full_page=True)
        if check:
            assert_no_exception_box(self.page, name)
            self.checked.append(name)

    def keep(self, target: Path, failed: bool) -> None:
        """After a failure (or always with GENESIS_KEEP_SCREENSHOTS=1): a last shot, then all shots to target."""
        if not failed and not os.environ.get("GENESIS_KEEP_SCREENSHOTS"):
            return
        try:
            self.shot("last-state", check=False)
        except Exception:  # the page may be gone; the earlier shots still help
            pass
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.folder, target)


def wait_text(page, text: str, timeout: int = TIMEOUT_MS) -> None:
    page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=timeout)


def goto(page, base: str, path: str) -> None:
    page.goto(f"{base}/{path}")
    page.wait_for_load_state("networkidle")


def fill_number(page, label: str, value: int, tries: int = 4) -> None:
    """Type a number and commit it. A rerun of the page may replace the input between the typing and the
    Enter (Playwright then waits on a detached element): type it again into the new one."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        box = page.get_by_label(label, exact=True).first
        try:
            box.fill(str(value), timeout=TIMEOUT_MS // tries)
            box.press("Enter", timeout=TIMEOUT_MS // tries)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def click_tab(page, name: str) -> None:
    """Click a tab by its label; Streamlit keeps stale (disabled) tabs of the previous run for a moment."""
    tab = page.locator("[data-testid='stTab']:not([aria-disabled='true'])").filter(has_text=name).first
    tab.click()


def max_scenes(page) -> int:
    """Largest number of 3D scenes in any Plotly chart on the page."""
    return page.evaluate("""() => Math.max(0, ...Array.from(document.querySelectorAll('.js-plotly-plot'))
        .map(el => Object.keys(el._fullLayout || {}).filter(k => /^scene\\d*$/.test(k)).length))""")


def wait_runs_ended(home: Path, expected: int, timeout_s: float = 300) -> None:
    """Poll the run's own MLflow store (what the page shows) until `expected` runs exist and none runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        exp = client.get_experiment_by_name("genesis")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if len(runs) >= expected and all(r.info.status != "RUNNING" for r in runs):
            assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
            return
        time.sleep(1)
    raise AssertionError("the runs did not end in time")


def test_new_user_flow(chromium, server, tmp_path):
    from playwright.sync_api import sync_playwright

    base, home = server
    shots = tmp_path / "shots"
    ok = False
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(TIMEOUT_MS)
        steps = Steps(page, shots)
        try:
            run_flow(page, base, home, steps, tmp_path)
            assert set(steps.checked) >= {"home", "data-3d", "train-live", "train-finished", "flow-launched",
                                          "runs-compare", "checkpoint-normalization", "sample", "inpaint"}, steps.checked
            ok = True
        finally:
            steps.keep(ARTIFACTS, failed=not ok)
            browser.close()


def click_until_download(page, button, target: Path, tries: int = 3) -> None:
    """Click a download button until the browser starts a download (a click that lands while Streamlit is
    still re-rendering the page can be lost); fails after `tries` clicks."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(1, tries + 1):
        try:
            with page.expect_download(timeout=TIMEOUT_MS / tries) as info:
                button.click()
            info.value.save_as(target)
            return
        except PlaywrightTimeout:
            if attempt == tries:
                raise


def run_flow(page, base: str, home: Path, steps: Steps, tmp_path: Path) -> None:
    from genesis.data import schema

    # 1. Home: create the demo dataset
    goto(page, base, "")
    wait_text(page, "Create demo dataset")
    steps.shot("home")
    page.get_by_role("button", name="Create demo dataset").click()
    wait_text(page, "data/demo.h5")
    assert (home / "data" / "demo.h5").is_file()

    # 2. Data: an event in 3D
    goto(page, base, "data")
    wait_text(page, "Hit DOMs / event")
    page.locator(".js-plotly-plot").first.wait_for()
    assert max_scenes(page) >= 1
    steps.shot("data-3d")

    # 3. Train: a tiny diffusion run, its live curve and its end
    goto(page, base, "train")
    click_tab(page, "Train")
    # 15 epochs of 8 steps: ~25 s of training on 2 cores, many 1 s refreshes (5 epochs lasted ~4 s, less
    # than the default 5 s refresh, so on a fast machine the run could end before its curve was drawn)
    fill_number(page, form_label("train.epochs"), 15)
    fill_number(page, form_label("train.log_every"), 2)
    page.get_by_role("button", name="Launch").click()
    wait_text(page, "Launched run")
    page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT_MS)  # live loss curve of the active run
    steps.shot("train-live")
    wait_runs_ended(home, 1)
    page.reload()
    wait_text(page, "FINISHED")
    steps.shot("train-finished")

    # 4. A second run (a flow, needed for inpainting); the reload above shows a fresh launch form
    page.get_by_text("Normalizing flow").click()
    wait_text(page, form_label("flow.num_couplings"))
    click_tab(page, "Train")
    fill_number(page, form_label("train.epochs"), 2)
    page.get_by_role("button", name="Launch").click()
    wait_text(page, "Launched run")
    steps.shot("flow-launched")
    wait_runs_ended(home, 2)

    # 5. Runs: compare the two
    goto(page, base, "runs")
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.wait_for()
    time.sleep(1)
    box = grid.bounding_box()
    for row in (0, 1):  # the selection checkboxes sit in the first column of the canvas grid
        page.mouse.click(box["x"] + 18, box["y"] + 35 * (row + 1) + 17)
        time.sleep(1)
    wait_text(page, "Compare 2 runs")
    page.locator(".js-plotly-plot").first.wait_for()
    steps.shot("runs-compare")

    # 6. Checkpoints: normalization metadata visible
    goto(page, base, "checkpoints")
    click_tab(page, "Normalization")
    wait_text(page, "Signal and geometry")
    # the table is drawn on a canvas; its accessible cells carry the values
    page.locator("[role='gridcell']", has_text="log1p").first.wait_for(state="attached")
    steps.shot("checkpoint-normalization")

    # 7. Sample: 3 events, download the HDF5 and validate it
    goto(page, base, "sample")
    wait_text(page, "Labels from")
    fill_number(page, "Number of events", 3)
    fill_number(page, "Steps", 5)
    page.get_by_role("button", name="Generate").click()
    download_button = page.get_by_role("button", name="Download HDF5")
    download_button.wait_for(timeout=TIMEOUT_MS)
    target = tmp_path / "downloaded.h5"
    click_until_download(page, download_button, target)
    summary = schema.validate(target)
    assert summary.n_events == 3 and summary.n_doms == 5160
    wait_text(page, "median per event")  # generated vs simulated next to the 3D views
    steps.shot("sample")

    # 8. Inpaint: mask string 36 with the flow and see the three views
    goto(page, base, "inpaint")
    wait_text(page, "Strings")
    strings = page.get_by_label("Strings (or click / box-select them in the top view)", exact=False).first
    strings.click()
    page.keyboard.type("36")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    fill_number(page, "Optimisation steps", 10)
    page.get_by_role("button", name="Inpaint").click()
    deadline = time.time() + 240
    while max_scenes(page) < 3 and time.time() < deadline:
        time.sleep(1)
    assert max_scenes(page) >= 3, "no three linked 3D views"
    wait_text(page, "Verdict: flow-map")
    steps.shot("inpaint")


# --- issue 15: quality signals on untrained models, without training in the browser ---------------------
def untrained_checkpoints(home: Path, data: Path) -> None:
    """An untrained diffusion and an untrained flow of the shipped tiny presets, kept as uploads."""
    import torch

    from genesis import checkpoint, config
    from genesis.data import schema

    geometry = schema.read_geometry(data)
    uploads = home / "mlruns" / "uploads"
    uploads.mkdir(parents=True)
    for kind, preset in (("diffusion", "tiny.yaml"), ("flow", "flow_tiny.yaml")):
        cfg = config.load(ROOT / "configs" / preset, [f"data.path={data}"])
        torch.manual_seed(0)
        model = checkpoint.build_model(cfg, geometry.n_doms, cfg.data.normalization)
        state = checkpoint.make_state(cfg, model, model, geometry, 0, 0, float("inf"), data={"path": str(data)})
        checkpoint.save(state, uploads / f"untrained-{kind}.pt")


@pytest.fixture()
def untrained_server(tmp_path):
    """A project home with demo data and two untrained checkpoints, and `streamlit run app.py` on it."""
    from genesis.data.simulate import simulate_to_file
    from genesis.geometry import icecube86_like

    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    data = simulate_to_file(home / "data" / "demo.h5", 100, icecube86_like(), seed=3)
    untrained_checkpoints(home, data)
    with streamlit_app(home, tmp_path / "streamlit.log", timeout=300) as base:  # slow to start on a busy machine
        yield base, home


def choose_option(page, label: str, text: str) -> None:
    """Open the selectbox labelled `label` and click its option containing `text`."""
    page.get_by_role("combobox", name=label).first.click()
    page.get_by_role("option").filter(has_text=text).first.click()


def assert_selected(page, label: str, text: str) -> None:
    """The selectbox labelled `label` shows the option `text` (its combobox input holds it)."""
    from playwright.sync_api import expect

    expect(page.get_by_role("combobox", name=label).first).to_have_value(text, timeout=TIMEOUT_MS)


def test_fresh_clone_preselects_the_shipped_demo_models(chromium, server, tmp_path):
    """On a fresh clone (no runs, no data) Sample starts on the shipped demo diffusion model, and on the flow
    one when the flow is chosen; Inpaint starts on the shipped demo flow."""
    base, _ = server
    ok = False
    with browser_page(SLOW_MS) as page:
        steps = Steps(page, tmp_path / "shots")
        try:
            goto(page, base, "sample")
            wait_text(page, "Expected time")  # the page ran through, warm-up included
            assert_selected(page, "Checkpoint", "demo · demo-diffusion.pt (configs/tiny.yaml, shipped) · diffusion")
            steps.shot("sample-demo-preselected")
            page.get_by_text("Normalizing flow").click()
            wait_text(page, "A flow samples in one pass")
            assert_selected(page, "Checkpoint", "demo · demo-flow.pt (configs/flow_tiny.yaml, shipped) · flow")
            goto(page, base, "inpaint")
            assert_selected(page, "Checkpoint", "demo · demo-flow.pt (configs/flow_tiny.yaml, shipped) · flow")
            steps.shot("inpaint-demo-preselected")
            ok = True
        finally:
            steps.keep(ARTIFACTS.parent / "browser-fresh-clone", failed=not ok)


def pick_string(page, string: int) -> None:
    box = page.get_by_label("Strings (or click / box-select them in the top view)", exact=False).first
    box.click()
    page.keyboard.type(str(string))
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")


def test_quality_banner_and_inpaint_verdict(chromium, untrained_server, tmp_path):
    """Sample's quality banner on an untrained model; Inpaint's expected time and verdict line."""
    base, _ = untrained_server
    ok = False
    with browser_page(TIMEOUT_MS) as page:
        steps = Steps(page, tmp_path / "shots")
        try:
            goto(page, base, "sample")
            wait_text(page, "demo-diffusion.pt", SLOW_MS)  # the picker starts on the shipped demo; first run is slow
            choose_option(page, "Checkpoint", "untrained-diffusion.pt")
            wait_text(page, "mlruns/uploads/untrained-diffusion.pt", SLOW_MS)
            fill_number(page, "Number of events", 2)
            fill_number(page, "Steps", 3)
            page.get_by_role("button", name="Generate").click()
            wait_text(page, "far from simulated ones at the same labels", SLOW_MS)
            wait_text(page, "median per event")
            steps.shot("sample-quality-banner")

            goto(page, base, "inpaint")
            wait_text(page, "Choose what to mask", SLOW_MS)  # a hint, not a "selects no DOM" warning
            assert not page.get_by_text("selects no DOM").count()
            pick_string(page, 36)
            wait_text(page, "60 of 5,160 DOMs masked")
            fill_number(page, "Optimisation steps", 5)
            fill_number(page, "Restarts", 1)
            wait_text(page, "5 steps x 1 restarts", SLOW_MS)  # the expected time, shown before it starts
            page.get_by_role("button", name="Inpaint").click()
            wait_text(page, "Verdict: flow-map", SLOW_MS)
            assert page.get_by_text("zero fill", exact=False).count()
            steps.shot("inpaint-verdict")
            ok = True
        finally:
            steps.keep(ARTIFACTS.parent / "browser-quality", failed=not ok)
