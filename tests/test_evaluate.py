"""Physics evaluation: a real tiny checkpoint evaluated through the CLI, the simulator floor, bad inputs.

Known answers that can fail: a 5-step model is told apart from the simulator (AUC > 0.9), the simulator is
not told apart from itself (|AUC - 0.5| < 0.12), and the in-memory model evaluated at the end of training
samples exactly what its saved checkpoint samples."""

import json
import os

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from genesis import checkpoint, evaluate, metrics
from genesis.data.schema import write_events
from genesis.data.simulate import simulate_at_labels
from genesis.errors import DataError, GenesisError
from genesis.geometry import Geometry

@pytest.fixture(scope="module")
def tiny_run(trained):
    """The session's tiny diffusion checkpoint (5 steps, conftest.trained) and its store."""
    return {"home": trained.root, "ckpt": trained.diffusion, "run_id": trained.diffusion_run, "data": trained.data,
            "trainer": trained.diffusion_trainer}


def _env(run):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["GENESIS_HOME"] = str(run["home"])
    return env


def _cli(run, *args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "genesis", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=_env(run))


def test_cli_evaluate_writes_reports_and_logs_to_the_run(tiny_run, tmp_path):
    res = _cli(tiny_run, "evaluate", "--checkpoint", str(tiny_run["ckpt"]), "--simulate", "200", "--steps", "5",
               "--out", "r.json", "--html", "r.html", "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout)
    assert {"eval/auc", "eval/auc_se", "eval/auc_conditional", "eval/auc_conditional_se",
            "eval/response_summary"} <= set(printed)
    report = json.loads((tmp_path / "r.json").read_text())  # strict JSON: no NaN
    assert report["scalars"]["eval/auc"] > 0.9, report["scalars"]  # 5 training steps: far from the simulator
    assert report["scalars"]["eval/auc_conditional"] > 0.9 and report["scalars"]["eval/response_summary"] > 3
    assert report["classifier"]["n_test"] == report["classifier_conditional"]["n_test"] == 200  # 100 label rows
    assert report["settings"]["steps"] == 5 and report["settings"]["n_events"] == 200
    assert report["settings"]["reference"]["source"] == "simulation"
    assert report["mlflow"]["logged"] is True
    page = (tmp_path / "r.html").read_text()
    assert "plotly" in page.lower() and "eval/auc" in page and "brightest_fraction" in page
    assert "event features + labels" in page and "Response to the labels" in page
    assert page.count("plotly.js v") == 1  # plotly.js embedded once (inline, works offline)
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_run['home'] / 'mlruns' / 'mlflow.db'}")
    run = client.get_run(tiny_run["run_id"])
    assert "eval/auc" in run.data.metrics and "eval/w1_time_span" in run.data.metrics
    hist = client.get_metric_history(tiny_run["run_id"], "eval/auc")
    assert hist[-1].step == checkpoint.load(tiny_run["ckpt"])["step"]
    names = {a.path for a in client.list_artifacts(tiny_run["run_id"], "evaluation")}
    assert {"evaluation/r.json", "evaluation/r.html"} <= names


def test_end_of_training_evaluation_writes_report_and_metrics(tiny_run):
    art = tiny_run["ckpt"].parent.parent
    report = json.loads((art / "eval_report.json").read_text())
    assert report["settings"]["reference"]["source"] == "test split" and report["n_ref"] == 30
    assert report["classifier"]["auc"] is None  # 30 test events: too few for the classifier, noted
    assert (art / "eval_report.html").is_file() and report["mlflow"]["logged"] is True
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_run['home'] / 'mlruns' / 'mlflow.db'}")
    assert "eval/w1_total_npe" in client.get_run(tiny_run["run_id"]).data.metrics


def test_cli_evaluate_rejects_data_of_another_detector(tiny_run, tmp_path):
    small = Geometry(np.zeros((120, 3), np.float32) + np.arange(120)[:, None], np.repeat([1, 2], 60),
                     np.tile(np.arange(1, 61), 2), "two strings")
    labels = np.tile(np.array([[1e4, 1.0, 1.0, 0.0, 0.0, 0.0]], np.float32), (4, 1))
    bad = write_events(tmp_path / "bad.h5", np.ones((4, 2, 120), np.float32), labels, small)
    res = _cli(tiny_run, "evaluate", "--checkpoint", str(tiny_run["ckpt"]), "--data", str(bad), "--out", "r.json",
               "--device", "cpu", "--no-mlflow", cwd=tmp_path)
    assert res.returncode == 2
    assert "P = 120" in res.stderr and "P = 5160" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r.json").exists()


def test_too_few_reference_events_is_refused_unless_allowed(tiny_run, tmp_path):
    with pytest.raises(GenesisError, match=f"at least {metrics.MIN_EVENTS_FOR_AUC}"):
        evaluate.evaluate_checkpoint(tiny_run["ckpt"], simulate=50, device="cpu", out=tmp_path / "r.json")
    report = evaluate.evaluate_checkpoint(tiny_run["ckpt"], simulate=20, steps=2, device="cpu", allow_small=True,
                                          out=tmp_path / "r.json", log_to_mlflow=False)
    assert report["classifier"]["auc"] is None and "at least" in report["classifier"]["note"]
    assert "eval/auc" not in report["scalars"] and "eval/w1_total_npe" in report["scalars"]
    json.loads((tmp_path / "r.json").read_text())


def test_reference_events_from_file_and_from_simulation(tiny_run):
    loaded = checkpoint.load_model(tiny_run["ckpt"])
    signal, labels = evaluate.reference_events(loaded, data=tiny_run["data"], max_events=30)
    assert signal.shape == (30, 2, 5160) and labels.shape == (30, 6)
    sim, sim_labels = evaluate.reference_events(loaded, simulate=30, seed=0)
    assert sim.shape == (30, 2, 5160)
    train_labels = evaluate.reference_events(loaded, data=tiny_run["data"])[1]
    assert not np.isin(sim_labels[:, 0], train_labels[:, 0]).any()  # independent of the training data


def test_log_to_run_reports_an_unreachable_store_without_raising(tiny_run):
    from genesis import tracking

    loaded = checkpoint.load_model(tiny_run["ckpt"])
    report = {"scalars": {"eval/auc": 0.6}}
    assert evaluate.log_to_run(report, loaded, tracking.Store("http://127.0.0.1:9")) is False
    assert "cannot connect" in report["mlflow"]["message"]


def test_simulator_against_itself_is_indistinguishable(geometry):
    from genesis.data.simulate import simulate

    signal, labels = next(simulate(600, geometry, seed=21, batch=700))
    floor = evaluate.simulator_floor(signal, labels, geometry, seed=4)
    auc, sc = floor.report["scalars"]["eval/auc"], floor.report["scalars"]
    assert abs(auc - 0.5) < 0.12, auc
    assert abs(sc["eval/auc_conditional"] - 0.5) < 0.12 and sc["eval/response_summary"] < 2, sc
    line = evaluate.summary_line(floor.report)
    assert f"{auc:.3f} +- " in line and "with labels" in line and "response" in line
    assert 0.01 < sc["eval/auc_se"] < 0.03  # 300 test rows: ~1/sqrt(6 * 300)
    assert max(floor.report["scalars"][f"eval/w1_{k}"] for k in metrics.FEATURES) < 0.2


def test_write_html_is_standalone(tmp_path, geometry):
    rng = np.random.default_rng(0)
    labels = np.tile(np.array([[1e5, 1.0, 1.0, 0.0, 0.0, 0.0]], np.float32), (12, 1))
    a, b = simulate_at_labels(labels, geometry, rng), simulate_at_labels(labels, geometry, rng)
    report = evaluate.compare_events(a, b, labels, geometry)
    figs = evaluate.report_figures(report, a, b, labels, geometry)
    path = evaluate.write_html(report, tmp_path / "r.html", figs)
    page = path.read_text()
    assert "src=\"https://cdn.plot.ly" not in page and page.count("Plotly.newPlot") == len(figs) >= 3
    assert "classifier test skipped" in page and "Response to the labels" in page
    fig = figs["Response to the labels"]  # features x label axes, generated and reference with error bars
    assert len(fig.data) == 2 * len(metrics.RESPONSE_FEATURES) * len(metrics.RESPONSE_LABELS)
    assert all(t.error_y.array is not None for t in fig.data)
    same = evaluate.response_of(a, b, labels, geometry)
    assert same["curves"].keys() == report["response"]["curves"].keys()


def test_sampling_statistics_reach_the_report(tiny_run):
    """run_evaluation asks the sampler how many events were drawn again below the trigger (when it can tell)."""
    import inspect

    from genesis import sampling

    loaded = checkpoint.load_model(tiny_run["ckpt"])
    labels = np.tile(np.array([[1e5, 1.0, 1.0, 0.0, 0.0, 0.0]], np.float32), (4, 1))
    gen, stats = evaluate._generate_with_stats(loaded, labels, steps=2, seed=0)
    assert gen.shape == (4, 2, 5160)
    if "stats" in inspect.signature(sampling.generate).parameters:
        assert stats["events"] == 4
        assert 0 <= stats["redrawn_fraction"] <= 1 and 0 <= stats["below_trigger_fraction"] <= 1
        assert stats["below_trigger_fraction"] <= stats["redrawn_fraction"]
    else:
        assert "note" in stats


def test_trainer_handle_samples_what_the_checkpoint_samples(tiny_run):
    """The adapter the end-of-training evaluation uses (handle_from_trainer) against load_model(last.pt)."""
    from genesis.sampling import generate

    trainer = tiny_run["trainer"]
    handle = evaluate.handle_from_trainer(trainer)
    loaded = checkpoint.load_model(tiny_run["ckpt"])
    labels = np.array([[1e5, 1.0, 1.0, 0.0, 0.0, 0.0], [1e6, 2.0, 4.0, 100.0, -100.0, -200.0]], np.float32)
    from_trainer = generate(handle, labels, steps=3, seed=5)
    from_file = generate(loaded, labels, steps=3, seed=5)
    assert from_trainer.shape == (2, 2, 5160) and (from_trainer[:, 0] > 0).any()
    assert np.array_equal(from_trainer, from_file)
    assert not np.array_equal(from_file, generate(loaded, labels, steps=3, seed=6))  # the seed matters
    assert handle.run_id == loaded.run_id == tiny_run["run_id"]
    assert handle.state["step"] == loaded.state["step"] == 5


def test_checkpoint_reload_equals_the_trainers_ema_weights(tiny_run):
    """load_model(last.pt) rebuilds exactly the trainer's EMA model (not only the same file twice)."""
    import torch

    trainer = tiny_run["trainer"]
    ema = trainer.ema.module.state_dict()
    loaded = checkpoint.load_model(tiny_run["ckpt"]).model.state_dict()
    assert ema.keys() == loaded.keys()
    for key in ema:  # tensors bitwise; extra state (the normalization's transforms) by value
        same = torch.equal(ema[key].cpu(), loaded[key].cpu()) if torch.is_tensor(ema[key]) else ema[key] == loaded[key]
        assert same, key
    raw = trainer.model.state_dict()  # the EMA differs from the raw weights after 5 steps: the loader chose EMA
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if torch.is_tensor(raw[k]) and raw[k].is_floating_point())


def test_reference_events_needs_one_source(tiny_run):
    loaded = checkpoint.load_model(tiny_run["ckpt"])
    with pytest.raises(GenesisError):
        evaluate.reference_events(loaded)
    with pytest.raises(DataError):
        evaluate.run_evaluation(loaded, np.zeros((3, 2, 10), np.float32), np.ones((3, 6), np.float32))


def test_evaluating_on_the_training_file_is_flagged(tiny_run, tmp_path, caplog):
    report = evaluate.evaluate_checkpoint(tiny_run["ckpt"], data=tiny_run["data"], steps=2, device="cpu",
                                          out=tmp_path / "r.json", log_to_mlflow=False)
    ref = report["settings"]["reference"]
    assert ref["source"] == "file" and ref["n"] == ref["n_in_file"] == 300 and ref["is_training_file"] is True
    assert "training file" in caplog.text
    assert report["mlflow"]["logged"] is False


def test_reference_simulation_says_when_it_falls_back_to_default_settings(tmp_path):
    """The shipped demo records what made its training data; a checkpoint that records nothing, and whose
    training file is gone, simulates its reference with the defaults, and the Sample page says so."""
    from genesis import checkpoint
    from genesis import sample_session as ss
    from genesis.demo import DEMO_DIR

    demo = DEMO_DIR / "demo-diffusion.pt"
    assert ss.reference_fallback(checkpoint.load_model(demo)) is None
    state = checkpoint.load_state(demo)
    state["data"] = {k: v for k, v in state["data"].items() if k != "source"} | {"path": str(tmp_path / "gone.h5")}
    bare = checkpoint.load_model(checkpoint.save(state, tmp_path / "bare.pt"))
    assert "gone.h5 is not here" in ss.reference_fallback(bare)
