"""genesis.inspect: checkpoint/config reports, the safe reader for legacy files, comparison, CLI."""

from __future__ import annotations

import collections
import io
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from genesis import checkpoint, cli, config
from genesis import inspect as gi
from genesis.data import schema
from genesis.data.normalization import Normalization
from genesis.errors import CheckpointError
from genesis.geometry import Geometry

P, B = 120, 8
NORM = Normalization(affine_scales=(5.0, 10.0, 1200.0, 1100.0, 1100.0), npe_transform="log1p",
                     energy_transform="log10", label_offsets=(3.0, 0.0, 0.0, -600.0, -550.0, -550.0))
TINY = {"model": {"hidden_size": 32, "depth": 2, "num_heads": 4, "patch_size": 60, "time_embed_dim": 32},
        "flow": {"num_couplings": 2, "hidden_size": 32, "depth": 1, "num_heads": 4, "patch_size": 60}}


def tiny_cfg(kind: str, norm: Normalization = NORM, **sections) -> config.RunConfig:
    return config.from_dict(config.RunConfig, {"kind": kind, **TINY, **sections,
                                               "data": {"path": "nowhere.h5", "normalization": norm.to_dict()}})


@pytest.fixture(scope="module")
def geo() -> Geometry:
    rng = np.random.default_rng(0)
    return Geometry(rng.uniform(-500, 500, (P, 3)), np.repeat([1, 2], 60), np.tile(np.arange(1, 61), 2), "tiny")


def save_ckpt(path: Path, kind: str, geo: Geometry, norm: Normalization = NORM) -> Path:
    torch.manual_seed(0)
    cfg = tiny_cfg(kind, norm)
    model = checkpoint.build_model(cfg, P, norm)
    state = checkpoint.make_state(cfg, model, model, geo, step=42, epoch=3, best_val_loss=0.25,
                                  data={"path": "data/x.h5", "fingerprint": "abc123", "size": 10},
                                  mlflow={"run_id": "run-1", "tracking_uri": "sqlite:///m.db"})
    return checkpoint.save(state, path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, geo) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    return {kind: save_ckpt(d / f"{kind}.pt", kind, geo) for kind in ("diffusion", "flow")}


@pytest.fixture(scope="module")
def reports(ckpts) -> dict[str, dict]:
    return {kind: gi.inspect_checkpoint(path, B) for kind, path in ckpts.items()}


# --- GENESIS checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_checkpoint_report(kind, ckpts, reports):
    r = reports[kind]
    json.dumps(r, allow_nan=False)  # plain JSON for the dashboard
    model = checkpoint.load_model(ckpts[kind]).model
    n_params = sum(p.numel() for p in model.parameters())
    prm = r["parameters"]
    assert prm["total"] == prm["trainable"] == n_params
    assert prm["buffers"] == sum(b.numel() for b in model.buffers())
    assert sum(g["params"] for g in prm["by_type"]) == n_params
    assert sum(g["share_pct"] for g in prm["by_type"]) == pytest.approx(100.0)
    assert len(prm["modules"]) == len(list(model.modules()))
    assert r["normalization"] == NORM.to_dict()
    assert Normalization.from_dict(r["normalization"]) == NORM
    assert r["memory"]["parameters_mb"] == pytest.approx(4 * n_params / 2**20)
    assert r["model"]["type"] == type(model).__name__ and r["model"]["kind"] == kind
    assert r["model"]["n_doms"] == P and r["model"]["n_tokens"] == 2
    assert r["source"]["loadable"] and not r["source"]["notes"]
    prov = r["provenance"]
    assert (prov["run_id"], prov["step"], prov["epoch"], prov["best_val_loss"]) == ("run-1", 42, 3, 0.25)
    assert prov["data"]["fingerprint"] == "abc123" and prov["format_version"] == checkpoint.FORMAT_VERSION
    text = gi.render_text(r)
    assert "affine_scales    [5.0, 10.0, 1200.0, 1100.0, 1100.0]" in text and "run-1" in text
    assert "Modules" not in text and "Modules" in gi.render_text(r, verbose=True)


def test_diffusion_data_flow(reports):
    flow = {s["stage"]: s["shape"] for s in reports["diffusion"]["data_flow"]}
    assert flow["input x_t"] == f"({B}, 2, {P})" and flow["geometry"] == f"(3, {P})"
    assert flow["labels"] == f"({B}, 6)" and flow["timestep t"] == f"({B},)"
    assert flow["conditioning c"] == f"({B}, 32)"
    assert flow["signal_embed (PatchEmbed)"] == flow["fused tokens"] == f"({B}, 2, 32)"
    assert flow["blocks x2 (DiTBlock)"] == f"({B}, 2, 32)"
    assert flow["final_layer (FinalLayer)"] == f"({B}, 2, 120)"  # 2 tokens x (patch 60 x 2 channels)
    assert list(flow)[-1] == "unpatchify -> output" and flow["unpatchify -> output"] == f"({B}, 2, {P})"
    assert reports["diffusion"]["data_flow_method"].startswith("traced")


@pytest.mark.parametrize("kind,fusion", [("diffusion", "sum"), ("diffusion", "film"), ("flow", "sum")])
def test_traced_flow_matches_static_description(kind, fusion):
    cfg = tiny_cfg(kind, model={**TINY["model"], "fusion": fusion})
    traced = gi._traced_stages(cfg, P, 5)
    static = gi._static_stages(cfg, P, 5)
    assert [s["shape"].split(" +")[0] for s in traced] == [s["shape"] for s in static]


def test_flow_data_flow(reports):
    flow = reports["flow"]["data_flow"]
    stages = [s["stage"] for s in flow]
    assert stages[3:6] == ["context (ContextEncoder)", "transforms x2: ActNorm", "transforms x2: AffineCoupling"]
    assert flow[3]["shape"] == f"({B}, 2, 32)" and flow[5]["shape"] == f"({B}, 2, {P}) + log|det|"
    assert reports["flow"]["model"]["flow"]["mask_kinds"] == ["odd-doms", "even-doms"]


def test_memory_estimate(reports):
    m = reports["diffusion"]["memory"]
    parts = [v for k, v in m.items() if k.endswith("_mb") and not k.startswith("total")]
    assert m["total_fp32_mb"] == pytest.approx(sum(parts))
    assert m["total_bf16_mb"] == pytest.approx(m["total_fp32_mb"] - m["activations_mb"] / 2)
    assert m["optimizer_mb"] == pytest.approx(2 * m["parameters_mb"]) and m["activations_mb"] > 0
    assert m["input_mb"] == pytest.approx(4 * B * 2 * P / 2**20) and m["batch_size"] == B


def test_activation_extrapolation_matches_measurement(monkeypatch):
    """Above MAX_MEASURED_TOKENS, activations are extrapolated from 60 and 120 tokens: check against a
    direct measurement at 180 tokens (per-DOM tokens, patch_size 1)."""
    cfg = tiny_cfg("diffusion", model={**TINY["model"], "patch_size": 1})
    direct, _ = gi._activations(cfg, 180)
    monkeypatch.setattr(gi, "MAX_MEASURED_TOKENS", 100)
    extrapolated, how = gi._activations(cfg, 180)
    assert "extrapolated" in how and extrapolated == pytest.approx(direct, rel=0.01)


# --- configs ----------------------------------------------------------------------------------------
def test_inspect_config(tmp_path, geo):
    missing = tmp_path / "dit.yaml"
    config.save(tiny_cfg("diffusion"), missing)
    r = gi.inspect_config(missing, batch_size=4)
    json.dumps(r, allow_nan=False)
    assert r["model"]["n_doms"] == gi.DEFAULT_N_DOMS and r["model"]["n_tokens"] == gi.DEFAULT_N_DOMS // 60
    assert "not found" in r["source"]["notes"][0] and r["provenance"] == {}
    assert r["normalization"] == NORM.to_dict()
    model = checkpoint.build_model(tiny_cfg("diffusion"), gi.DEFAULT_N_DOMS, NORM)
    assert r["parameters"]["total"] == sum(p.numel() for p in model.parameters())

    data = schema.write_events(tmp_path / "d.h5", np.zeros((3, 2, P), np.float32), np.ones((3, 6), np.float32), geo)
    flow_yaml = tmp_path / "flow.yaml"
    flow_yaml.write_text(f"kind: flow\nflow: {json.dumps(TINY['flow'])}\ndata: {{path: {data}}}\n")
    r = gi.inspect_config(flow_yaml, batch_size=4)
    assert r["model"]["kind"] == "flow" and r["model"]["n_doms"] == P
    assert r["normalization"] == Normalization().to_dict()
    assert r["data_flow"][0]["shape"] == f"(4, 2, {P})"


# --- legacy files -----------------------------------------------------------------------------------
LEGACY_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")
class LegacyConfig:
    def __init__(self, **kw):
        self.__dict__.update(kw)
"""


def make_legacy(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A checkpoint like the original trainer's: state dict with singular normalization buffer names and a
    pickled LegacyConfig from a package that is importable only while saving (importing it writes a marker)."""
    pkg, marker = tmp_path / "pkgs" / "genesis_original", tmp_path / "imported.txt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "config_v1.py").write_text(LEGACY_MODULE.format(marker=str(marker)))
    sys.path.insert(0, str(pkg.parent))
    try:
        from genesis_original.config_v1 import LegacyConfig  # noqa: PLC0415

        sd = collections.OrderedDict()
        sd["module.blocks.0.weight"] = torch.randn(8, 4)
        sd["module.blocks.0.bias"] = torch.randn(8)
        sd["module.head.weight"] = torch.randn(3, 6)[:, 1:5]  # a strided view
        sd["module.affine_offset"] = torch.tensor([0.0, 0.0, -600.0, -550.0, -550.0], dtype=torch.float64)
        sd["module.affine_scale"] = torch.tensor([200.0, 10.0, 1200.0, 1100.0, 1100.0])
        sd["module.label_offset"] = torch.tensor([0.0, 0.0, 0.0, -600.0, -550.0, -550.0])
        sd["module.label_scale"] = torch.tensor([1e8, np.pi, 2 * np.pi, 1200.0, 1100.0, 1100.0])
        cfg = LegacyConfig(hidden_size=512, depth=8, patch_size=1, lr=np.float64(1e-4), betas=(0.9, 0.99))
        path = tmp_path / "legacy.pt"
        torch.save({"model_state_dict": sd, "config": cfg, "epoch": 17, "optimizer_state_dict": {"state": {}}}, path)
    finally:
        sys.path.remove(str(pkg.parent))
        for name in [m for m in sys.modules if m.startswith("genesis_original")]:
            del sys.modules[name]
    marker.unlink()
    return path, marker, sd


def test_legacy_checkpoint_is_described_without_importing(tmp_path):
    path, marker, sd = make_legacy(tmp_path)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load(path)  # it really needs code
    sys.path.insert(0, str(tmp_path / "pkgs"))  # importable: a real unpickler would import it
    try:
        r = gi.inspect_checkpoint(path, batch_size=4)
    finally:
        sys.path.remove(str(tmp_path / "pkgs"))
    assert not marker.exists() and not any(m.startswith("genesis_original") for m in sys.modules)
    json.dumps(r, allow_nan=False)
    assert r["source"]["kind"] == "legacy" and not r["source"]["loadable"]
    assert "cannot be loaded for sampling" in r["source"]["notes"][0]
    assert r["model"]["type"] == "genesis_original.config_v1.LegacyConfig"
    assert r["config"] == {"hidden_size": 512, "depth": 8, "patch_size": 1, "lr": 1e-4, "betas": [0.9, 0.99]}
    for name in ("affine_offset", "affine_scale", "label_offset", "label_scale"):
        assert r["normalization"][name + "s"] == pytest.approx(sd["module." + name].tolist())
    weights = [t for n, t in sd.items() if "blocks" in n or "head" in n]
    assert r["parameters"]["total"] == sum(t.numel() for t in weights) and r["parameters"]["buffers"] == 22
    assert {g["type"]: g["params"] for g in r["parameters"]["by_type"]} == {"blocks": 40, "head": 12}
    assert r["provenance"]["epoch"] == 17
    text = gi.render_text(r, verbose=True)
    assert "cannot be loaded for sampling" in text and "module.head.weight" in text


def test_safe_reader_rebuilds_tensor_values(tmp_path):
    path, _, sd = make_legacy(tmp_path)
    found = gi.read_legacy(path)
    stubs = found.obj["model_state_dict"]
    for name, tensor in sd.items():
        assert stubs[name].shape == tensor.shape and stubs[name].dtype == tensor.dtype
        assert torch.equal(stubs[name].materialize(), tensor)
    assert isinstance(found.obj["config"], gi.Placeholder) and not found.suspicious


def test_plain_dict_legacy_file(tmp_path):
    """A non-GENESIS file that torch.load(weights_only=True) reads: reported as legacy from the loaded dict."""
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"net.w": torch.ones(3, 2), "net.affine_offsets": torch.zeros(5)},
                "config": {"model": {"hidden": 64}}, "step": 5}, path)
    r = gi.inspect_checkpoint(path)
    assert r["source"]["kind"] == "legacy" and r["config"] == {"model.hidden": 64}
    assert r["parameters"]["total"] == 6 and r["normalization"]["affine_offsets"] == [0.0] * 5
    assert r["provenance"]["step"] == 5


class SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalPayload(SystemPayload):
    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",)


@pytest.mark.parametrize("payload", [SystemPayload, EvalPayload])
def test_code_payload_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {"w": torch.ones(2)}, "config": payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refused: the file names .*(system|eval)"):
        gi.inspect_checkpoint(path)
    found = gi.read_legacy(path, refuse_code=False)  # neutralised: the call is only recorded
    assert isinstance(found.obj["config"], gi.Placeholder) and str(marker) in found.obj["config"].args[0]
    assert found.suspicious and not marker.exists()


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"PK\x03\x04" + os.urandom(100)])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        gi.inspect_checkpoint(path)


def test_truncated_and_foreign_archives(tmp_path, ckpts):
    truncated = tmp_path / "half.pt"
    truncated.write_bytes(ckpts["diffusion"].read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match="corrupted, truncated"):
        gi.inspect_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="without data.pkl"):
        gi.inspect_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        gi.inspect_checkpoint(tmp_path / "missing.pt")


# --- comparison -------------------------------------------------------------------------------------
def test_compare_reports_flags_normalization(tmp_path, geo, reports):
    other = gi.inspect_checkpoint(save_ckpt(tmp_path / "o.pt", "diffusion", geo, Normalization()), B)
    rows = gi.compare_reports(reports["diffusion"], other)
    differs = {(r["section"], r["key"]) for r in rows if r["differs"]}
    assert {("normalization", "affine_scales"), ("normalization", "npe_transform"),
            ("normalization", "energy_transform"), ("normalization", "label_offsets")} <= differs
    assert ("normalization", "affine_offsets") not in differs and ("parameters", "total") not in differs
    assert rows[0]["section"] == "normalization"
    assert not any(r["differs"] for r in gi.compare_reports(other, other))
    kinds = gi.compare_reports(reports["diffusion"], reports["flow"])
    assert next(r for r in kinds if r["key"] == "kind" and r["section"] == "model")["differs"]


def test_normalization_mismatch(reports):
    assert gi.normalization_mismatch(reports["flow"], NORM) == []
    msgs = gi.normalization_mismatch(reports["flow"], Normalization())
    assert {m.split(":")[0] for m in msgs} == {"affine_scales", "npe_transform", "energy_transform", "label_offsets"}
    assert gi.normalization_mismatch({"normalization": {}}, NORM) == [
        "the checkpoint carries no normalization metadata"]


# --- CLI --------------------------------------------------------------------------------------------
def test_cli_inspect(tmp_path, ckpts, capsys):
    proc = run_cli("inspect", "--checkpoint", str(ckpts["flow"]), "--batch-size", "4", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "affine_scales    [5.0, 10.0, 1200.0, 1100.0, 1100.0]" in proc.stdout and "ConditionalFlow" in proc.stdout
    bad = tmp_path / "random.pt"
    bad.write_bytes(os.urandom(2048))
    proc = run_cli("inspect", "--checkpoint", str(bad), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error:" in proc.stderr and "not a PyTorch checkpoint" in proc.stderr
    assert cli.main(["inspect", "--checkpoint", str(ckpts["diffusion"]), "--json", "--batch-size", "2"]) == 0
    out = json.load(io.StringIO(capsys.readouterr().out))
    assert out["normalization"] == NORM.to_dict() and out["memory"]["batch_size"] == 2
