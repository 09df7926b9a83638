"""Real tiny training runs against a temporary MLflow store (GENESIS_HOME = tmp folder)."""

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
from genesis.train import train


def cfg(home, *extra):
    return tiny_cfg(home, "train.log_every=2", "train.checkpoint_every=5", *extra)


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
    x = torch.randn(2, 2, 5160)
    t = torch.tensor([10, 500])
    lab = torch.rand(2, 6)
    geo = a.normalization.normalize_geometry(torch.from_numpy(a.geometry.positions))
    assert torch.equal(a.model(x, t, lab, geo), b.model(x, t, lab, geo))


def test_resume_continues_step_and_optimizer(home):
    first = train(cfg(home, "train.epochs=2", "train.max_steps=10"))
    last = os.path.join(first["checkpoint_dir"], "last.pt")
    assert checkpoint.load(last)["step"] == 10
    second = train(cfg(home, "train.epochs=2", "train.max_steps=25"), resume=last)
    assert second["step"] == 25
    state = checkpoint.load(os.path.join(second["checkpoint_dir"], "last.pt"))
    assert state["optimizer"]["state"][0]["step"].item() == 25


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
    deadline = time.time() + 120
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
