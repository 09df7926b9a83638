"""Train page defaults that cannot surprise: the preset's dataset (not the newest upload), checks before a
launch, a failed run's reason in red, a form without debug fields or snake_case labels (AppTest, real
MLflow SQLite store, a real trainer subprocess for the failed run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, run_to_end, tiny_cfg
from genesis import config, launcher, tracking


@pytest.fixture(scope="module")
def five_events(tmp_path_factory, geometry) -> Path:
    from genesis.data.simulate import simulate_to_file

    return simulate_to_file(tmp_path_factory.mktemp("five") / "five.h5", 5, geometry, seed=5)


@pytest.fixture()
def uploaded(home, five_events) -> Path:
    """home/data/demo.h5 plus a newer 5-event file, as the Data page's upload leaves it."""
    target = home / "data" / "upload.h5"
    target.write_bytes(five_events.read_bytes())
    return target


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / "train.py"), default_timeout=900)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def widget(at: AppTest, kind: str, label: str):
    return next(w for w in at.get(kind) if w.label == label)


def launch(at: AppTest) -> AppTest:
    return next(b for b in at.button if b.label == "Launch").click().run()


def test_default_dataset(home, uploaded):
    files = [uploaded, home / "data" / "demo.h5"]  # newest first, as the pages list them
    assert launcher.default_dataset("data/demo.h5", files) == home / "data" / "demo.h5"
    assert launcher.default_dataset(str(uploaded), files) == uploaded  # a preset naming a file gets it
    assert launcher.default_dataset("data/missing.h5", files) == home / "data" / "demo.h5"
    assert launcher.default_dataset("data/missing.h5", [uploaded]) == uploaded
    assert launcher.default_dataset("data/demo.h5", []) is None


def test_dataset_defaults_to_the_preset_after_an_upload(uploaded):
    at = page().run()
    assert_clean(at)
    dataset = widget(at, "selectbox", "Dataset")
    assert Path(dataset.value).name == "demo.h5" and "data/upload.h5" in dataset.options  # offered, not chosen
    widget(at, "radio", "Model").set_value("flow").run()
    assert Path(widget(at, "selectbox", "Dataset").value).name == "demo.h5"


def test_a_dataset_too_small_for_its_splits_is_refused_before_any_run(uploaded):
    at = page().run()
    widget(at, "selectbox", "Dataset").set_value(uploaded)
    at = launch(at)
    assert_clean(at)
    errors = " ".join(e.value for e in at.error)
    assert "Not launched" in errors and "validation split is empty" in errors and "5 events" in errors
    assert not at.success
    frame, _ = tracking.Store.default().search()
    assert frame.empty  # no run, no process


def test_a_patch_size_that_does_not_divide_the_detector_is_refused(home):
    at = page().run()
    widget(at, "number_input", "DOMs per token (patch size)").set_value(7)
    at = launch(at)
    errors = " ".join(e.value for e in at.error)
    assert "P = 5160 DOMs" in errors and "model.patch_size 7" in errors and "e.g. 6" in errors
    assert tracking.Store.default().search()[0].empty


def test_preflight(home, uploaded):
    ok = launcher.preflight(tiny_cfg(home))
    assert ok.ok and dict(ok.splits) == {"train": 320, "val": 40, "test": 40} and ok.n_doms == 5160
    assert "400 events of 5,160 DOMs" in ok.summary()
    tiny = launcher.preflight(tiny_cfg(home, f"data.path={uploaded}"))
    assert not tiny.ok and "validation split is empty" in tiny.problems[0] and "at least 10 events" in tiny.problems[0]
    flow = launcher.preflight(config.load(ROOT / "configs" / "flow_tiny.yaml", [f"data.path={home}/data/demo.h5",
                                                                                 "flow.patch_size=7"]))
    assert any("flow.patch_size 7" in p for p in flow.problems)
    assert "validation split is empty" in launcher.preflight(tiny_cfg(home, "data.max_events=4")).problems[0]
    assert launcher.preflight(tiny_cfg(home, "data.max_events=10")).ok  # 1 val event
    assert "for 2 GPUs" in launcher.preflight(tiny_cfg(home, "data.max_events=10"), gpus=2).problems[0]
    missing = launcher.preflight(tiny_cfg(home, "data.path=data/nothing.h5"))
    assert "data file not found" in missing.problems[0]
    with pytest.raises(Exception, match="validation split is empty"):
        launcher.launch(tiny_cfg(home, f"data.path={uploaded}"))
    assert tracking.Store.default().search()[0].empty


def test_form_has_human_labels_no_debug_field_and_no_amp_on_cpu(home, monkeypatch):
    at = page().run()
    assert_clean(at)
    labels = [w.label for kind in ("number_input", "selectbox", "checkbox", "text_input", "text_area")
              for w in at.get(kind)]
    assert not [label for label in labels if "_" in label], labels  # no raw snake_case keys
    assert "Epochs" in labels and "Log every (steps)" in labels and not [l for l in labels if "fail" in l.lower()]
    import torch

    if not torch.cuda.is_available():
        amp = widget(at, "checkbox", "bf16 autocast (CUDA only)")
        assert amp.value is False and amp.disabled
    assert any("Smoke test" in c.value for c in at.caption)
    assert "smoke test" in launcher.preset_label(ROOT / "configs" / "tiny.yaml")
    assert "smoke test" not in launcher.preset_label(ROOT / "configs" / "default.yaml")
    widget(at, "radio", "Model").set_value("flow").run()
    flow_labels = [w.label for w in at.number_input]
    assert "Coupling layers" in flow_labels and "Token width" not in flow_labels


def test_a_failed_runs_reason_shows_in_red(home):
    """A real trainer subprocess that fails (train.fail_at_step, a testing aid the form does not offer):
    its reason is an st.error on the Train page, outside any expander, and tops the launched run."""
    store = tracking.Store.default()
    run_id = launcher.launch(tiny_cfg(home, "train.fail_at_step=2", "train.log_every=1", "name=doomed"), store=store)
    assert run_to_end(store, run_id).info.status == "FAILED", launcher.log_tail(store, run_id, 30)
    at = page()
    at.session_state["launched"] = run_id
    at.run()
    assert_clean(at)
    reasons = [e.value for e in at.error if "non-finite loss at step 2" in e.value]
    assert len(reasons) == 2 and any(run_id in r for r in reasons) and any("doomed" in r for r in reasons)
    assert not at.success  # not "Launched run" for a run that already failed
    expander = next(e for e in at.expander if "doomed" in e.label)
    assert not [e for e in expander.error]  # the red reason is not folded inside
