from pathlib import Path

import numpy as np
import pytest

from genesis import geometry
from genesis import geometry as geometry_module
from genesis.errors import DataError


def test_default_geometry_is_the_real_icecube86(geometry):
    g = geometry
    assert g.name == "icecube86" and g.n_doms == 5160 and len(g.strings) == 86
    idx = np.arange(5160)
    assert np.array_equal(g.string, idx // 60 + 1) and np.array_equal(g.dom, idx % 60 + 1)
    # the public table: string 1 DOM 1 and the detector's extent (m)
    assert np.allclose(g.positions[0], [-256.14, -521.08, 496.03], atol=0.01)
    assert np.allclose(g.positions.min(0), [-570.90, -521.08, -512.82], atol=0.01)
    assert np.allclose(g.positions.max(0), [576.37, 509.50, 524.56], atol=0.01)
    std = g.positions[g.string <= 78]
    assert np.median(-np.diff(g.positions[:60, 2])) == pytest.approx(17.0, abs=0.1)
    xy = g.string_xy()
    d = np.linalg.norm(xy[:78, None] - xy[None, :78], axis=-1) + np.eye(78) * 1e9
    assert np.median(d.min(1)) == pytest.approx(125.0, abs=2.0) and std[:, 2].max() < 530
    assert list(g.deepcore_strings()) == list(range(79, 87))


def test_deepcore_dense_below_the_dust_layer(geometry):
    for s in range(79, 87):
        z = geometry.positions[geometry.string == s, 2]
        upper, lower = z[:10], z[10:]
        assert 90 < upper.min() and upper.max() < 195 and np.median(-np.diff(upper)) == pytest.approx(10.0, abs=0.2)
        assert lower.max() < -150 and lower.min() > -510 and np.median(-np.diff(lower)) == pytest.approx(7.0, abs=0.1)
        assert upper.min() - lower.max() > 240  # the dust-layer gap


def test_builtin_matches_the_shared_table(real_geometry_csv, geometry):
    shared = geometry_module_from_csv(real_geometry_csv)
    assert np.array_equal(shared.positions, geometry.positions) and shared.fingerprint() == geometry.fingerprint()


def test_builtin_geometries_by_name():
    assert geometry.load(None).name == "icecube86" and geometry.load("").name == "icecube86"
    assert geometry.load("icecube86").fingerprint() == geometry.icecube86().fingerprint()
    grid = geometry.load("icecube86-grid")
    assert grid.name == "icecube86-grid" and grid.n_doms == 5160
    assert grid.fingerprint() != geometry.icecube86().fingerprint()
    with pytest.raises(DataError, match="icecube86-gird: geometry file not found.*icecube86, icecube86-grid"):
        geometry.load("icecube86-gird")


def test_procedural_grid_layout():
    g = geometry.icecube86_grid()
    idx = np.arange(5160)
    assert np.array_equal(g.string, idx // 60 + 1) and np.array_equal(g.dom, idx % 60 + 1)
    std = g.positions[g.string <= 78]
    assert std[:, 2].max() == pytest.approx(500, abs=30) and std[:, 2].min() == pytest.approx(-500, abs=30)
    assert np.allclose(np.diff(g.positions[:60, 2]), -17.0)
    # neighbouring standard strings ~125 m apart; DeepCore denser and central
    xy = g.string_xy()
    d = np.linalg.norm(xy[:78, None] - xy[None, :78], axis=-1) + np.eye(78) * 1e9
    assert np.allclose(d.min(1), 125.0, atol=1.0)
    assert list(g.deepcore_strings()) == list(range(79, 87))
    assert np.linalg.norm(xy[78:], axis=1).max() < 200


def test_builtin_fits_the_preset_normalization(geometry):
    """The presets map x, y, z with offsets (-600, -550, -550) and scales (1200, 1100, 1100) to [0, 1]."""
    from genesis import config

    for preset in sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml")):
        norm = config.load(preset).data.normalization
        lo = (geometry.positions.min(0) - np.array(norm.affine_offsets[2:])) / np.array(norm.affine_scales[2:])
        hi = (geometry.positions.max(0) - np.array(norm.affine_offsets[2:])) / np.array(norm.affine_scales[2:])
        assert (lo > 0).all() and (hi < 1).all(), preset.name


def test_csv_comments_are_skipped(tmp_path):
    path = tmp_path / "geo.csv"
    path.write_text("# a detector\n#  from somewhere\nstring,dom,x,y,z\n1,1,0,0,10\n# mid comment\n1,2,0,0,0\n")
    g = geometry.from_csv(path)
    assert g.n_doms == 2 and np.array_equal(g.dom, [1, 2])


def test_shuffled_geometry_is_refused_for_patching(geometry):
    geometry_module.require_string_order(geometry, "ok.csv")
    perm = np.random.default_rng(0).permutation(geometry.n_doms)
    shuffled = geometry_module.Geometry(geometry.positions[perm], geometry.string[perm], geometry.dom[perm], "shuffled")
    with pytest.raises(DataError, match="shuffled.csv: DOMs are not ordered by string then DOM.*lexsort"):
        geometry_module.require_string_order(shuffled, "shuffled.csv")
    # DOMs reversed along each string also break the order (DOM numbers must increase)
    rev = np.arange(geometry.n_doms).reshape(86, 60)[:, ::-1].reshape(-1)
    reversed_doms = geometry_module.Geometry(geometry.positions[rev], geometry.string[rev], geometry.dom[rev], "rev")
    with pytest.raises(DataError, match="index 0 is string 1 DOM 60"):
        geometry_module.require_string_order(reversed_doms, "rev.csv")


def test_outline_and_string_ends(geometry):
    hull = geometry.outline()
    assert 6 <= len(hull) <= 20
    top_bottom = geometry.string_top_bottom()
    assert top_bottom.shape == (86, 2, 3) and (top_bottom[:, 0, 2] > top_bottom[:, 1, 2]).all()


def test_csv_round_trip(tmp_path, geometry):
    path = tmp_path / "geo.csv"
    geometry.to_csv(path)
    g2 = geometry_module_from_csv(path)
    assert np.allclose(g2.positions, geometry.positions, atol=1e-3)
    assert g2.fingerprint() == geometry.fingerprint()


def geometry_module_from_csv(path):
    return geometry.from_csv(path)


@pytest.mark.parametrize("content,needle", [
    ("", "empty"),
    ("a,b,c\n1,2,3\n", "lacks column"),
    ("string,dom,x,y,z\n1,1,0,0,zz\n", "malformed"),
    ("string,dom,x,y,z\n1,1,0,0,nan\n", "NaN"),
    ("string,dom,x,y,z\n1,1,0,0,0\n1,1,0,0,1\n", "duplicate"),
    ("string,dom,x,y,z\n", "no DOM rows"),
])
def test_bad_csv(tmp_path, content, needle):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=needle) as err:
        geometry.from_csv(path)
    assert "bad.csv" in str(err.value)


def test_unknown_strings(geometry):
    with pytest.raises(DataError, match="unknown string ids \\[99\\]"):
        geometry.indices_of_strings([1, 99])


def test_real_icecube_geometry(real_geometry_csv):
    g = geometry.from_csv(real_geometry_csv)
    assert g.n_doms == 5160 and len(g.strings) == 86
    assert set(g.deepcore_strings()) >= set(range(80, 87))
    assert np.array_equal(g.string, np.arange(5160) // 60 + 1)


def test_ids_for_custom_geometry():
    xy = np.repeat(np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]]), 4, axis=0)
    string, dom = geometry.default_ids(12, xy)
    assert list(string) == [1] * 4 + [2] * 4 + [3] * 4 and list(dom) == [1, 2, 3, 4] * 3


def test_training_refuses_data_in_shuffled_dom_order(tmp_path, geometry):
    """A data file (and a geometry CSV) whose DOM axis is not ordered by string is refused before training."""
    from genesis.config import DataConfig
    from genesis.data import dataset, schema

    perm = np.random.default_rng(1).permutation(geometry.n_doms)
    shuffled = geometry_module.Geometry(geometry.positions[perm], geometry.string[perm], geometry.dom[perm], "shuf")
    signal = np.zeros((3, 2, geometry.n_doms), np.float32)
    signal[:, 0, :10] = 1.0
    signal[:, 1, :10] = 1e4
    labels = np.tile([[1e4, 1.0, 1.0, 0.0, 0.0, 0.0]], (3, 1)).astype(np.float32)
    ordered = schema.write_events(tmp_path / "ordered.h5", signal, labels, geometry)
    assert dataset.resolve_geometry(DataConfig(path=str(ordered))).fingerprint() == geometry.fingerprint()
    data = schema.write_events(tmp_path / "shuffled.h5", signal, labels, shuffled)
    with pytest.raises(DataError, match="shuffled.h5: DOMs are not ordered by string then DOM"):
        dataset.resolve_geometry(DataConfig(path=str(data)))
    shuffled.to_csv(tmp_path / "shuffled.csv")
    with pytest.raises(DataError, match="shuffled.csv: DOMs are not ordered by string then DOM"):
        dataset.resolve_geometry(DataConfig(path=str(ordered), geometry=str(tmp_path / "shuffled.csv")))
    assert dataset.resolve_geometry(DataConfig(path=str(ordered), geometry="icecube86")).name == "icecube86"
