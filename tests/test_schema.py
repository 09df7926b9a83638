import h5py
import numpy as np
import pytest

from genesis.data import schema
from genesis.errors import DataError
from genesis.geometry import Geometry


def tiny_geometry(p=12):
    pos = np.stack([np.zeros(p), np.zeros(p), -17.0 * np.arange(p)], 1)
    return Geometry(pos, np.ones(p, int), np.arange(1, p + 1), "line")


def lab_file(path, n=5, p=12, nohit=np.inf, **overrides):
    """A file like the lab's: no-hit times marked by `nohit`, no string/dom datasets."""
    rng = np.random.default_rng(0)
    npe = rng.poisson(0.5, (n, p)).astype(np.float32)
    time = np.where(npe > 0, rng.uniform(9000, 11000, (n, p)), nohit).astype(np.float32)
    data = {"input": np.stack([npe, time], 1), "label": rng.uniform(1, 2, (n, 6)).astype(np.float32),
            "xpmt": np.zeros(p, np.float32), "ypmt": np.zeros(p, np.float32), "zpmt": np.arange(p, dtype=np.float32)}
    data.update(overrides)
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if v is not None:
                f.create_dataset(k, data=v)
    return npe, time


@pytest.mark.parametrize("nohit", [np.inf, -np.inf, np.nan, 0.0])
def test_nohit_markers_read_as_zero(tmp_path, nohit):
    path = tmp_path / "lab.h5"
    npe, time = lab_file(path, nohit=nohit)
    signal, labels, info = schema.read_events(path)
    assert np.isfinite(signal).all() and info is None
    hit = npe > 0
    assert np.array_equal(signal[:, 0], npe)
    assert np.allclose(signal[:, 1][hit], time[hit]) and (signal[:, 1][~hit] == 0).all()


def test_round_trip_with_info(tmp_path):
    geo = tiny_geometry()
    rng = np.random.default_rng(1)
    sig = np.stack([rng.poisson(1, (70, 12)), rng.uniform(0, 100, (70, 12))], 1).astype(np.float32)
    sig[:, 1][sig[:, 0] == 0] = 0
    lab = rng.normal(size=(70, 6)).astype(np.float32)
    info = rng.normal(size=(70, 9)).astype(np.float32)
    path = schema.write_events(tmp_path / "rt.h5", sig, lab, geo, info=info, producer={"who": "test"})
    s2, l2, i2 = schema.read_events(path)
    assert np.array_equal(s2, sig) and np.array_equal(l2, lab) and np.array_equal(i2, info)
    attrs = schema.read_attrs(path)
    assert attrs["schema_version"] == schema.SCHEMA_VERSION and "who" in attrs["producer"]
    assert schema.read_geometry(path).fingerprint() == geo.fingerprint()
    s3, _, _ = schema.read_events(path, indices=np.array([3, 40]))
    assert np.array_equal(s3, sig[[3, 40]])


def test_writer_appends_in_chunks_and_refuses_overwrite(tmp_path):
    geo = tiny_geometry()
    path = tmp_path / "w.h5"
    with schema.EventWriter(path, geo) as w:
        for _ in range(3):
            w.append(np.zeros((10, 2, 12), np.float32), np.ones((10, 6), np.float32))
        assert not path.exists()  # only the temporary file exists until close
    assert schema.file_info(path)[0] == 30
    with pytest.raises(DataError, match="exists"):
        schema.EventWriter(path, geo)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with schema.EventWriter(path, geo, force=True) as w:
            w.append(np.zeros((2, 2, 12), np.float32), np.ones((2, 6), np.float32))
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == before  # a failed write loses nothing


@pytest.mark.parametrize("overrides,needle", [
    ({"label": None}, "dataset 'label' is missing"),
    ({"input": np.zeros((5, 3, 12), np.float32)}, "shape \\(N, 2, P\\)"),
    ({"label": np.zeros((5, 5), np.float32)}, "dataset 'label' must have shape"),
    ({"xpmt": np.zeros(11, np.float32)}, "'xpmt' has 11 entries"),
    ({"label": np.full((5, 6), np.nan, np.float32)}, "NaN/inf"),
    ({"input": np.zeros((0, 2, 12), np.float32), "label": np.zeros((0, 6), np.float32)}, "no events"),
    ({"input": -np.ones((5, 2, 12), np.float32)}, "negative npe"),
])
def test_validation_errors_name_file_and_dataset(tmp_path, overrides, needle):
    path = tmp_path / "bad.h5"
    lab_file(path, **overrides)
    with pytest.raises(DataError, match=needle) as err:
        schema.validate(path)
    assert "bad.h5" in str(err.value)


def test_unreadable_files(tmp_path):
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        schema.validate(empty)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5" * 100)
    with pytest.raises(DataError, match="not a readable HDF5"):
        schema.validate(junk)
    with pytest.raises(DataError, match="not found"):
        schema.validate(tmp_path / "missing.h5")


def test_p_mismatch_with_geometry(tmp_path):
    path = tmp_path / "f.h5"
    lab_file(path)
    with pytest.raises(DataError, match="P = 12 DOMs"):
        schema.validate(path, tiny_geometry(10))


def test_summary(small_data):
    s = schema.validate(small_data)
    assert s.n_events == 400 and s.n_doms == 5160
    assert 0 < s.hit_fraction < 0.2 and s.mean_hits_per_event >= 8
    assert 1e3 <= s.label_min[0] <= s.label_max[0] <= 1e7
    assert any("events" in line for line in s.lines())
