"""AppTest of the dashboard pages against a temporary project home (data/ and MLflow store)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import run_to_end
from genesis import tracking
from genesis.launcher import form_label

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
    return AppTest.from_file(str(ROOT / "views" / f"{name}.py"), default_timeout=300)  # slow when the machine is busy


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
    wanted = {form_label("train.epochs"): 1, form_label("train.max_steps"): 3, form_label("model.hidden_size"): 32}
    inputs = {ni.label: ni for ni in at.number_input}
    assert set(wanted) <= set(inputs), sorted(inputs)  # a renamed field must not silently train the full preset
    for label, value in wanted.items():
        inputs[label].set_value(value)
    at = _submit(at)
    assert_clean(at)
    assert any("Launched run" in s.value for s in at.success), [e.value for e in at.error]
    at = _submit(at) if [b for b in at.button if b.label == "Launch"] else at.run()  # a rerun launches nothing
    store = tracking.Store.default()
    frame, _ = store.search()
    assert len(frame) == 1
    run_id = frame.iloc[0]["run_id"]
    assert run_to_end(store, run_id, 180, 1).info.status == "FINISHED", store.run(run_id).data.tags


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


# --- issue 15: Home counts datasets only; Data shows whole attributes and follows an upload ----------------
def test_home_does_not_count_generated_samples(home_with_data):
    generated = home_with_data / "data" / "generated"
    generated.mkdir()
    for name in ("sample-diffusion-1.h5", "sample-flow-2.h5"):
        (generated / name).write_bytes((home_with_data / "data" / "demo.h5").read_bytes())
    at = page("home").run()
    assert_clean(at)
    assert next(m.value for m in at.metric if m.label == "Datasets in data/") == "1"
    assert any("2 generated sample files" in c.value for c in at.caption)


def test_data_page_attributes_whole_and_selector_follows_upload(home_with_data, small_data):
    import json

    from genesis.data import schema

    at = page("data").run()
    assert_clean(at)
    producer = schema.read_attrs(home_with_data / "data" / "demo.h5")["producer"]
    assert len(producer) > 80  # long enough that the old 80-character cut hid part of it
    shown = [j.value for j in at.json]
    assert json.loads(producer) in [json.loads(v) if isinstance(v, str) else v for v in shown]
    assert not any(producer[:80] in c.value and producer not in c.value for c in at.caption)

    at.file_uploader[0].set_value(("new.h5", small_data.read_bytes(), "application/x-hdf5")).run()
    next(b for b in at.button if b.label == "Validate and keep").click().run()
    assert_clean(at)
    assert any("Kept data/new.h5" in s.value for s in at.success)
    assert at.selectbox(key="data_file").value == home_with_data / "data" / "new.h5"
    # the newest file is not forced on later runs: picking demo.h5 again sticks
    at.selectbox(key="data_file").set_value(home_with_data / "data" / "demo.h5").run()
    assert_clean(at)
    assert at.selectbox(key="data_file").value == home_with_data / "data" / "demo.h5"


def test_label_histograms_have_axis_titles(home_with_data):
    from genesis import viz
    from genesis.data import schema

    _, labels, _ = schema.read_events(home_with_data / "data" / "demo.h5", 0, 50)
    fig = viz.label_histograms(labels)
    titles = [fig.layout[f"xaxis{i if i > 1 else ''}"].title.text for i in range(1, 7)]
    assert titles == list(viz.LABEL_NAMES) and fig.layout.yaxis.title.text == "fraction of events"


def test_data_page_keeps_its_views_after_a_rejected_upload(home_with_data):
    """A file that is no event file is refused with the reason; the dataset picker and the chosen file's
    views stay on the page (they used to vanish until another file was chosen)."""
    at = page("data").run()
    at.file_uploader[0].set_value(("broken.h5", b"not an HDF5 file", "application/x-hdf5")).run()
    next(b for b in at.button if b.label == "Validate and keep").click().run()
    assert_clean(at)
    assert any(e.value.startswith("Not kept: broken.h5") for e in at.error), [e.value for e in at.error]
    assert not (home_with_data / "data" / "broken.h5").exists()
    assert at.selectbox(key="data_file").value == home_with_data / "data" / "demo.h5"
    assert next(m.value for m in at.metric if m.label == "Events") == "400"
    assert len(at.get("plotly_chart")) == 3  # the event in 3D, its charge/time histograms, the labels
