"""One DDP rank of the real trainer, started by torchrun from tests/test_ddp.py.

usage: ddp_worker.py CONFIG OUT_DIR RANK_OVERRIDES_JSON
RANK_OVERRIDES_JSON maps a rank ("0", "1") to extra --set overrides for that rank only (e.g. a time
budget that only one rank runs out of). Writes OUT_DIR/init.pt (weights after DDP's broadcast) and
OUT_DIR/rank<R>.pt (weights, EMA, step, status after fit()).
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from genesis import config
from genesis.train import DistContext, StopRequested, Trainer


def main(cfg_path: str, out_dir: str, rank_overrides: str) -> None:
    ctx = DistContext.from_env()
    dist.init_process_group("gloo")
    cfg = config.load(cfg_path, json.loads(rank_overrides).get(str(ctx.rank), []))
    trainer = Trainer(cfg, None, None, ctx, torch.device("cpu"))
    out = Path(out_dir)
    if ctx.is_main:
        torch.save(trainer.model.state_dict(), out / "init.pt")
    with StopRequested() as stop:
        status = trainer.fit(stop)
    torch.save({"model": trainer.model.state_dict(), "ema": trainer.ema.module.state_dict(),
                "step": trainer.step, "status": status}, out / f"rank{ctx.rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
