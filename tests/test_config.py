from pathlib import Path

import pytest

from genesis import config
from genesis.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_round_trip(tmp_path):
    cfg = config.load(None, ["model.depth=2", "train.lr=1e-3", "data.normalization.npe_transform=log1p"])
    assert cfg.model.depth == 2 and cfg.train.lr == 1e-3
    path = tmp_path / "c.yaml"
    config.save(cfg, path)
    assert config.load(path) == cfg


@pytest.mark.parametrize("override,needle", [
    ("model.bogus=1", "unknown config key\\(s\\) \\['model.bogus'\\]"),
    ("model.depth=two", "'model.depth' must be int"),
    ("model.fusion=concat", "'model.fusion' must be one of"),
    ("train.batch_size=-4", "'train.batch_size' must be >= 1"),
    ("model.num_heads=3", "must divide"),
    ("data.normalization.time_transform=sqrt", "time_transform"),
    ("depth", "must look like"),
])
def test_bad_overrides(override, needle):
    with pytest.raises(ConfigError, match=needle):
        config.load(None, [override])


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load(preset):
    cfg = config.load(preset)
    assert cfg.kind in config.KINDS


def test_field_specs_cover_every_leaf():
    specs = config.field_specs(config.RunConfig)
    keys = {s["key"] for s in specs}
    assert {"model.depth", "train.lr", "data.normalization", "flow.num_couplings"} <= keys
    assert all("help" in s for s in specs)


def test_flow_refuses_the_hit_representation():
    from genesis import config
    from genesis.errors import ConfigError

    with pytest.raises(ConfigError, match="representation=legacy"):
        config.load(None, ["kind=flow", "data.normalization.representation=hit"])
    assert config.load(None, ["data.normalization.representation=hit"]).data.normalization.channels == 3


def test_dequantized_npe_needs_a_hit_diffusion_model_without_an_npe_reference():
    from genesis import config
    from genesis.errors import ConfigError

    hit = ["data.normalization.representation=hit", "diffusion.dequantize_npe=true"]
    assert config.load(None, hit).diffusion.dequantize_npe
    for extra, needle in ((["data.normalization.representation=legacy"], "'legacy'"),
                          (["data.normalization.npe_transform=log1p", "data.normalization.npe_reference=expected"],
                           "'expected'")):
        with pytest.raises(ConfigError, match=f"dequantize_npe needs kind 'diffusion'.*{needle}"):
            config.load(None, [*hit, *extra])


def test_distill_section_round_trips(tmp_path):
    cfg = config.load(None, ["distill.teacher=teacher.pt", "distill.student_steps=2", "distill.steps_per_round=7"])
    assert (cfg.distill.teacher, cfg.distill.student_steps, cfg.distill.start_steps) == ("teacher.pt", 2, 64)
    path = tmp_path / "c.yaml"
    config.save(cfg, path)
    assert config.load(path) == cfg
    assert config.load(None).distill.teacher == ""  # an ordinary run
    assert config.from_dict(config.RunConfig, {k: v for k, v in config.to_dict(cfg).items() if k != "distill"}).distill \
        == config.DistillConfig()  # configs (and checkpoints) from before the section still load


@pytest.mark.parametrize("override,needle", [
    ("distill.bogus=1", "unknown config key\\(s\\) \\['distill.bogus'\\]"),
    ("distill.student_steps=0", "'distill.student_steps' must be >= 1"),
    ("distill.steps_per_round=x", "'distill.steps_per_round' must be int"),
])
def test_bad_distill_overrides(override, needle):
    with pytest.raises(ConfigError, match=needle):
        config.load(None, [override])
