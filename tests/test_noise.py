"""Detector noise kept apart (genesis.noise): cleaning, the fitted noise model, training and sampling with it."""

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from genesis import checkpoint, config, noise, sampling, viz
from genesis.data import dataset, schema
from genesis.data.simulate import SimConfig, simulate, simulate_to_file
from genesis.errors import ConfigError, DataError
from genesis.geometry import Geometry
from genesis.train import train
from tests.conftest import ROOT, TINY_DIT

RADIUS = 150.0


def line_geometry() -> Geometry:
    """Five DOMs on a line: 0-1-2 within 150 m of their neighbours, 3 and 4 far from everything."""
    x = np.array([0.0, 100.0, 200.0, 1000.0, 2000.0])
    return Geometry(np.stack([x, np.zeros(5), np.zeros(5)], 1), string=np.arange(5), dom=np.ones(5))


def event(hits: dict[int, tuple[float, float]], p: int = 5) -> np.ndarray:
    sig = np.zeros((1, 2, p), np.float32)
    for dom, (npe, t) in hits.items():
        sig[0, :, dom] = npe, t
    return sig


def test_adjacency_is_the_symmetric_pairs_within_the_radius():
    adj = noise.adjacency(line_geometry().positions, RADIUS).toarray()
    assert (adj == adj.T).all() and (np.diag(adj) == 0).all()
    assert adj[0, 1] == adj[1, 2] == 1 and adj[0, 2] == 0  # 200 m apart
    assert adj[3].sum() == adj[4].sum() == 0
    with pytest.raises(DataError, match="radius"):
        noise.adjacency(line_geometry().positions, 0.0)


def test_clean_takes_out_only_hits_without_a_hit_neighbour():
    adj = noise.adjacency(line_geometry().positions, RADIUS)
    sig = event({0: (3, 10_100), 1: (1, 10_200), 2: (1, 12_000), 4: (1, 9_500)})
    assert noise.isolated_hits(sig, adj).tolist() == [[False, False, False, False, True]]
    cleaned = noise.clean(sig, adj)
    assert cleaned[0, :, 4].tolist() == [0, 0] and (cleaned[0, :, :3] == sig[0, :, :3]).all()
    assert sig[0, 0, 4] == 1  # the input is left as it was
    # free DOMs: no hit and none within the radius (DOM 3 only; DOM 4 is free once cleaned)
    assert noise.free_doms(cleaned, adj).tolist() == [[False, False, False, True, True]]


@pytest.fixture(scope="module")
def noisy(geometry, tmp_path_factory):
    """(signal, labels, file) of 800 simulated events with a known noise rate (3e-3 per DOM: ~15 noise hits
    per event)."""
    path = simulate_to_file(tmp_path_factory.mktemp("noisy") / "noisy.h5", 800, geometry, seed=5,
                            cfg=SimConfig(noise_rate=3e-3))
    sig, lab, _ = schema.read_events(path)
    return sig, lab, path


def test_fit_recovers_the_simulators_noise(noisy, geometry):
    sig = noisy[0]
    model = noise.fit([sig[:400], sig[400:]], geometry.positions, RADIUS)
    assert model["rate"] == pytest.approx(3e-3, rel=0.1)  # isolated physics hits add a little, noise pairs lose some
    q = np.asarray(model["time_quantiles_ns"])
    cfg = SimConfig()
    lo, hi = cfg.trigger_time - cfg.window_before, cfg.trigger_time + cfg.window_after
    assert q[0] >= lo - 1 and np.median(q) == pytest.approx((lo + hi) / 2, abs=250)  # uniform in the window
    assert model["npe_values"][0] == 1.0 and model["npe_weights"][0] > 0.95  # noise hits have 1 pe
    quiet = np.concatenate([b for b, _ in simulate(400, geometry, seed=5, cfg=SimConfig(noise_rate=0.0))])
    assert noise.fit([quiet], geometry.positions, RADIUS)["rate"] < 0.1 * model["rate"]


def test_resampling_simulated_events_keeps_their_noise_statistics(noisy, geometry):
    sig = noisy[0]
    model = noise.fit([sig], geometry.positions, RADIUS)
    adj = noise.adjacency(geometry.positions, RADIUS)
    again = noise.resample(sig, geometry.positions, model, np.random.default_rng(0))
    before, after = noise.isolated_hits(sig, adj).sum(1), noise.isolated_hits(again, adj).sum(1)
    se = np.sqrt(before.var() / len(before) + after.var() / len(after))
    assert abs(after.mean() - before.mean()) < 3 * se + 0.1, (before.mean(), after.mean())
    kept = ~noise.isolated_hits(sig, adj)
    hit_kept = kept & (sig[:, 0] > 0)
    assert (again[:, 0][hit_kept] == sig[:, 0][hit_kept]).all()  # the non-isolated hits are untouched
    assert (again[:, 1][hit_kept] == sig[:, 1][hit_kept]).all()
    same = noise.resample(sig, geometry.positions, model, np.random.default_rng(0))
    assert (same == again).all()


def test_noise_radius_is_for_diffusion_models_only(tmp_path):
    with pytest.raises(ConfigError, match="noise_radius_m"):
        config.load(ROOT / "configs" / "flow_tiny.yaml", ["data.noise_radius_m=150"])


def test_training_learns_cleaned_events_and_sampling_draws_the_noise(tmp_path, monkeypatch, geometry, noisy):
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sig, lab, path = noisy
    cfg = config.load(ROOT / "configs" / "tiny.yaml", [f"data.path={path}", *TINY_DIT, "train.max_steps=3",
                                                       "data.noise_radius_m=150", "diffusion.sampling_steps=2"])
    adj = noise.adjacency(geometry.positions, RADIUS)
    cleaned, _ = dataset.read_training_events(path, np.arange(50), geometry, 150.0)
    assert noise.isolated_hits(sig[:50], adj).sum() > 100 and noise.isolated_hits(cleaned, adj).sum() == 0
    result = train(cfg)
    loaded = checkpoint.load_model(result["checkpoint_dir"] + "/last.pt")
    record = loaded.state["data"]
    assert record["noise"]["rate"] == pytest.approx(3e-3, rel=0.15) and record["noise"]["radius_m"] == 150.0
    assert record["hit_doms_min"] >= 8  # counted on the events as recorded, noise and all
    labels = lab[:40]
    a = sampling.generate(loaded, labels, seed=1)
    assert (a == sampling.generate(loaded, labels, seed=1)).all()
    iso = noise.isolated_hits(a, adj)
    free = noise.free_doms(noise.clean(a, adj), adj).sum()
    # every isolated hit is the noise model's: ~rate per free DOM, with its npe (1 pe)
    assert iso.sum() == pytest.approx(record["noise"]["rate"] * free, rel=0.3)
    assert set(np.unique(a[:, 0][iso]).tolist()) <= set(record["noise"]["npe_values"])
    # the Checkpoints page shows the checkpoint's noise model as a figure (genesis.viz.noise_model_figure)
    fig = viz.noise_model_figure(record["noise"])
    x, y = np.asarray(fig.data[0].x), np.asarray(fig.data[0].y)
    assert np.sum(np.diff(x)[::2] * y[::2]) / 1e3 == pytest.approx(1.0)  # a density over the noise hits' times
    assert "per free DOM" in fig.layout.title.text
    at = AppTest.from_file(str(ROOT / "views" / "checkpoints.py"), default_timeout=300).run()
    at.selectbox(key="ckpt_pick").set_value(result["checkpoint_dir"] + "/last.pt").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(m.value.startswith("**Detector noise**") for m in at.markdown)
    assert len(at.get("plotly_chart")) == 3  # parameters by type, the data flow, the noise model
