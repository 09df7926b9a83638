"""Sampling sharded over torchrun ranks (same events as one process), batch seeding and redraw stats."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import require_or_skip, run_process_group
from genesis import checkpoint, sampling
from genesis.data import schema
from genesis.demo import DEMO_DIR
from genesis.errors import GenesisError

DEMO = DEMO_DIR / "demo-diffusion.pt"
# 5 events in batches of 2: batches [0, 1], [2, 3], [4]; rank 0 draws batches 0 and 2 (the short one), rank 1 batch 1
ARGS = ["--checkpoint", str(DEMO), "--events", "5", "--energy", "2e5", "--zenith", "2.0", "--sampler", "ddim",
        "--steps", "2", "--batch-size", "2", "--seed", "7", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every process: the same float sums


def run(cmd: list[str], timeout: float = 180) -> str:
    return run_process_group(cmd, ENV, timeout)


def test_two_gloo_ranks_write_the_same_events_as_one_process(tmp_path):
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    run([sys.executable, "-m", "genesis", "sample", *ARGS, "--out", str(one)])
    out = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "genesis", "sample", *ARGS, "--out", str(two)])
    assert "(2 ranks)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "two.h5"]  # the shards are gone
    sig1, lab1, _ = schema.read_events(one)
    sig2, lab2, _ = schema.read_events(two)
    assert sig1.shape == (5, 2, 5160) and (sig1[:, 0] > 0).any()
    assert np.array_equal(lab1, lab2)
    assert np.array_equal(sig1, sig2)  # bit-identical, whatever the number of ranks
    assert len({sig1[i].tobytes() for i in range(5)}) == 5  # and every event its own draw
    with h5py.File(two) as f:
        assert json.loads(f.attrs["producer"])["ranks"] == 2


def test_bf16_sampling_is_recorded_and_close_to_float32(tmp_path):
    """--bf16 runs the network under bfloat16 autocast: the file says so, the events stay float32 and finite,
    and they are the float32 events up to rounding (same noise): not bit-equal, but the same hit DOMs nearly
    everywhere and nearly the same charge."""
    fp32, bf16 = tmp_path / "fp32.h5", tmp_path / "bf16.h5"
    common = [a for a in ARGS if a != "ddim"]
    common[common.index("--sampler") + 1:common.index("--sampler") + 1] = ["unipc"]
    run([sys.executable, "-m", "genesis", "sample", *common, "--no-bf16", "--out", str(fp32)])
    run([sys.executable, "-m", "genesis", "sample", *common, "--bf16", "--out", str(bf16)])
    a, b = schema.read_events(fp32)[0], schema.read_events(bf16)[0]
    assert b.dtype == np.float32 and np.isfinite(b).all()
    assert not np.array_equal(a, b)  # bfloat16 was used
    assert ((a[:, 0] > 0) == (b[:, 0] > 0)).mean() > 0.97
    total_a, total_b = a[:, 0].sum(1), b[:, 0].sum(1)
    assert np.all(np.abs(np.log(total_b / total_a)) < 0.2), (total_a, total_b)
    assert schema.read_producer(bf16)["precision"] == "bf16" and "precision" not in schema.read_producer(fp32)


def test_compiled_sampling_is_recorded_and_agrees_with_eager(tmp_path):
    """--compile runs full batches through torch.compile: the file says so; those events are the eager ones up
    to float round-off (same noise, same hit DOMs nearly everywhere); the short last batch runs eagerly, so
    it is bit-identical to eager sampling."""
    if not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        require_or_skip("no C++ compiler on the PATH: torch.compile on a CPU needs one (apt-get install g++)")
    eager, compiled = tmp_path / "eager.h5", tmp_path / "compiled.h5"
    common = [a for a in ARGS if a != "ddim"]
    common[common.index("--sampler") + 1:common.index("--sampler") + 1] = ["unipc"]
    run([sys.executable, "-m", "genesis", "sample", *common, "--no-bf16", "--out", str(eager)])
    run([sys.executable, "-m", "genesis", "sample", *common, "--no-bf16", "--compile", "--out", str(compiled)],
        timeout=600)
    a, b = schema.read_events(eager)[0], schema.read_events(compiled)[0]
    assert np.array_equal(a[4], b[4])  # batch 2 (one event) ran eagerly
    assert np.isfinite(b).all() and ((a[:4, 0] > 0) == (b[:4, 0] > 0)).mean() > 0.99
    total_a, total_b = a[:4, 0].sum(1), b[:4, 0].sum(1)
    assert np.all(np.abs(np.log(total_b / total_a)) < 0.05), (total_a, total_b)
    assert schema.read_producer(compiled)["compiled"] is True and "compiled" not in schema.read_producer(eager)


def test_compiling_needs_a_cxx_compiler_and_a_diffusion_model(demo, monkeypatch, tmp_path):
    """Without a C++ compiler on the PATH, compiling on a CPU stops at once with what to install; a flow
    (one pass, nothing to compile) says so."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(GenesisError, match="C\\+\\+ compiler.*g\\+\\+"):
        demo.compiled_model()
    flow = checkpoint.load_model(DEMO_DIR / "demo-flow.pt")
    labels = np.array([[2e5, 2.0, 1.0, 0.0, 0.0, -100.0]], np.float32)
    with pytest.raises(GenesisError, match="diffusion models"):
        next(sampling.generate_batches(flow, labels, compiled=True))


def test_fast_settings_default_to_native_bf16_and_compile_large_cpu_requests(demo):
    """Unchosen settings: bf16 for a diffusion model exactly where the device has it natively, compiled on a CPU
    from COMPILE_FROM_EVENTS events; a flow neither; a chosen setting is kept."""
    native = sampling.native_bf16(torch.device("cpu"))
    assert native == any(f in Path("/proc/cpuinfo").read_text().split() for f in ("avx512_bf16", "amx_bf16"))
    big = sampling.COMPILE_FROM_EVENTS
    assert sampling.fast_settings(demo, big - 1) == (native, False)
    assert sampling.fast_settings(demo, big) == (native, checkpoint.cxx_compiler() is not None)
    assert sampling.fast_settings(demo, big, bf16=not native, compiled=False) == (not native, False)
    flow = checkpoint.load_model(DEMO_DIR / "demo-flow.pt")
    assert sampling.fast_settings(flow, big) == (False, False)


@pytest.fixture(scope="module")
def demo():
    return checkpoint.load_model(DEMO)


def test_batches_are_a_fixed_partition_whatever_is_drawn(demo):
    labels = np.repeat(np.array([[2e5, 2.0, 1.0, 0.0, 0.0, -100.0]], np.float32), 5, axis=0)
    kw = dict(sampler="ddim", steps=2, seed=3, batch_size=2)
    every = list(sampling.generate_batches(demo, labels, **kw))
    last_only = list(sampling.generate_batches(demo, labels, **kw, batches=[2]))
    assert [len(b) for b in every] == [2, 2, 1]
    assert np.array_equal(last_only[0], every[2])


def test_redraw_stats(demo):
    """stats counts the events, those drawn again (below the training data's fewest hit DOMs) and those
    still below after the last try; a 1-step sample of faint events at the detector's edge needs redraws (the
    demo model's noise model adds ~5 hits to every event, so they must be very faint)."""
    labels = np.repeat(np.array([[1.1e3, 0.3, 1.0, 500.0, 0.0, 500.0]], np.float32), 6, axis=0)
    stats: dict = {}
    events = sampling.generate(demo, labels, sampler="ddim", steps=1, seed=0, batch_size=4, stats=stats)
    fewest = demo.state["data"]["hit_doms_min"]
    hits = (events[:, 0] > 0).sum(1)
    assert stats["events"] == 6
    assert stats["below_trigger"] == int((hits < fewest).sum())
    assert stats["below_trigger"] <= stats["redrawn"] <= 6
    assert stats["redrawn"] > 0, "choose labels that need redraws, or the test cannot fail"


def test_more_ranks_than_batches(tmp_path, demo):
    """With fewer batches than ranks the idle ranks write no shard and rank 0 merges what there is (rank 0 of a
    claimed 2 in a one-process gloo group, so its barriers pass at once)."""
    import torch.distributed as dist

    labels = np.array([[2e5, 2.0, 1.0, 0.0, 0.0, -100.0]] * 3, np.float32)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        out = sampling._sample_sharded(DEMO, labels, tmp_path / "g.h5", "ddim", 2, 1.0, 4, "cpu", 8, False, None, None,
                                       rank=0, world=2, local_rank=0, bf16=False)
    finally:
        dist.destroy_process_group()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.h5"]
    signal, stored, _ = schema.read_events(out)
    assert np.array_equal(stored, labels)
    assert np.array_equal(signal, sampling.generate(demo, labels, "ddim", 2, seed=4, batch_size=8))
