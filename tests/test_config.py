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
