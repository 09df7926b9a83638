"""Sampled events made consistent (genesis.sampling.postprocess)."""

from __future__ import annotations

import numpy as np


def test_a_flows_faint_npe_stays_no_hit_after_the_training_ranges_clip():
    """A flow's npe is continuous: values below its hit threshold are no hits, not hits lifted to the smallest
    training npe (the old flow's 283 hit DOMs per event against 84 came from that); a hit channel decides
    by itself (npe > 0)."""
    from genesis import sampling

    record = {"hit_npe_min": 1.0, "hit_npe_max": 1e4, "hit_time_min": 0.0, "hit_time_max": 2e4, "npe_integer": True}
    signal = np.array([[[0.0, 0.2, 0.49, 0.6, 3.2], [0.0, 9e3, 9e3, 9e3, 9e3]]], np.float32)
    flow = sampling.postprocess(signal, 0.5, record, threshold_decides=True)
    assert flow[0, 0].tolist() == [0.0, 0.0, 0.0, 1.0, 3.0]
    hit_channel = sampling.postprocess(signal, 0.5, record)
    assert hit_channel[0, 0].tolist() == [0.0, 1.0, 1.0, 1.0, 3.0]


def test_a_dequantized_models_npe_is_floored_not_rounded():
    """A model trained on npe + U(0, 1) (diffusion.dequantize_npe) has its count in [n, n + 1): the floor,
    still at least the smallest training npe and at most the largest."""
    from genesis import sampling

    record = {"hit_npe_min": 1.0, "hit_npe_max": 20.0, "hit_time_min": 0.0, "hit_time_max": 2e4, "npe_integer": True}
    signal = np.array([[[0.0, 0.7, 1.6, 2.99, 3.5, 25.0], [0.0, 9e3, 9e3, 9e3, 9e3, 9e3]]], np.float32)
    assert sampling.postprocess(signal, 0.5, record, npe_floor=True)[0, 0].tolist() == [0, 1, 1, 2, 3, 20]
    assert sampling.postprocess(signal, 0.5, record)[0, 0].tolist() == [0, 1, 2, 3, 4, 20]
