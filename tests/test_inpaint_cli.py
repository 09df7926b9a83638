"""`genesis inpaint` end to end: the session's tiny trained flow and diffusion checkpoints, the CLI writing
masked/inpainted/true HDF5 with the masked DOMs filled and the observed ones untouched."""

import json

import h5py
import numpy as np
import pytest

from conftest import run_cli
from genesis.data import schema


@pytest.fixture(scope="module")
def flow_checkpoint(trained):
    """The session's tiny trained flow (conftest.trained) and its project home."""
    return str(trained.flow), trained.root


def inpaint_cli(ckpt, home, data, method, out, *extra):
    """`genesis inpaint` on events 0, 5, 9 of `data` with strings 36 and 79 masked; returns (report, arrays)."""
    r = run_cli("inpaint", "--checkpoint", ckpt, "--data", str(data), "--events", "0,5,9", "--mask", "strings:36,79",
                "--method", method, "--out", str(out), *extra, env={"GENESIS_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert f'"{method}"' in r.stdout and '"improvement_over"' in r.stdout
    assert schema.validate(out).n_events == 3
    with h5py.File(out, "r") as f:
        arrays = {k: f[k][()] for k in ("mask", "input", "input_masked", "input_true")}
    return r.stdout, arrays


def assert_masked_filled_observed_kept(arrays, data, physical_change: bool = True):
    true, _, _ = schema.read_events(data, indices=np.array([0, 5, 9]))
    mask, filled, masked, truth = arrays["mask"], arrays["input"], arrays["input_masked"], arrays["input_true"]
    assert mask.sum() == 120
    assert np.array_equal(truth, true)
    assert np.array_equal(filled[:, :, ~mask], true[:, :, ~mask])  # observed DOMs untouched
    assert (masked[:, :, mask] == 0).all() and np.array_equal(masked[:, :, ~mask], true[:, :, ~mask])
    assert np.isfinite(filled).all()
    if physical_change:
        changed = filled[:, :, mask] != masked[:, :, mask]  # the method wrote hits into the masked DOMs
        assert changed.any(axis=(1, 2)).all(), "an event's masked DOMs were left as masked"


def test_flow_map_cli_round_trip(flow_checkpoint, small_data, tmp_path):
    ckpt, home = flow_checkpoint
    report, arrays = inpaint_cli(ckpt, home, small_data, "flow-map", tmp_path / "inpainted.h5", "--steps", "5")
    report = json.loads(report)
    metrics = report["metrics"]
    assert set(metrics) == {"flow-map", "zero", "neighbours"}, metrics
    assert np.isfinite(metrics["flow-map"]["mse_all"]) and 0 <= metrics["flow-map"]["hit_accuracy"] <= 1
    # flow MAP does what zero fill does not: it writes hits into every event's masked DOMs (the tiny flow's
    # untrained hit head calls them hit), so its fill is not zero fill's and scores differently
    assert_masked_filled_observed_kept(arrays, small_data, physical_change=True)
    assert "same_fill_as" not in metrics["zero"] and metrics["flow-map"]["mse_all"] != metrics["zero"]["mse_all"]
    # on whole strings the two baselines are one fill, compared with once
    assert metrics["neighbours"]["same_fill_as"] == "zero"
    assert "zero fill (dead DOMs) (here the same fill as the neighbour mean on the string)" in report["verdict"]


def test_repaint_cli_with_a_real_diffusion_checkpoint(trained, small_data, tmp_path):
    _, arrays = inpaint_cli(str(trained.diffusion), trained.root, small_data, "repaint", tmp_path / "repaint.h5",
                            "--steps", "4")
    assert_masked_filled_observed_kept(arrays, small_data)


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


def test_inpaint_cli_warns_in_words_on_labels_outside_the_training_ranges(tmp_path, geometry):
    """Out-of-range events are filled anyway, with a plain-words warning (not a Python warning)."""
    from genesis.data.simulate import SimConfig, simulate_to_file
    from genesis.demo import DEMO_DIR

    data = simulate_to_file(tmp_path / "low.h5", 2, geometry, seed=3, cfg=SimConfig(energy_min=5.0, energy_max=50.0))
    r = run_cli("inpaint", "--checkpoint", str(DEMO_DIR / "demo-flow.pt"), "--method", "zero", "--data", str(data),
                "--events", "0", "--mask", "strings:36", "--out", str(tmp_path / "out.h5"))
    assert r.returncode == 0, r.stderr
    assert "warning: " in r.stderr and "below the range this checkpoint was trained on" in r.stderr
    assert "UserWarning" not in r.stderr and json.loads(r.stdout)["warnings"]
