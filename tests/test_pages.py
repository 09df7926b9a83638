"""AppTest of the dashboard pages against a temporary project home (data/ and MLflow store)."""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from genesis import tracking

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture()
def home_with_data(home, small_data):
    (home / "data").mkdir(exist_ok=True)
    (home / "data" / "demo.h5").write_bytes(small_data.read_bytes())
    return home


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=120)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_app_shell_runs(home):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert_clean(at)
    assert any("GENESIS" in t.value for t in at.title)


def test_home_creates_demo_dataset(home, monkeypatch):

    at = page("home").run()
    assert_clean(at)
    assert any("No runs yet" in i.value for i in at.info)
    button = next(b for b in at.button if b.label == "Create demo dataset")
    at = button.click().run()
    assert_clean(at)
    assert (home / "data" / "demo.h5").is_file()
    at = page("home").run()
    assert not [b for b in at.button if b.label == "Create demo dataset"]


def test_data_page_empty_and_with_file(home_with_data):
    at = page("data").run()
    assert_clean(at)
    assert any(m.label == "Events" and m.value == "400" for m in at.metric)
    at.number_input[0].set_value(5).run()
    assert_clean(at)


def test_train_page_launch_creates_one_run(home_with_data):
    at = page("train").run()
    assert_clean(at)
    for ni in at.number_input:
        if ni.label == "epochs":
            ni.set_value(1)
        if ni.label == "max_steps":
            ni.set_value(3)
        if ni.label == "hidden_size":
            ni.set_value(32)
    at = _submit(at)
    assert_clean(at)
    assert any("Launched run" in s.value for s in at.success), [e.value for e in at.error]
    at = _submit(at) if [b for b in at.button if b.label == "Launch"] else at.run()  # a rerun launches nothing
    store = tracking.Store.default()
    frame, _ = store.search()
    assert len(frame) == 1
    run_id = frame.iloc[0]["run_id"]
    deadline = time.time() + 180
    while store.run(run_id).info.status == "RUNNING" and time.time() < deadline:
        time.sleep(1)
    assert store.run(run_id).info.status == "FINISHED", store.run(run_id).data.tags


def _submit(at: AppTest) -> AppTest:
    launch = next(b for b in at.button if b.label == "Launch")
    return launch.click().run()


def test_train_page_invalid_config_creates_no_run(home_with_data):
    at = page("train").run()
    for ta in at.text_area:
        ta.set_value("time_transform: sqrt")
    at = _submit(at)
    assert_clean(at)
    assert any("Not launched" in e.value for e in at.error)
    frame, _ = tracking.Store.default().search()
    assert frame.empty
