import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from genesis.config import DataConfig
from genesis.data import schema
from genesis.data.dataset import (H5EventStream, fingerprint, load_in_memory, open_split, resolve_geometry,
                                  split_indices)
from genesis.data.normalization import Normalization
from genesis.errors import DataError


def test_split_indices_disjoint_and_seeded():
    s = split_indices(1000, 0.1, 0.2, seed=1)
    all_idx = np.concatenate(list(s.values()))
    assert sorted(all_idx.tolist()) == list(range(1000))
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (700, 100, 200)
    assert np.array_equal(split_indices(1000, 0.1, 0.2, 1)["val"], s["val"])
    assert not np.array_equal(split_indices(1000, 0.1, 0.2, 2)["val"], s["val"])
    with pytest.raises(DataError, match="too small"):
        split_indices(2, 0.5, 0.5, 0)


def test_in_memory_matches_file(small_data):
    norm = Normalization(npe_transform="log1p")
    geo = schema.read_geometry(small_data)
    idx = np.array([0, 5, 17])
    ds = load_in_memory(small_data, idx, norm, geo)
    sig, lab, _ = schema.read_events(small_data, indices=idx)
    s, g, l = ds[1]
    assert s.shape == (2, 5160) and g.shape == (3, 5160) and l.shape == (6,)
    assert torch.allclose(s, torch.from_numpy(norm.normalize_signal(sig[1:2])[0]), atol=1e-6)
    batches = list(ds.batches(2, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b[0]) for b in batches] == [2, 1]


def test_stream_with_workers_covers_split(small_data):
    norm = Normalization()
    geo = schema.read_geometry(small_data)
    idx = np.arange(0, 300, 3)
    stream = H5EventStream(small_data, idx, norm, geo, shuffle=True, seed=0, chunk=16)
    labels = torch.cat([b[2] for b in DataLoader(stream, batch_size=8, num_workers=2)])
    _, lab, _ = schema.read_events(small_data, indices=idx)
    expected = torch.from_numpy(norm.normalize_labels(lab))
    assert len(labels) == len(idx)
    # every event exactly once: compare sorted energies
    assert torch.allclose(labels[:, 0].sort().values, expected[:, 0].sort().values)


def test_open_split_modes_and_fingerprint(small_data):
    cfg = DataConfig(path=str(small_data), in_memory="always")
    geo = resolve_geometry(cfg)
    ds = open_split(cfg, "val", Normalization(), geo, torch.device("cpu"))
    assert len(ds) == 40
    stream = open_split(DataConfig(path=str(small_data), in_memory="never"), "train", Normalization(), geo,
                        torch.device("cpu"))
    assert isinstance(stream, H5EventStream) and len(stream) == 320
    shard = open_split(cfg, "train", Normalization(), geo, torch.device("cpu"), rank=1, world=2)
    assert len(shard) == 160
    assert fingerprint(small_data) == fingerprint(small_data) and len(fingerprint(small_data)) == 16


def test_geometry_mismatch(small_data, tmp_path):
    csv = tmp_path / "g.csv"
    csv.write_text("string,dom,x,y,z\n1,1,0,0,0\n1,2,0,0,-17\n")
    with pytest.raises(DataError, match="P = 5160"):
        resolve_geometry(DataConfig(path=str(small_data), geometry=str(csv)))


def test_training_record_describes_the_source_and_the_reference_simulation_uses_it(tmp_path, geometry):
    """The record copies the simulator settings, seed and event count from the file's attributes, so it
    means something once the file is gone; settings_from_record says when the defaults had to be used."""
    import dataclasses

    from genesis.data.dataset import training_data_record
    from genesis.data.simulate import SimConfig, settings_from_record, simulate_to_file

    sim = SimConfig(track_yield=7.5, min_hits=10)
    path = simulate_to_file(tmp_path / "sim.h5", 40, geometry, seed=9, cfg=sim)
    record = training_data_record(DataConfig(path=str(path), val_fraction=0.1, test_fraction=0.1),
                                  Normalization(), geometry.positions)
    assert record["source"]["producer"] == "genesis simulator" and record["source"]["seed"] == 9
    assert record["source"]["events"] == 40 and record["source"]["simulator"] == dataclasses.asdict(sim)
    assert record["hit_doms_trigger"] == 10 and record["hit_doms_min"] >= 10 and "warnings" not in record
    path.unlink()  # another machine: the file is not there, the record still is
    assert settings_from_record({**record, "path": str(path)}) == (sim, None)
    cfg, reason = settings_from_record({"path": str(path)})  # a checkpoint from before the record
    assert cfg == SimConfig() and "records no simulator settings" in reason
    cfg, reason = settings_from_record({"source": {"producer": "genesis import"}})
    assert cfg == SimConfig() and "'genesis import'" in reason


def test_hit_doms_min_counts_triggered_events_only(tmp_path, geometry):
    """Events without pulses (an imported file) do not set the trigger to 0; a file where no event triggered
    records 0 with a warning in the record and the log."""
    from genesis.data.dataset import value_ranges

    signal = np.zeros((20, 2, geometry.n_doms), np.float32)
    for i in range(10):  # half the events have i + 3 hits, the other half none
        signal[i, 0, :i + 3], signal[i, 1, :i + 3] = 1.0, 100.0
    labels = np.tile(np.array([[1e4, 1.0, 1.0, 0.0, 0.0, 0.0]], np.float32), (20, 1))
    schema.write_events(tmp_path / "some_empty.h5", signal, labels, geometry)
    cfg = DataConfig(path=str(tmp_path / "some_empty.h5"), val_fraction=0.0, test_fraction=0.0)
    ranges = value_ranges(cfg, Normalization())
    assert ranges["hit_doms_min"] == 3 and ranges["hit_doms_trigger"] == 1
    assert any("10 of 20 training events" in w for w in ranges["warnings"])
    signal[:] = 0.0
    signal[10, 0, 0], signal[10, 1, 0] = 1.0, 5.0  # one event with one hit, 19 without any: still 1, not 0
    schema.write_events(tmp_path / "one.h5", signal, labels, geometry)
    assert value_ranges(DataConfig(path=str(tmp_path / "one.h5"), val_fraction=0.0, test_fraction=0.0),
                        Normalization())["hit_doms_min"] == 1


def test_fewest_triggered_hits_warns_at_zero(caplog):
    from genesis.data.dataset import fewest_triggered_hits

    fewest, warnings = fewest_triggered_hits(np.array([0, 0, 3]), trigger=5, source="f.h5")
    assert fewest == 0 and any("hit_doms_min is 0" in w for w in warnings)
    assert "hit_doms_min is 0" in caplog.text
    assert fewest_triggered_hits(np.array([5, 7, 6]), trigger=5, source="f.h5") == (5, [])


def test_time_reference_index_must_match_the_simulated_data(tmp_path, geometry):
    from genesis.data.dataset import check_refractive_index
    from genesis.data.simulate import SimConfig, simulate_to_file
    from genesis.errors import ConfigError

    path = simulate_to_file(tmp_path / "n.h5", 4, geometry, seed=1, cfg=SimConfig(refractive_index=1.35))
    arrival = dict(representation="hit", time_reference="arrival", time_transform="asinh")
    check_refractive_index(Normalization(refractive_index=1.35, **arrival), path)
    check_refractive_index(Normalization(), path)  # no time reference: the index is not used
    with pytest.raises(ConfigError, match="data.normalization.refractive_index=1.35"):
        check_refractive_index(Normalization(**arrival), path)
