"""Bad input sweep: every CLI command and every upload widget fed malformed inputs.

Truncated/empty/random HDF5, wrong shapes, NaN labels, random bytes and a pickle with a code payload as
checkpoints, negative or huge numbers, path traversal strings (with a real text file at the target, so a
case shows what reading it does rather than "file not found"), existing outputs without --force. Each
must get a clear error: the CLI exits 2 with one line "error: ..." naming the file or argument and the
problem (argparse's own usage errors exit 2 too), no traceback; a page shows an error, never an
exception. Nothing is written and nothing is lost: every file present before is byte-identical after,
and no new file appears.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT, run_cli
from genesis import checkpoint, cli, config, paths, tracking
from genesis.errors import ConfigError, GenesisError
from genesis.launcher import form_label

TINY = ROOT / "configs" / "tiny.yaml"
HUGE = str(10**12)


class Payload:
    """Unpickling this runs `touch <path>`: no loader may ever do it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def _h5(path: Path, **datasets) -> None:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value


def _fake_checkpoint(kind: str, data: Path, geometry) -> dict:
    """An untrained but complete checkpoint of a tiny model (no training needed to test refusals)."""
    preset, sizes = (("tiny.yaml", ["model.hidden_size=32", "model.depth=1", "model.time_embed_dim=32"])
                     if kind == "diffusion" else ("flow_tiny.yaml", ["flow.num_couplings=2", "flow.hidden_size=32"]))
    cfg = config.load(ROOT / "configs" / preset, [f"data.path={data}", *sizes])
    model = checkpoint.build_model(cfg, geometry.n_doms, cfg.data.normalization)
    return checkpoint.make_state(cfg, model, model, geometry, 0, 0, float("inf"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory, small_data, geometry) -> SimpleNamespace:
    """in/: good and malformed inputs; out/: outputs that already exist; pwned: what the payload would touch."""
    root = tmp_path_factory.mktemp("bad_input")
    src, out = root / "in", root / "out"
    src.mkdir()
    out.mkdir()
    rng = np.random.default_rng(0)
    good = src / "good.h5"
    shutil.copy(small_data, good)
    raw = good.read_bytes()
    (src / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    (src / "empty.h5").write_bytes(b"")
    (src / "random.h5").write_bytes(rng.bytes(4096))
    pos = np.arange(10, dtype=np.float32)
    _h5(src / "wrong_shape.h5", input=np.ones((4, 3, 10), np.float32), label=np.ones((4, 6), np.float32),
        xpmt=pos, ypmt=pos, zpmt=pos)
    _h5(src / "short_labels.h5", input=np.ones((4, 2, 10), np.float32), label=np.ones((4, 5), np.float32),
        xpmt=pos, ypmt=pos, zpmt=pos)
    shutil.copy(good, src / "nan_labels.h5")
    with h5py.File(src / "nan_labels.h5", "a") as f:
        f["label"][3, 0] = np.nan
    checkpoint.save(_fake_checkpoint("diffusion", good, geometry), src / "diffusion.pt")
    checkpoint.save(_fake_checkpoint("flow", good, geometry), src / "flow.pt")
    (src / "random.pt").write_bytes(rng.bytes(4096))
    ckpt = (src / "diffusion.pt").read_bytes()
    (src / "truncated.pt").write_bytes(ckpt[: len(ckpt) // 2])
    with zipfile.ZipFile(src / "other.pt", "w") as z:
        z.writestr("readme.txt", "a zip archive, but no PyTorch checkpoint")
    pwned = root / "pwned"
    torch.save({"format": "genesis-checkpoint", "kind": "diffusion", "payload": Payload(pwned)}, src / "evil.pt")
    (src / "labels_nan.csv").write_text("energy,zenith,azimuth,x,y,z\n1e5,1,1,0,0,0\nnan,1,1,0,0,0\n")
    (src / "labels_random.csv").write_bytes(rng.bytes(512))
    (src / "labels_noheader.csv").write_text("1e5,1,1,0,0,0\n")
    (src / "binary.yaml").write_bytes(rng.bytes(512))
    (src / "garbage.yaml").write_text("{[")
    (src / "huge_model.yaml").write_text(f"kind: diffusion\nmodel: {{hidden_size: {HUGE}}}\n")
    shutil.copy(good, out / "existing.h5")
    (out / "existing.json").write_text('{"kept": true}\n')
    home = root / "home"
    (home / "data").mkdir(parents=True)
    # Traversal targets exist: the commands run in out/work, so '../../etc/passwd' is root/etc/passwd, a real
    # text file like the system's (the cases test what reading it does, not "file not found")
    (out / "work").mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    return SimpleNamespace(root=root, src=src, out=out, home=home, pwned=pwned, cwd=out / "work")


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root (hidden ones too) -> sha256 of its bytes ('dir' for folders)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    assert after == before, {"new": sorted(set(after) - set(before)), "lost": sorted(set(before) - set(after)),
                             "changed": sorted(k for k in before if k in after and before[k] != after[k])}


def assert_one_error_line(stderr: str, fragments: list[str], usage: bool = False) -> None:
    """Exactly one error line, the last one, naming every fragment; never a traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    if usage:  # argparse: usage lines, then "python -m genesis <cmd>: error: ..."
        errors = [ln for ln in lines if ": error: " in ln]
    else:
        errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines[-5:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


# --- CLI sweep (in-process: cli.main is what `python -m genesis` runs) ----------------------------------
# (id, argv with {in}/{out} placeholders, fragments the error line must contain); "usage" = argparse error
D, F, GOOD = "{in}/diffusion.pt", "{in}/flow.pt", "{in}/good.h5"
SAMPLE = ["sample", "--checkpoint", D, "--steps", "2", "--out", "{out}/g.h5"]
INPAINT = ["inpaint", "--data", GOOD, "--mask", "strings:1", "--method", "zero", "--out", "{out}/i.h5"]
EVAL = ["evaluate", "--checkpoint", D, "--no-mlflow", "--device", "cpu", "--out", "{out}/r.json"]
SIM = ["simulate", "--events", "2", "--out", "{out}/s.h5"]
TRAIN = ["train", "--config", str(TINY), "--set", "train.device=cpu"]
CLI_CASES = [
    # validate
    ("validate-missing", ["validate", "{in}/missing.h5"], ["missing.h5", "file not found"]),
    ("validate-truncated", ["validate", "{in}/truncated.h5"], ["truncated.h5", "not a readable HDF5 file", "truncated"]),
    ("validate-empty", ["validate", "{in}/empty.h5"], ["empty.h5", "file is empty"]),
    ("validate-random", ["validate", "{in}/random.h5"], ["random.h5", "not a readable HDF5 file"]),
    ("validate-shape", ["validate", "{in}/wrong_shape.h5"], ["wrong_shape.h5", "'input'", "(N, 2, P)", "(4, 3, 10)"]),
    ("validate-label-shape", ["validate", "{in}/short_labels.h5"], ["short_labels.h5", "'label'", "(4, 5)"]),
    ("validate-nan-labels", ["validate", "{in}/nan_labels.h5"], ["nan_labels.h5", "NaN", "event 3", "energy"]),
    ("validate-folder", ["validate", "{in}"], ["is a folder"]),
    ("validate-traversal", ["validate", "../../etc/passwd"], ["../../etc/passwd", "not a readable HDF5 file"]),
    ("validate-geometry-random", ["validate", GOOD, "--geometry", "{in}/random.pt"], ["random.pt", "geometry"]),
    # stats
    ("stats-truncated", ["stats", "{in}/truncated.h5"], ["truncated.h5", "not a readable HDF5 file"]),
    ("stats-shape", ["stats", "{in}/wrong_shape.h5"], ["wrong_shape.h5", "'input'"]),
    ("stats-nan-labels", ["stats", "{in}/nan_labels.h5"], ["nan_labels.h5", "NaN", "event 3"]),
    ("stats-zero-events", ["stats", GOOD, "--max-events", "0"], ["--max-events", "positive", "usage"]),
    # simulate
    ("simulate-negative", ["simulate", "--events", "-5", "--out", "{out}/s.h5"], ["--events", "-5", "usage"]),
    ("simulate-huge", ["simulate", "--events", HUGE, "--out", "{out}/s.h5"], [HUGE, "at most"]),
    ("simulate-huge-new-folder", ["simulate", "--events", HUGE, "--out", "{out}/new/s.h5"], [HUGE, "at most"]),
    ("simulate-min-hits", [*SIM, "--min-hits", "100000"], ["min_hits 100000", "5160 DOMs"]),
    ("simulate-negative-min-hits", [*SIM, "--min-hits", "-1"], ["min_hits"]),
    ("simulate-energy-inf", [*SIM, "--energy-max", "1e400"], ["energy_max", "inf"]),
    ("simulate-energy-huge", [*SIM, "--energy-max", "1e30"], ["energy_max", "1e+30"]),
    ("simulate-energy-nan", [*SIM, "--energy-min", "nan"], ["energy_min", "nan"]),
    ("simulate-noise-rate", [*SIM, "--noise-rate", "2"], ["noise_rate"]),
    ("simulate-seed", [*SIM, "--seed", "-1"], ["--seed", "usage"]),
    ("simulate-geometry", [*SIM, "--geometry", "{in}/random.pt"], ["random.pt", "geometry CSV"]),
    ("simulate-exists", ["simulate", "--events", "2", "--out", "{out}/existing.h5"], ["existing.h5", "exists", "--force"]),
    ("simulate-traversal-exists", ["simulate", "--events", "2", "--out", "{out}/../in/good.h5"],
     ["../in/good.h5", "exists"]),
    ("simulate-folder", ["simulate", "--events", "2", "--out", "{out}", "--force"], ["is a folder"]),
    # sample
    ("sample-missing-ckpt", ["sample", "--checkpoint", "{in}/nope.pt", "--out", "{out}/g.h5"], ["nope.pt", "not found"]),
    ("sample-random-ckpt", ["sample", "--checkpoint", "{in}/random.pt", "--out", "{out}/g.h5"],
     ["random.pt", "not a PyTorch checkpoint"]),
    ("sample-truncated-ckpt", ["sample", "--checkpoint", "{in}/truncated.pt", "--out", "{out}/g.h5"], ["truncated.pt"]),
    ("sample-zip-ckpt", ["sample", "--checkpoint", "{in}/other.pt", "--out", "{out}/g.h5"], ["other.pt", "checkpoint"]),
    ("sample-hdf5-ckpt", ["sample", "--checkpoint", GOOD, "--out", "{out}/g.h5"], ["good.h5", "not a PyTorch checkpoint"]),
    ("sample-pickle-payload", ["sample", "--checkpoint", "{in}/evil.pt", "--out", "{out}/g.h5"],
     ["evil.pt", "refused", "run code"]),
    ("sample-huge-n", [*SAMPLE, "--n", HUGE], [f"{HUGE} events", "at most"]),
    ("sample-huge-steps", [*SAMPLE[:3], "--steps", HUGE, "--out", "{out}/g.h5"], ["steps", HUGE]),
    ("sample-negative-energy", [*SAMPLE, "--energy=-5"], ["energy must be positive"]),
    ("sample-nan-energy", [*SAMPLE, "--energy", "nan"], ["NaN", "energy"]),
    ("sample-nan-guidance", [*SAMPLE, "--guidance", "nan"], ["guidance", "nan"]),
    ("sample-negative-guidance", [*SAMPLE, "--guidance=-3"], ["guidance", "-3"]),
    ("sample-labels-nan", [*SAMPLE, "--labels", "{in}/labels_nan.csv"], ["labels_nan.csv", "NaN", "energy"]),
    ("sample-labels-random", [*SAMPLE, "--labels", "{in}/labels_random.csv"], ["labels_random.csv", "labels CSV"]),
    ("sample-labels-no-header", [*SAMPLE, "--labels", "{in}/labels_noheader.csv"], ["labels_noheader.csv", "header"]),
    ("sample-labels-traversal", [*SAMPLE, "--labels", "../../etc/passwd"],
     ["../../etc/passwd", "labels CSV needs a header"]),
    ("sample-exists", [*SAMPLE[:-1], "{out}/existing.h5"], ["existing.h5", "exists", "--force"]),
    ("sample-no-folder", [*SAMPLE[:-1], "{out}/nodir/g.h5"], ["nodir", "does not exist"]),
    ("sample-folder", [*SAMPLE[:-1], "{out}", "--force"], ["is a folder"]),
    ("sample-device", [*SAMPLE, "--device", "../../etc"], ["device", "../../etc"]),
    ("sample-huge-seed", [*SAMPLE, "--seed", str(10**20)], ["--seed", "usage"]),
    ("sample-zero-batch", [*SAMPLE, "--batch-size", "0"], ["--batch-size", "usage"]),
    # inpaint
    ("inpaint-truncated-data", ["inpaint", "--data", "{in}/truncated.h5", *INPAINT[3:]], ["truncated.h5"]),
    ("inpaint-shape-data", ["inpaint", "--data", "{in}/wrong_shape.h5", *INPAINT[3:]], ["wrong_shape.h5", "'input'"]),
    ("inpaint-nan-labels", ["inpaint", "--data", "{in}/nan_labels.h5", "--events", "3", *INPAINT[3:]],
     ["nan_labels.h5", "NaN", "event 3"]),
    ("inpaint-data-traversal", ["inpaint", "--data", "../../etc/passwd", *INPAINT[3:]],
     ["../../etc/passwd", "not a readable HDF5 file"]),
    ("inpaint-huge-range", [*INPAINT, "--events", f"0-{HUGE}"], ["--events", HUGE]),
    ("inpaint-negative-event", [*INPAINT, "--events=-5"], ["--events", "-5"]),
    ("inpaint-event-past-end", [*INPAINT, "--events", "400"], ["--events", "400", "0..399"]),
    ("inpaint-mask-garbage", [*INPAINT[:4], "bogus:1", *INPAINT[5:]], ["malformed mask", "bogus:1"]),
    ("inpaint-mask-negative", [*INPAINT[:4], "random:-1", *INPAINT[5:]], ["random mask fraction", "-1"]),
    ("inpaint-mask-huge-string", [*INPAINT[:4], f"strings:{HUGE}", *INPAINT[5:]], ["unknown string ids", HUGE]),
    ("inpaint-dead-traversal", [*INPAINT[:4], "dead:../../etc/passwd", *INPAINT[5:]],
     ["../../etc/passwd", "'string' and 'dom'"]),
    ("inpaint-dead-random", [*INPAINT[:4], "dead:{in}/labels_random.csv", *INPAINT[5:]], ["labels_random.csv"]),
    ("inpaint-pickle-payload", [*INPAINT[:6], "flow-map", "--checkpoint", "{in}/evil.pt", *INPAINT[7:]],
     ["evil.pt", "refused"]),
    ("inpaint-random-ckpt", [*INPAINT[:6], "flow-map", "--checkpoint", "{in}/random.pt", *INPAINT[7:]], ["random.pt"]),
    ("inpaint-wrong-kind", [*INPAINT[:6], "flow-map", "--checkpoint", D, *INPAINT[7:]], ["diffusion checkpoint", "flow"]),
    ("inpaint-no-ckpt", [*INPAINT[:6], "flow-map", *INPAINT[7:]], ["needs a checkpoint", "--checkpoint"]),
    ("inpaint-huge-steps", [*INPAINT[:6], "flow-map", "--checkpoint", F, "--steps", HUGE, *INPAINT[7:]],
     ["steps", HUGE]),
    ("inpaint-huge-restarts", [*INPAINT[:6], "flow-map", "--checkpoint", F, "--steps", "1", "--restarts", HUGE,
                               *INPAINT[7:]], ["restarts", HUGE]),
    ("inpaint-exists", [*INPAINT[:-1], "{out}/existing.h5"], ["existing.h5", "exists", "--force"]),
    ("inpaint-folder", [*INPAINT[:-1], "{out}", "--force"], ["is a folder"]),
    # inspect
    ("inspect-nothing", ["inspect"], ["--checkpoint", "--config"]),
    ("inspect-random", ["inspect", "--checkpoint", "{in}/random.pt"], ["random.pt", "not a PyTorch checkpoint"]),
    ("inspect-truncated", ["inspect", "--checkpoint", "{in}/truncated.pt"], ["truncated.pt"]),
    ("inspect-pickle-payload", ["inspect", "--checkpoint", "{in}/evil.pt"], ["evil.pt", "refused", "system"]),
    ("inspect-config-binary", ["inspect", "--config", "{in}/binary.yaml"], ["binary.yaml", "config"]),
    ("inspect-config-garbage", ["inspect", "--config", "{in}/garbage.yaml"], ["garbage.yaml", "not valid YAML"]),
    ("inspect-config-huge-model", ["inspect", "--config", "{in}/huge_model.yaml"], ["does not fit in memory",
                                                                                    "hidden_size"]),
    ("inspect-huge-batch-negative", ["inspect", "--config", str(TINY), "--batch-size", "-1"], ["--batch-size", "usage"]),
    # evaluate
    ("evaluate-random-ckpt", ["evaluate", "--checkpoint", "{in}/random.pt", "--out", "{out}/r.json"], ["random.pt"]),
    ("evaluate-pickle-payload", ["evaluate", "--checkpoint", "{in}/evil.pt", "--out", "{out}/r.json"],
     ["evil.pt", "refused"]),
    ("evaluate-huge-simulate", [*EVAL, "--simulate", HUGE], ["--simulate", HUGE, "too many"]),
    ("evaluate-few-simulate", [*EVAL, "--simulate", "5"], ["--simulate 5", "too few"]),
    ("evaluate-truncated-data", [*EVAL, "--data", "{in}/truncated.h5"], ["truncated.h5"]),
    ("evaluate-random-data", [*EVAL, "--data", "{in}/random.h5"], ["random.h5"]),
    ("evaluate-exists", [*EVAL[:-1], "{out}/existing.json", "--simulate", "300"], ["existing.json", "exists", "--force"]),
    ("evaluate-html-exists", [*EVAL, "--html", "{out}/existing.h5", "--simulate", "300"], ["existing.h5", "exists"]),
    ("evaluate-folder", [*EVAL[:-1], "{out}", "--force", "--simulate", "300"], ["is a folder"]),
    ("evaluate-device", [*EVAL[:5], "../x", "--out", "{out}/r.json", "--simulate", "300"], ["device", "../x"]),
    # train: data problems must stop it before any MLflow run exists (checked in the test)
    ("train-missing-data", [*TRAIN, "--set", "data.path={in}/missing.h5"], ["missing.h5", "not found"]),
    ("train-truncated-data", [*TRAIN, "--set", "data.path={in}/truncated.h5"], ["truncated.h5"]),
    ("train-random-data", [*TRAIN, "--set", "data.path={in}/random.h5"], ["random.h5"]),
    ("train-shape-data", [*TRAIN, "--set", "data.path={in}/wrong_shape.h5"], ["wrong_shape.h5", "'input'"]),
    ("train-nan-labels", [*TRAIN, "--set", "data.path={in}/nan_labels.h5"], ["nan_labels.h5", "NaN", "event 3"]),
    ("train-traversal-data", [*TRAIN, "--set", "data.path=../../etc/passwd"], ["/etc/passwd", "not a readable HDF5 file"]),
    ("train-negative-batch", [*TRAIN, "--set", "train.batch_size=-1"], ["train.batch_size", ">= 1"]),
    ("train-nan-lr", [*TRAIN, "--set", "train.lr=.nan"], ["train.lr", "finite"]),
    ("train-inf-lr", [*TRAIN, "--set", "train.lr=.inf"], ["train.lr", "finite"]),
    ("train-nan-val-fraction", [*TRAIN, "--set", "data.val_fraction=.nan"], ["data.val_fraction", "finite"]),
    ("train-unknown-key", [*TRAIN, "--set", "model.bogus=1"], ["model.bogus"]),
    ("train-bad-override", [*TRAIN, "--set", "nonsense"], ["nonsense", "section.key=value"]),
    ("train-bad-normalization", [*TRAIN, "--set", "data.normalization.affine_scales=abc"], ["affine_scales"]),
    ("train-binary-config", ["train", "--config", "{in}/binary.yaml"], ["binary.yaml"]),
    ("train-garbage-config", ["train", "--config", "{in}/garbage.yaml"], ["garbage.yaml", "not valid YAML"]),
    ("train-resume-random", [*TRAIN, "--set", f"data.path={GOOD}", "--resume", "{in}/random.pt"], ["random.pt"]),
    ("train-resume-pickle", [*TRAIN, "--set", f"data.path={GOOD}", "--resume", "{in}/evil.pt"], ["evil.pt", "refused"]),
]


@pytest.fixture()
def cli_env(bad, monkeypatch):
    monkeypatch.setenv("GENESIS_HOME", str(bad.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(bad.cwd)  # relative paths ('../../etc/passwd' -> root/etc/passwd, stray writes) resolve from here
    return bad


@pytest.mark.timeout(120)
@pytest.mark.parametrize("argv,fragments", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_bad_input(cli_env, capsys, argv, fragments):
    bad = cli_env
    argv = [a.replace("{in}", str(bad.src)).replace("{out}", str(bad.out)) for a in argv]
    usage = "usage" in fragments
    before = snapshot(bad.root)
    t0 = time.time()
    if usage:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        code = exit_info.value.code
    else:
        code = cli.main(argv)
    elapsed = time.time() - t0
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert_one_error_line(err, [f for f in fragments if f != "usage"], usage)
    assert elapsed < 60, f"refused only after {elapsed:.0f} s: bad input must be refused before any real work"
    assert_unchanged(before, snapshot(bad.root))
    assert not bad.pwned.exists(), "the checkpoint's pickle payload ran"
    if argv[0] == "train":
        assert tracking.Store.default().search()[0].empty, "a bad training input created an MLflow run"


# --- the real command line: a subprocess per command, exit status and stderr as a user sees them ---------
PROCESS_CASES = [
    ("validate", ["validate", "{in}/truncated.h5"], ["truncated.h5"]),
    ("stats", ["stats", "{in}/nan_labels.h5"], ["nan_labels.h5", "NaN"]),
    ("simulate", ["simulate", "--events", HUGE, "--out", "{out}/s.h5"], [HUGE, "at most"]),
    ("sample", ["sample", "--checkpoint", "{in}/evil.pt", "--out", "{out}/g.h5"], ["evil.pt", "refused"]),
    ("inpaint", [*INPAINT, "--events", f"0-{HUGE}"], ["--events", HUGE]),
    ("inspect", ["inspect", "--checkpoint", "{in}/evil.pt"], ["evil.pt", "refused"]),
    ("evaluate", [*EVAL, "--simulate", HUGE], ["--simulate", "too many"]),
    ("train", [*TRAIN, "--set", "data.path={in}/nan_labels.h5"], ["nan_labels.h5", "NaN"]),
]


@pytest.mark.parametrize("argv,fragments", [c[1:] for c in PROCESS_CASES], ids=[c[0] for c in PROCESS_CASES])
def test_cli_process_exit_2_without_traceback(cli_env, argv, fragments):
    bad = cli_env
    argv = [a.replace("{in}", str(bad.src)).replace("{out}", str(bad.out)) for a in argv]
    before = snapshot(bad.root)
    r = run_cli(*argv, cwd=bad.out, env={"GENESIS_HOME": str(bad.home)}, timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    assert_one_error_line(r.stderr, fragments)
    assert_unchanged(before, snapshot(bad.root))
    assert not bad.pwned.exists()
    if argv[0] == "train":
        assert tracking.Store.default().search()[0].empty


def test_train_model_too_big_for_memory_is_a_clear_error(cli_env):
    """A huge model size is refused with a clear message (the run, already created, ends FAILED with it)."""
    bad = cli_env
    r = run_cli("train", "--config", str(bad.src / "huge_model.yaml"), "--set", f"data.path={bad.src / 'good.h5'}",
                "--set", "train.device=cpu", cwd=bad.out, env={"GENESIS_HOME": str(bad.home)}, timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    assert_one_error_line(r.stderr, ["does not fit in memory", "model.hidden_size"])
    frame, _ = tracking.Store.default().search()
    assert list(frame["status"]) == ["FAILED"]
    assert "does not fit in memory" in frame.iloc[0][f"tags.{tracking.TAG_ERROR}"]
    tracking.Store.default().client.delete_run(frame.iloc[0]["run_id"])


def test_config_layer_refuses_negative_and_non_finite_numbers():
    for override, key in (("train.batch_size=-1", "train.batch_size"), ("train.epochs=0", "train.epochs"),
                          ("model.hidden_size=-32", "model.hidden_size"), ("train.lr=-1e-3", "train.lr"),
                          ("train.lr=.nan", "train.lr"), ("train.max_minutes=.inf", "train.max_minutes"),
                          ("diffusion.guidance_scale=-.inf", "diffusion.guidance_scale"),
                          ("data.normalization.affine_scales=[1, 2]", "affine_scales"),
                          ("data.normalization.label_scales=oops", "label_scales")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config.load(TINY, [override])


# --- path traversal in the dashboard's file handling -------------------------------------------------------
def test_paths_inside_refuses_traversal(tmp_path, monkeypatch):
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    for bad_path in ("../../etc/passwd", "data/../../outside.h5", "/etc/passwd", "mlruns/../../x.pt"):
        with pytest.raises(GenesisError, match="outside the project folders"):
            paths.inside(bad_path)
    assert paths.inside("data/ok.h5") == tmp_path / "data" / "ok.h5"


def test_save_upload_keeps_names_inside_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path / "home"))
    from views._shared import save_upload

    folder = paths.data_dir()
    (folder / "taken.h5").write_bytes(b"mine")
    upload = lambda name, size=10: SimpleNamespace(name=name, size=size)  # noqa: E731
    for name in ("../../evil.h5", "/etc/evil.h5", "sub/../../evil.h5", "a/b/../../../evil.h5"):
        target = save_upload(upload(name), folder, (".h5",))
        assert target == folder / "evil.h5", (name, target)
    for name, problem in (("..", "must be a .h5"), (".hidden.h5", "must be a .h5"), ("", "must be a .h5"),
                          ("..\\..\\evil.h5", "must be a .h5"),
                          ("../../etc/passwd", "must be a .h5"), ("evil.pt", "must be a .h5"),
                          ("taken.h5", "already exists")):
        with pytest.raises(GenesisError, match=problem):
            save_upload(upload(name), folder, (".h5",))
    with pytest.raises(GenesisError, match="limit is 200 MB"):
        save_upload(upload("big.h5", 201 * 2**20), folder, (".h5",))
    assert (folder / "taken.h5").read_bytes() == b"mine"
    assert sorted(p.name for p in (tmp_path).rglob("*") if p.is_file()) == ["taken.h5"]


# --- upload widgets and forms on the pages -----------------------------------------------------------------
def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / f"{name}.py"), default_timeout=120)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def messages(at: AppTest, *kinds: str) -> list[str]:
    return [m.value for kind in kinds for m in getattr(at, kind)]


@pytest.fixture()
def page_home(tmp_path, monkeypatch, bad):
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data").mkdir()
    return tmp_path


def upload_and_click(at: AppTest, name: str, data: bytes, button: str, index: int = 0) -> AppTest:
    at.file_uploader[index].set_value((name, data, "application/octet-stream")).run()
    return next(b for b in at.button if b.label == button).click().run()


def test_data_page_upload_refuses_malformed_files(page_home, bad):
    shutil.copy(bad.src / "good.h5", page_home / "data" / "taken.h5")
    before = snapshot(page_home)
    at = page("data").run()
    assert_clean(at)
    for source, name, problem in (("truncated.h5", "up.h5", "not a readable HDF5 file"),
                                  ("random.h5", "up.h5", "not a readable HDF5 file"),
                                  ("empty.h5", "up.h5", "file is empty"),
                                  ("wrong_shape.h5", "up.h5", "must have shape (N, 2, P)"),
                                  ("nan_labels.h5", "up.h5", "'label' has NaN/inf"),
                                  ("random.h5", "../../evil.h5", "not a readable HDF5 file"),
                                  ("random.h5", "taken.h5", "already exists")):
        at = upload_and_click(at, name, (bad.src / source).read_bytes(), "Validate and keep")
        assert_clean(at)
        errors = messages(at, "error")
        assert any(problem in e for e in errors), (source, name, errors)
        assert not any(str(page_home) in e or "/tmp" in e for e in errors), ("staging path shown", errors)
        assert not messages(at, "success"), (source, name)
        assert_unchanged(before, snapshot(page_home))
    assert not (page_home.parent / "evil.h5").exists()


def test_checkpoints_page_upload_refuses_malformed_files(page_home, bad):
    at = page("checkpoints").run()
    assert_clean(at)
    uploads = paths.mlruns_dir() / "uploads"
    for source, name, problem in (("random.pt", "up.pt", "not a PyTorch checkpoint"),
                                  ("truncated.pt", "up.pt", "up.pt"),
                                  ("other.pt", "up.pt", "up.pt"),
                                  ("good.h5", "up.pt", "not a PyTorch checkpoint"),
                                  ("evil.pt", "up.pt", "refused"),
                                  ("evil.pt", "../../evil.pt", "refused")):
        at = upload_and_click(at, name, (bad.src / source).read_bytes(), "Inspect and keep")
        assert_clean(at)
        errors = messages(at, "error")
        assert any(e.startswith("Not kept:") and problem in e for e in errors), (source, name, errors)
        assert not messages(at, "success"), (source, name)
        assert not any(uploads.glob("*")), sorted(uploads.glob("*"))
        assert not bad.pwned.exists(), "the uploaded checkpoint's pickle payload ran"
    assert not (page_home.parent / "evil.pt").exists()
    assert tracking.Store.default().search()[0].empty


def test_sample_page_labels_csv_refuses_malformed_files(page_home, bad):
    uploads = paths.mlruns_dir() / "uploads"
    uploads.mkdir(parents=True)
    shutil.copy(bad.src / "diffusion.pt", uploads / "diffusion.pt")
    before = snapshot(page_home / "data")
    at = page("sample").run()
    assert_clean(at)
    at = next(r for r in at.radio if r.label == "Labels from").set_value("a CSV file").run()
    assert_clean(at)
    for name, data, problem in (("l.csv", (bad.src / "labels_random.csv").read_bytes(), "l.csv"),
                                ("l.csv", (bad.src / "labels_noheader.csv").read_bytes(), "needs a header"),
                                ("l.csv", (bad.src / "labels_nan.csv").read_bytes(), "NaN"),
                                ("l.csv", b"energy,zenith,azimuth,x,y,z\n-5,1,1,0,0,0\n", "energy must be positive"),
                                ("l.csv", b"energy,zenith,azimuth,x,y,z\n1e5,abc,1,0,0,0\n", "non-numeric"),
                                ("l.csv", b"", "l.csv"),
                                ("../../l.csv", (bad.src / "labels_random.csv").read_bytes(), "labels CSV")):
        at.file_uploader[0].set_value((name, data, "text/csv")).run()
        assert_clean(at)
        errors = messages(at, "error")
        assert any(problem in e and Path(name).name in e for e in errors), (name, data[:40], errors)
        assert not [b for b in at.button if b.label == "Generate"], "a bad CSV must stop before Generate"
        assert_unchanged(before, snapshot(page_home / "data"))


def test_inpaint_page_dead_dom_upload_refuses_malformed_files(page_home, bad):
    uploads = paths.mlruns_dir() / "uploads"
    uploads.mkdir(parents=True)
    shutil.copy(bad.src / "flow.pt", uploads / "flow.pt")
    shutil.copy(bad.src / "good.h5", page_home / "data" / "demo.h5")
    before = snapshot(page_home / "data")
    at = page("inpaint").run()
    assert_clean(at)
    for name, data, problem in (("dead.csv", (bad.src / "labels_random.csv").read_bytes(), "dead.csv"),
                                ("dead.csv", b"string,dom\n1,999\n", "not in geometry"),
                                ("dead.csv", b"string,dom\nx,y\n", "integer string and dom"),
                                ("dead.txt", b"99999999\n", "out of range"),
                                ("dead.txt", b"-1\n", "out of range"),
                                ("dead.txt", b"", "lists no DOM"),
                                ("../../dead.txt", b"hello\n", "dead.txt")):
        at.file_uploader[0].set_value((name, data, "text/plain")).run()
        assert_clean(at)
        # a mask problem is shown as a warning next to the mask widgets, and it disables the Inpaint button
        shown = messages(at, "error", "warning")
        assert any(problem in m for m in shown), (name, data[:40], shown)
        assert not any("/tmp" in m for m in shown), ("staging path shown", shown)
        assert next(b for b in at.button if b.label == "Inpaint").disabled, name
        assert_unchanged(before, snapshot(page_home / "data"))


def test_train_page_bad_numbers_and_garbage_yaml_launch_nothing(page_home, bad):
    shutil.copy(bad.src / "good.h5", page_home / "data" / "demo.h5")
    at = page("train").run()
    assert_clean(at)
    batch = next(n for n in at.number_input if n.label == form_label("train.batch_size"))
    assert batch.min == 1  # the form cannot even send a negative batch size; the config layer refuses it too
    with pytest.raises(ConfigError, match="train.batch_size"):
        config.load(TINY, ["train.batch_size=-1"])
    for text in ("{[", "affine_scales: abc", "affine_scales: [1, 2]", "just a string", "bogus: 1"):
        at.text_area[0].set_value(text)
        at = next(b for b in at.button if b.label == "Launch").click().run()
        assert_clean(at)
        assert any(e.startswith("Not launched") for e in messages(at, "error")), (text, messages(at, "error"))
        assert not messages(at, "success"), text
    assert tracking.Store.default().search()[0].empty
