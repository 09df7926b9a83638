"""genesis.ranges: labels and datasets compared with the training ranges a checkpoint records."""

from __future__ import annotations

import numpy as np
import pytest

from genesis import checkpoint, demo, ranges
from genesis.data import schema
from imported_events import oscnext_h5

DEMO = demo.DEMO_DIR / "demo-diffusion.pt"


@pytest.fixture(scope="module")
def record() -> dict:
    return checkpoint.load_state(DEMO)["data"]


def test_labels_inside_the_ranges_give_no_warning(record):
    inside = np.array([[1e5, 1.0, 2.0, 0.0, 0.0, 0.0], [2e3, 0.0, 0.0, -100.0, 50.0, 500.0]])  # zenith 0: within tolerance
    assert ranges.label_warnings(inside, record) == []


def test_energy_below_the_range_is_named_in_words(record):
    messages = ranges.label_warnings(np.tile([10.0, 1.0, 2.0, 0.0, 0.0, 0.0], (8, 1)), record)
    assert len(messages) == 1
    assert messages[0].startswith("All 8 requested events have energy 10 GeV, below the range this checkpoint was "
                                  "trained on (1,000 to 9.99e+06 GeV)")
    one = ranges.label_warnings(np.array([[10.0, 1.0, 2.0, 0.0, 0.0, 0.0]]), record)[0]
    assert one.startswith("The requested energy 10 GeV lies below")


def test_some_labels_outside_are_counted(record):
    labels = np.array([[1e4, 1.0, 2.0, 0.0, 0.0, 0.0], [1e4, 1.0, 2.0, 0.0, 0.0, 900.0], [1e4, 1, 2, 0, 0, 800.0]])
    (message,) = ranges.label_warnings(labels, record)
    assert message.startswith("2 of 3 requested events have vertex z above the range") and "800 to 900 m" in message


def test_no_record_no_warning():
    assert ranges.label_warnings(np.array([[10.0, 1, 2, 0, 0, 0]]), {}) == []
    assert ranges.TrainingRanges.from_record({"path": "x.h5"}) is None


def test_record_of_accepts_loaded_state_and_report(record):
    from genesis import inspect

    loaded = checkpoint.load_model(DEMO)
    assert ranges.record_of(loaded)["label_min"] == record["label_min"]
    assert ranges.record_of(checkpoint.load_state(DEMO))["label_max"] == record["label_max"]
    assert ranges.record_of(inspect.inspect_checkpoint(DEMO, 4))["hit_npe_min"] == record["hit_npe_min"]


def test_dataset_report_counts_events_outside(small_data, record):
    """The report's counts agree with a direct computation on the file's labels and hits."""
    signal, labels, _ = schema.read_events(small_data)
    narrow = {**record, "label_min": [3e3, *record["label_min"][1:]], "hit_time_max": float(np.median(signal[:, 1][signal[:, 0] > 0]))}
    report = ranges.dataset_report(narrow, small_data)
    rows = report.table.set_index("quantity")
    low_energy = labels[:, 0] < 10 ** (np.log10(3e3) - ranges.TOLERANCE * (np.log10(record["label_max"][0]) - np.log10(3e3)))
    assert rows.loc["energy", "events below"] == low_energy.sum() > 0
    span = narrow["hit_time_max"] - record["hit_time_min"]
    late = ((signal[:, 1] > narrow["hit_time_max"] + ranges.TOLERANCE * span) & (signal[:, 0] > 0)).any(1)
    assert rows.loc["hit time", "events above"] == late.sum() > 0
    assert report.n_outside == (low_energy | late).sum() and report.n_events == len(labels)
    assert "energy" in report.summary() and "hit time" in report.summary()


def test_dataset_report_without_ranges(small_data):
    report = ranges.dataset_report({}, small_data)
    assert not report.recorded and report.table.empty
    assert "records no training ranges" in report.summary()


def test_imported_real_events_are_reported_outside_the_demo_ranges(tmp_path, record):
    """The oscNext events (1.5-4.7 GeV, fractional charges) against the demo model (trained from 1,000 GeV)."""
    path = oscnext_h5(tmp_path / "oscnext.h5")
    report = ranges.dataset_report(record, path)
    rows = report.table.set_index("quantity")
    assert report.n_outside == report.n_events == 5
    assert rows.loc["energy", "events below"] == 5 and rows.loc["zenith", "events outside"] == 0
    assert rows.loc["hit npe", "events below"] == 5  # charges of 0.2-0.9 pe; the simulator's counts start at 1
    assert report.summary("oscnext.h5").startswith("All 5 events of oscnext.h5 lie outside")
    words = ranges.event_warnings(checkpoint.load_state(DEMO), path, 0)
    assert words[0].startswith("This event's energy 1.51 GeV lies below")
    assert any("hit DOMs have hit npe below" in w for w in words)
