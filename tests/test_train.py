"""Real tiny training runs against a temporary MLflow store (GENESIS_HOME = tmp folder)."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli, tiny_cfg
from genesis import checkpoint, config, tracking
from genesis.train import DistContext, Trainer, lr_lambda, train


def cfg(home, *extra):
    return tiny_cfg(home, "train.log_every=2", "train.checkpoint_every=5", *extra)


def flow_cfg(home, *extra):
    return config.load(ROOT / "configs" / "flow_tiny.yaml",
                       [f"data.path={home}/data/demo.h5", "train.device=cpu", "train.batch_size=16",
                        "train.warmup_steps=2", "flow.hidden_size=16", "flow.num_couplings=2",
                        "train.log_every=2", "train.checkpoint_every=5", *extra])


def test_end_to_end_run_logs_everything(home):
    result = train(cfg(home, "train.epochs=2"))
    assert result["status"] == "FINISHED" and result["step"] == 2 * 20
    store = tracking.Store.default()
    run = store.run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden_size"] == "32" and run.data.tags[tracking.TAG_KIND] == "diffusion"
    assert {tracking.TAG_FINGERPRINT, tracking.TAG_GIT, tracking.TAG_HOST, tracking.TAG_PID} <= set(run.data.tags)
    assert {"train/loss", "train/lr", "train/grad_norm", "train/events_per_s", "val/loss"} <= set(run.data.metrics)
    losses = store.metric_history(result["run_id"], "val/loss")
    assert len(losses) == 2
    art = store.artifact_dir(result["run_id"])
    for name in ("config.yaml", "checkpoints/last.pt", "checkpoints/best.pt", "generated_events.html"):
        assert (art / name).is_file(), name
    assert any(p.suffix == ".log" for p in art.iterdir())
    assert str(store.tracking_uri).endswith(str(home / "mlruns" / "mlflow.db"))


def test_checkpoint_reload_gives_identical_outputs(home):
    result = train(cfg(home, "train.max_steps=3"))
    path = os.path.join(result["checkpoint_dir"], "last.pt")
    a, b = checkpoint.load_model(path), checkpoint.load_model(path)
    state = checkpoint.load(path)
    assert state["format"] == "genesis-checkpoint" and state["step"] == 3
    assert state["normalization"]["npe_transform"] == "log1p"
    assert a.model.get_normalization_params() == state["normalization"]
    x = torch.randn(2, a.model.channels, 5160)
    t = torch.tensor([10, 500])
    lab = torch.rand(2, 6)
    geo = a.normalization.normalize_geometry(torch.from_numpy(a.geometry.positions))
    assert torch.equal(a.model(x, t, lab, geo), b.model(x, t, lab, geo))


def last_state(result) -> dict:
    return checkpoint.load(os.path.join(result["checkpoint_dir"], "last.pt"))


def assert_same_training_state(a: dict, b: dict) -> None:
    """Weights, EMA weights and optimiser state bitwise equal."""
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name, value in a[key].items():
            same = torch.equal(value, b[key][name]) if torch.is_tensor(value) else value == b[key][name]
            assert same, f"{key}.{name} differs"
    for idx, sa in a["optimizer"]["state"].items():
        for name, value in sa.items():
            assert torch.equal(value, b["optimizer"]["state"][idx][name]), f"optimizer state {idx}.{name} differs"
    assert a["scheduler"] == b["scheduler"] and a["step"] == b["step"] and a["epoch"] == b["epoch"]


def signal_self_at(monkeypatch, step: int) -> None:
    """Deliver a real SIGTERM to this process right after training step `step` (the trainer's handler
    catches it; this only picks the moment)."""
    original = Trainer.train_step

    def step_then_signal(self, *args):
        out = original(self, *args)
        if self.step == step:
            signal.raise_signal(signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_resume_after_sigterm_is_exact(home, monkeypatch, kind):
    """30 straight steps == SIGTERM at step 13 (mid-epoch) + resume with the same config, bitwise; the
    stopped run keeps epoch 0 and the resumed one crosses the epoch boundary at step 20 like the straight one."""
    extra = ("train.epochs=2", "train.max_steps=30", "model.label_dropout=0.3")
    run_cfg = cfg(home, *extra) if kind == "diffusion" else flow_cfg(home, *extra)
    straight = train(run_cfg)
    with monkeypatch.context() as m:
        signal_self_at(m, 13)
        stopped = train(run_cfg)
    assert stopped["status"] == "KILLED" and stopped["step"] == 13 and last_state(stopped)["epoch"] == 0
    resumed = train(run_cfg, resume=os.path.join(stopped["checkpoint_dir"], "last.pt"))
    assert resumed["status"] == straight["status"] == "FINISHED" and resumed["step"] == 30
    assert_same_training_state(last_state(straight), last_state(resumed))


def test_max_steps_stop_inside_an_epoch_keeps_the_epoch(home):
    result = train(cfg(home, "train.epochs=2", "train.max_steps=10"))  # 20 steps per epoch
    assert result["step"] == 10 and result["epoch"] == 0 and last_state(result)["epoch"] == 0
    result = train(cfg(home, "train.epochs=2", "train.max_steps=20"))
    assert result["step"] == 20 and result["epoch"] == 1


def test_signal_handlers_are_restored_after_training(home):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    sigint = signal.getsignal(signal.SIGINT)  # default, or SIG_IGN in a background job
    try:
        train(cfg(home, "train.max_steps=2"))
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is sigint
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_validation_scores_the_ema_weights_that_best_pt_keeps(home):
    result = train(cfg(home, "train.epochs=1", "train.ema_decay=0.9"))
    store = tracking.Store.default()
    assert store.run(result["run_id"]).data.params["train.val_weights"] == "ema"
    best = checkpoint.load(os.path.join(result["checkpoint_dir"], "best.pt"))
    trainer = Trainer(cfg(home, "train.epochs=1"), None, None, DistContext(), torch.device("cpu"))
    trainer.ema.module.load_state_dict(best["ema"])
    assert trainer.validate()[0] == pytest.approx(best["best_val_loss"], rel=1e-9)
    trainer.model.load_state_dict(best["model"])  # the raw weights score differently
    raw = dataclasses.replace(trainer.cfg, train=dataclasses.replace(trainer.cfg.train, val_weights="raw"))
    trainer.cfg = raw
    assert trainer.validate()[0] != pytest.approx(best["best_val_loss"], rel=1e-6)


def test_value_ranges_cover_every_training_event(tmp_path):
    """The clip ranges stored in checkpoints come from all training events, not a subsample."""
    from genesis.data import dataset, schema
    from genesis.geometry import Geometry

    n, p = 2600, 60
    geo = Geometry(np.stack([np.zeros(p), np.zeros(p), -10.0 * np.arange(p)], 1), np.ones(p), np.arange(1, p + 1))
    rng = np.random.default_rng(0)
    signal = np.stack([rng.poisson(1.0, (n, p)), rng.uniform(9000, 12000, (n, p))], 1).astype(np.float32)
    signal[:, 1][signal[:, 0] == 0] = 0
    labels = np.tile(np.array([1e4, 1.0, 1.0, 0.0, 0.0, 0.0], np.float32), (n, 1))
    data_cfg = config.DataConfig(path=str(tmp_path / "d.h5"), val_fraction=0.1, test_fraction=0.1)
    train_idx = dataset.split_indices(n, 0.1, 0.1, data_cfg.split_seed)["train"]
    evenly_spread_2000 = set(np.linspace(0, len(train_idx) - 1, 2000).astype(int))
    brightest = train_idx[next(i for i in range(len(train_idx)) if i not in evenly_spread_2000)]
    signal[brightest, 0, 7] = 5000.0
    schema.write_events(data_cfg.path, signal, labels, geo)
    norm = data_cfg.normalization
    ranges = dataset.value_ranges(data_cfg, norm)
    expected = norm.normalize_signal(signal[train_idx].astype(np.float64))
    assert ranges["signal_max"] == pytest.approx(expected.max(axis=(0, 2)).tolist())
    assert ranges["signal_min"] == pytest.approx(expected.min(axis=(0, 2)).tolist())


def test_lr_schedule_anneals_over_a_time_budget():
    used = {"fraction": 0.0}
    f = lr_lambda(warmup=2, total=10**9, budget_fraction=lambda: used["fraction"])
    assert f(0) == 0.5 and f(100) == pytest.approx(1.0, abs=1e-6)  # steps alone: a 1e9-step horizon
    used["fraction"] = 0.5
    assert f(100) == pytest.approx(0.55)
    used["fraction"] = 1.0
    assert f(100) == pytest.approx(0.1)


def test_time_budgeted_run_ends_at_the_low_learning_rate(home):
    result = train(cfg(home, "train.epochs=50", "train.max_minutes=0.15", "train.warmup_steps=1"))
    assert result["status"] == "FINISHED" and result["epoch"] < 50
    lrs = tracking.Store.default().metric_history(result["run_id"], "train/lr")["value"]
    peak = 1e-3
    assert lrs.iloc[-1] < 0.3 * peak, lrs.tolist()


def test_nan_loss_ends_failed_with_reason(home):
    with pytest.raises(Exception, match="non-finite loss"):
        train(cfg(home, "train.fail_at_step=3"))
    store = tracking.Store.default()
    frame, _ = store.search(filter_string="attributes.status = 'FAILED'")
    assert len(frame) == 1 and "non-finite loss" in frame.iloc[0][f"tags.{tracking.TAG_ERROR}"]


def test_bad_data_fails_before_any_run(home):
    r = run_cli("train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--set", "data.path=data/missing.h5",
                env={"GENESIS_HOME": str(home)})
    assert r.returncode == 2 and "data file not found" in r.stderr
    r = run_cli("train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--set", "model.bogus=1",
                env={"GENESIS_HOME": str(home)})
    assert r.returncode == 2 and "model.bogus" in r.stderr
    store = tracking.Store.default()
    assert store.search()[0].empty


def test_sigterm_ends_killed_with_last_pt(home):
    cfg_path = home / "c.yaml"
    config.save(cfg(home, "train.epochs=50"), cfg_path)
    proc = subprocess.Popen([sys.executable, "-m", "genesis", "train", "--config", str(cfg_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GENESIS_HOME": str(home)})
    store = tracking.Store.default()
    deadline = time.time() + 600  # generous: a loaded machine takes minutes to import torch and MLflow
    while time.time() < deadline:
        frame, _ = store.search()
        if not frame.empty and "metrics.train/loss" in frame and frame["metrics.train/loss"].notna().any():
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    frame, _ = store.search()
    run_id = frame.iloc[0]["run_id"]
    assert store.run(run_id).info.status == "KILLED", out
    assert (store.artifact_dir(run_id) / "checkpoints" / "last.pt").is_file()


def test_sample_cli_writes_valid_hdf5(home):
    result = train(cfg(home, "train.max_steps=2"))
    ckpt = os.path.join(result["checkpoint_dir"], "last.pt")
    out = home / "data" / "gen.h5"
    r = run_cli("sample", "--checkpoint", ckpt, "--n", "3", "--steps", "4", "--energy", "2e5", "--out", str(out),
                "--seed", "1", env={"GENESIS_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    r = run_cli("validate", str(out))
    assert r.returncode == 0 and "events      3" in r.stdout and '"run_id"' in r.stdout
    from genesis.data import schema

    sig, lab, _ = schema.read_events(out)
    assert np.allclose(lab[:, 0], 2e5) and (sig[:, 0] >= 0).all()
    assert (sig[:, 1][sig[:, 0] == 0] == 0).all()
    r = run_cli("sample", "--checkpoint", str(out), "--out", str(home / "x.h5"))
    assert r.returncode == 2 and "checkpoint" in r.stderr


def test_ddp_two_processes_gloo(home):
    cfg_path = home / "ddp.yaml"
    config.save(cfg(home, "train.max_steps=4"), cfg_path)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "-m", "genesis", "train", "--config", str(cfg_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "GENESIS_HOME": str(home), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    frame, _ = tracking.Store.default().search()
    assert len(frame) == 1 and frame.iloc[0]["status"] == "FINISHED"  # only rank 0 logs


LINEAR_TIME = ("data.normalization.time_reference=none", "data.normalization.time_transform=none",
               "data.normalization.affine_offsets=[1.0,9000.0,-600,-550,-550]",
               "data.normalization.affine_scales=[2.0,2000.0,1200,1100,1100]")  # the presets' time until asinh
HIT_MODEL = ("data.normalization.representation=hit", "model.conditioning=physics", "model.dom_head_width=8")


ASINH_DELAY = ("data.normalization.time_transform=asinh", "data.normalization.time_center_ns=10000",
               "data.normalization.time_width_ns=200", "data.normalization.affine_offsets=[1.0,1.0,-600,-550,-550]",
               "data.normalization.affine_scales=[2.0,1.5,1200,1100,1100]")


LINEAR_DELAY = (*LINEAR_TIME, "data.normalization.affine_offsets=[1.0,10000.0,-600,-550,-550]")


@pytest.mark.parametrize("reference, time", [("none", LINEAR_TIME), ("arrival", LINEAR_DELAY), ("arrival", ASINH_DELAY)],
                         ids=["time", "delay", "asinh-delay"])
def test_sampled_events_are_physically_consistent(home, reference, time):
    """A trained tiny hit-representation model (times as they are, the delay after the direct light, or
    asinh of that delay): every hit has an npe of at least the smallest training npe (a whole count, like
    the simulator's), a time inside the training hit-time range; no DOM without a hit carries a time."""
    from genesis import sampling
    from genesis.data import schema

    result = train(cfg(home, "train.max_steps=6", *HIT_MODEL, *time, f"data.normalization.time_reference={reference}"))
    loaded = checkpoint.load_model(os.path.join(result["checkpoint_dir"], "last.pt"))
    assert loaded.normalization.representation == "hit" and loaded.model.channels == 3
    assert loaded.normalization.time_reference == reference
    params = loaded.model.get_normalization_params()
    assert params["time_reference"] == reference
    if time == ASINH_DELAY:  # the model alone carries the transform (its centre and width), as the checkpoint does
        assert (params["time_transform"], params["time_center_ns"], params["time_width_ns"]) == ("asinh", 10000, 200)
        assert loaded.normalization.time_width_ns == 200
    signal, labels, _ = schema.read_events(home / "data" / "demo.h5")
    hits = signal.transpose(1, 0, 2)[:, signal[:, 0] > 0]  # (2, hit DOMs of all events)
    events = sampling.generate(loaded, labels[:6], steps=4, seed=3)
    npe, time = events[:, 0], events[:, 1]
    hit = npe > 0
    assert hit.any() and (~hit).any()
    assert npe[hit].min() >= hits[0].min() and np.all(npe[hit] == np.round(npe[hit]))
    assert hits[1].min() <= time[hit].min() and time[hit].max() <= hits[1].max()
    assert np.all(time[~hit] == 0)


def test_a_dequantized_npe_model_trains_samples_whole_counts_and_refuses_fractional_data(home):
    """diffusion.dequantize_npe: the run trains on npe + U(0, 1), the checkpoint records it and its samples are
    whole counts within the training range (the floor); data with fractional charges is refused by name."""
    from genesis import sampling
    from genesis.data import schema
    from genesis.errors import ConfigError

    result = train(cfg(home, "train.max_steps=4", *HIT_MODEL, *ASINH_DELAY, "diffusion.dequantize_npe=true"))
    loaded = checkpoint.load_model(os.path.join(result["checkpoint_dir"], "last.pt"))
    assert loaded.config.diffusion.dequantize_npe and loaded.state["data"]["npe_integer"]
    signal, labels, _ = schema.read_events(home / "data" / "demo.h5")
    npe = sampling.generate(loaded, labels[:4], steps=3, seed=1)[:, 0]
    hit = npe > 0
    assert hit.any() and np.all(npe[hit] == np.floor(npe[hit])) and npe[hit].min() >= 1
    # the checkpoint's flag reaches the sampler: the same draws rounded instead of floored give more charge
    loaded.config = dataclasses.replace(loaded.config, diffusion=dataclasses.replace(loaded.config.diffusion,
                                                                                     dequantize_npe=False))
    rounded = sampling.generate(loaded, labels[:4], steps=3, seed=1)[:, 0]
    assert np.array_equal(rounded > 0, hit) and np.all(rounded >= npe) and np.any(rounded > npe)
    fractional = home / "data" / "fractional.h5"
    schema.write_events(fractional, signal[:200] * np.array([[0.7], [1.0]], np.float32), labels[:200],
                        schema.read_geometry(home / "data" / "demo.h5"))
    with pytest.raises(ConfigError, match="dequantize_npe is for whole-pe data.*fractional"):
        train(cfg(home, "train.max_steps=2", *HIT_MODEL, "diffusion.dequantize_npe=true", f"data.path={fractional}"))


def test_events_below_the_trigger_are_drawn_again(home):
    """The checkpoint records the fewest hit DOMs of any training event (the simulator's trigger); sampled
    events with fewer are drawn again, the others stay as first drawn; redraw_untriggered: false keeps them."""
    import dataclasses

    from genesis import sampling
    from genesis.data import schema
    from genesis.data.simulate import SimConfig

    result = train(cfg(home, "train.max_steps=6", *HIT_MODEL))
    loaded = checkpoint.load_model(os.path.join(result["checkpoint_dir"], "last.pt"))
    signal, labels, _ = schema.read_events(home / "data" / "demo.h5")
    assert SimConfig().min_hits <= loaded.state["data"]["hit_doms_min"] <= (signal[:, 0] > 0).sum(1).max()
    labels = labels[:16]
    loaded.config = dataclasses.replace(loaded.config, diffusion=dataclasses.replace(loaded.config.diffusion,
                                                                                     redraw_untriggered=False))
    first = sampling.generate(loaded, labels, steps=4, seed=5)
    hits = (first[:, 0] > 0).sum(1)
    fewest = int(np.median(hits)) + 1  # pretend a trigger that half of these events miss
    loaded.state["data"]["hit_doms_min"] = fewest
    assert np.array_equal(sampling.generate(loaded, labels, steps=4, seed=5), first)  # off: nothing drawn again
    loaded.config = dataclasses.replace(loaded.config, diffusion=dataclasses.replace(loaded.config.diffusion,
                                                                                     redraw_untriggered=True))
    redrawn = sampling.generate(loaded, labels, steps=4, seed=5)
    kept = hits >= fewest
    assert np.array_equal(redrawn[kept], first[kept])
    assert ((redrawn[:, 0] > 0).sum(1) < fewest).sum() <= (~kept).sum() // 2 < (~kept).sum()


HIT_RANGES = ("hit_npe_min", "hit_npe_max", "hit_time_min", "hit_time_max", "npe_integer", "hit_doms_min")


def strip_to_old_format(path) -> None:
    """Rewrite a checkpoint as the format before representations existed: no representation key in the
    normalization or the models' extra state, no config fields added since."""
    state = torch.load(path, weights_only=True)
    added = ("representation", "time_reference", "time_center_ns", "time_width_ns")
    for d in (state["normalization"], state["model"]["_extra_state"], state["ema"]["_extra_state"],
              state["config"]["data"]["normalization"]):
        for key in added:
            del d[key]
    for section, keys in (("model", ("conditioning", "dom_head_width")), ("diffusion", ("min_snr_gamma", "hit_weight", "no_hit_weight", "redraw_untriggered")),
                          ("train", ("val_weights",))):
        for key in keys:
            del state["config"][section][key]
    for key in HIT_RANGES:
        state["data"].pop(key, None)
    torch.save(state, path)


def test_checkpoints_from_before_representations_load_inspect_and_sample(home):
    from genesis import inspect, sampling

    result = train(cfg(home, "train.max_steps=3", "data.normalization.representation=legacy", *LINEAR_TIME,
                       "model.conditioning=labels", "model.dom_head_width=0", "model.light_feature=false",
                       "model.dom_head_conditioning=false"))
    path = os.path.join(result["checkpoint_dir"], "last.pt")
    before = checkpoint.load_model(path)
    strip_to_old_format(path)
    old = checkpoint.load_model(path)
    assert old.normalization.representation == "legacy" and old.model.channels == 2
    assert old.model.get_normalization_params()["representation"] == "legacy"
    labels = np.array([[1e5, 1.0, 1.0, 0.0, 0.0, 0.0]] * 2, np.float32)
    for key in HIT_RANGES:  # old files have no hit ranges, so their hits are not clipped to them
        before.state["data"].pop(key)
    np.testing.assert_array_equal(sampling.generate(old, labels, steps=3), sampling.generate(before, labels, steps=3))
    report = inspect.inspect_checkpoint(path)
    assert report["source"]["kind"] == "diffusion" and report["source"]["loadable"], report["source"]
    r = run_cli("sample", "--checkpoint", path, "--n", "2", "--steps", "3", "--out", str(home / "old.h5"))
    assert r.returncode == 0, r.stderr
