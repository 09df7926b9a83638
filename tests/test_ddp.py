"""Two real DDP ranks (gloo, CPU, torchrun) against a single-process oracle on the same global batch."""

import json
import os
import sys

import pytest
import torch

from conftest import ROOT, run_process_group, tiny_cfg
from genesis import config
from genesis.data import dataset
from genesis.train import DistContext, Trainer, step_seed

STEPS = 4
WORLD = 2


def run_cfg(home, kind: str, *extra: str) -> config.RunConfig:
    common = ("train.max_steps=%d" % STEPS, "train.log_every=2", "train.checkpoint_every=1000", "train.epochs=1")
    if kind == "diffusion":
        return tiny_cfg(home, *common, *extra)
    return config.load(ROOT / "configs" / "flow_tiny.yaml",
                       [f"data.path={home}/data/demo.h5", "train.device=cpu", "train.batch_size=16",
                        "train.warmup_steps=2", "flow.hidden_size=16", "flow.num_couplings=2", *common, *extra])


def torchrun(home, cfg: config.RunConfig, rank_overrides: dict | None = None, timeout: float = 240) -> dict:
    """Run tests/ddp_worker.py on WORLD ranks; returns {rank: saved result} (+ 'init')."""
    cfg_path = home / "ddp.yaml"
    config.save(cfg, cfg_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
           str(ROOT / "tests" / "ddp_worker.py"), str(cfg_path), str(home), json.dumps(rank_overrides or {})]
    env = {**os.environ, "GENESIS_HOME": str(home), "OMP_NUM_THREADS": "1"}
    run_process_group(cmd, env, timeout, "DDP ranks")
    out = {rank: torch.load(home / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)}
    out["init"] = torch.load(home / "init.pt", weights_only=True)
    return out


def single_process_oracle(cfg: config.RunConfig, init: dict) -> Trainer:
    """STEPS steps of one process whose gradient is the mean over both ranks' batches, each with that
    rank's noise: what DDP must compute."""
    trainer = Trainer(cfg, None, None, DistContext(), torch.device("cpu"))
    trainer.model.load_state_dict(init)
    trainer.ema.module.load_state_dict(init)
    geometry, norm, bs = trainer.geometry, cfg.data.normalization, cfg.train.batch_size
    shards = [dataset.open_split(cfg.data, "train", norm, geometry, torch.device("cpu"), r, WORLD) for r in range(WORLD)]
    order = [list(s.batches(bs, True, torch.Generator().manual_seed(cfg.train.seed * 1000))) for s in shards]
    trainer.model.train()
    for step in range(STEPS):
        trainer.optimizer.zero_grad()
        for rank in range(WORLD):
            seed = step_seed(cfg.train.seed, rank, step)
            trainer.generator.manual_seed(seed)
            torch.manual_seed(seed)
            loss, _ = trainer.objective(trainer.model, *order[rank][step], trainer.geo_n, trainer.generator)
            (loss / WORLD).backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.train.grad_clip or float("inf"))
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.ema.update(trainer.model, step)
    return trainer


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_ddp_ranks_agree_and_match_one_process_on_the_global_batch(home, kind):
    cfg = run_cfg(home, kind)
    ranks = torchrun(home, cfg)
    for key in ("model", "ema"):
        for name, value in ranks[0][key].items():
            if torch.is_tensor(value):
                assert torch.equal(value, ranks[1][key][name]), f"{key}.{name} differs between ranks"
    oracle = single_process_oracle(cfg, ranks["init"])
    moved = 0
    for name, value in oracle.model.state_dict().items():
        if torch.is_tensor(value) and value.is_floating_point():
            torch.testing.assert_close(ranks[0]["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
            moved += not torch.equal(value, ranks["init"][name])
    assert moved > 0  # the steps changed the weights, so the comparison means something


def test_ddp_rank_whose_time_budget_passes_first_does_not_hang(home):
    """Rank 0 runs out of time at once, rank 1 has no budget: both leave at the same agreed step."""
    cfg = run_cfg(home, "diffusion", "train.max_steps=0", "train.epochs=50")
    ranks = torchrun(home, cfg, {"0": ["train.max_minutes=0.00001"]}, timeout=120)
    assert ranks[0]["status"] == ranks[1]["status"] == "FINISHED"
    assert ranks[0]["step"] == ranks[1]["step"] == cfg.train.log_every


def test_shards_are_equal_so_ranks_run_the_same_steps():
    import numpy as np

    parts = [dataset.shard(np.arange(11), rank, 2) for rank in range(2)]
    assert [len(p) for p in parts] == [5, 5] and not set(parts[0]) & set(parts[1])
