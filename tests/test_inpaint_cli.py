"""`genesis inpaint` end to end: a tiny flow trained for real, the CLI writing masked/inpainted/true HDF5."""

import h5py
import numpy as np
import pytest

from conftest import ROOT, run_cli
from genesis import config
from genesis.data import schema
from genesis.train import train


@pytest.fixture(scope="module")
def flow_checkpoint(tmp_path_factory, small_data):
    home = tmp_path_factory.mktemp("inpaint_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENESIS_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        cfg = config.load(ROOT / "configs" / "flow_tiny.yaml", [
            f"data.path={small_data}", "flow.num_couplings=2", "flow.hidden_size=32", "train.max_steps=4",
            "train.device=cpu", "train.batch_size=16"])
        result = train(cfg)
    finally:
        mp.undo()
    return f"{result['checkpoint_dir']}/last.pt", home


def test_flow_map_cli_round_trip(flow_checkpoint, small_data, tmp_path):
    ckpt, home = flow_checkpoint
    out = tmp_path / "inpainted.h5"
    r = run_cli("inpaint", "--checkpoint", ckpt, "--data", str(small_data), "--events", "0,5,9",
                "--mask", "strings:36,79", "--method", "flow-map", "--steps", "5", "--out", str(out),
                env={"GENESIS_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert '"flow-map"' in r.stdout and '"improvement_over"' in r.stdout
    summary = schema.validate(out)
    assert summary.n_events == 3
    true, labels, _ = schema.read_events(small_data, indices=np.array([0, 5, 9]))
    with h5py.File(out, "r") as f:
        mask = f["mask"][()]
        filled, masked, truth = f["input"][()], f["input_masked"][()], f["input_true"][()]
    assert mask.sum() == 120
    assert np.array_equal(truth, true)
    assert np.array_equal(filled[:, :, ~mask], true[:, :, ~mask])  # observed DOMs untouched
    assert (masked[:, :, mask] == 0).all()


def test_baseline_needs_no_checkpoint(small_data, tmp_path):
    out = tmp_path / "neighbours.h5"
    r = run_cli("inpaint", "--data", str(small_data), "--events", "1-3", "--mask", "random:0.1+deepcore",
                "--method", "neighbours", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert schema.validate(out).n_events == 3


@pytest.mark.parametrize("args,needle", [
    (["--mask", "strings:999"], "unknown string ids"),
    (["--mask", "bogus:1"], "mask"),
    (["--events", "100000"], "indices must be in"),
    (["--method", "flow-map"], "needs a checkpoint"),
])
def test_bad_requests_exit_2(small_data, tmp_path, args, needle):
    base = {"--mask": "strings:36", "--events": "0", "--method": "zero"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    out = tmp_path / "x.h5"
    r = run_cli("inpaint", "--data", str(small_data), "--out", str(out), *[x for kv in base.items() for x in kv])
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_wrong_checkpoint_kind(flow_checkpoint, small_data, tmp_path):
    ckpt, home = flow_checkpoint
    r = run_cli("inpaint", "--checkpoint", ckpt, "--data", str(small_data), "--mask", "strings:36",
                "--method", "repaint", "--out", str(tmp_path / "x.h5"), env={"GENESIS_HOME": str(home)})
    assert r.returncode == 2 and "diffusion checkpoint is needed" in r.stderr


def test_dead_dom_fill_is_no_hit_in_any_normalization(geometry):
    import torch

    from genesis.data.normalization import Normalization
    from genesis.inpaint import neighbour_fill, zero_fill

    norm = Normalization(affine_offsets=(1.0, 9000.0, -600.0, -550.0, -550.0),
                         affine_scales=(2.0, 2000.0, 1200.0, 1100.0, 1100.0), npe_transform="log1p",
                         time_transform="none")
    x = torch.randn(2, 2, geometry.n_doms)
    mask = geometry.indices_of_strings([36])
    filled = zero_fill(x, mask, norm)
    back = norm.denormalize_signal(filled[:, :, mask].double())
    assert torch.allclose(back, torch.zeros_like(back), atol=1e-9)  # physically: no npe, no time
    assert torch.equal(filled[:, :, ~mask], x[:, :, ~mask])
    whole_string = neighbour_fill(filled, mask, geometry, norm)  # no unmasked DOM on string 36 -> no hit
    assert torch.allclose(whole_string[:, :, mask], filled[:, :, mask])
