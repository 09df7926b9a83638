import numpy as np
import pytest

from genesis import geometry
from genesis.errors import DataError


def test_default_geometry_layout(geometry):
    g = geometry
    assert g.n_doms == 5160 and len(g.strings) == 86
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
