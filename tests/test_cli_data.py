import h5py
import numpy as np

from conftest import run_cli


def test_simulate_validate_stats(tmp_path):
    out = tmp_path / "sim.h5"
    r = run_cli("simulate", "--events", "30", "--out", str(out), "--seed", "1")
    assert r.returncode == 0, r.stderr
    r = run_cli("validate", str(out))
    assert r.returncode == 0 and "events      30" in r.stdout and "OK" in r.stdout
    r = run_cli("stats", str(out), "--npe-transform", "log1p")
    assert r.returncode == 0 and "affine_scales" in r.stdout
    r = run_cli("stats", str(out), "--time-transform", "asinh", "--time-reference", "arrival")
    assert r.returncode == 0 and 'time_reference: "arrival"' in r.stdout and "time_center_ns: 10000.0" in r.stdout
    r = run_cli("stats", str(out), "--npe-transform", "log1p", "--npe-reference", "expected")
    assert r.returncode == 0 and 'npe_reference: "expected"' in r.stdout and 'representation: "hit"' in r.stdout
    r = run_cli("stats", str(out), "--npe-reference", "expected")
    assert r.returncode == 2 and "--npe-transform log1p" in r.stderr
    # nothing is overwritten without --force
    before = out.read_bytes()
    r = run_cli("simulate", "--events", "5", "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr and out.read_bytes() == before


def test_validate_bad_file_exit_2(tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("input", data=np.zeros((3, 2, 4), np.float32))
    r = run_cli("validate", str(bad))
    assert r.returncode == 2 and "bad.h5" in r.stderr and "'label' is missing" in r.stderr
    assert "Traceback" not in r.stderr


def test_simulate_on_csv_geometry(tmp_path, real_geometry_csv):
    out = tmp_path / "real.h5"
    r = run_cli("simulate", "--events", "5", "--out", str(out), "--geometry", str(real_geometry_csv))
    assert r.returncode == 0, r.stderr
    r = run_cli("validate", str(out), "--geometry", str(real_geometry_csv))
    assert r.returncode == 0, r.stderr


def test_help():
    r = run_cli("--help")
    assert r.returncode == 0 and "simulate" in r.stdout and "inpaint" in r.stdout
