"""One inpainting error definition: every method, the Inpaint page, `genesis inpaint` and bench/inpaint.py score a
fill the same way, so a baseline scores the same beside any method and checkpoint."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from genesis import checkpoint, demo, inpaint
from genesis import sample_session as ss
from genesis.paths import PACKAGE_ROOT


@pytest.fixture(scope="module")
def demo_models():
    paths = {spec.kind: demo.DEMO_DIR / spec.name for spec in demo.SPECS}
    if not all(p.is_file() for p in paths.values()):
        pytest.fail(f"the demo checkpoints are missing from {demo.DEMO_DIR}: run `make demo-models`")
    return {kind: checkpoint.load_model(path) for kind, path in paths.items()}


@pytest.fixture(scope="module")
def event_file(tmp_path_factory, geometry):
    from genesis.data.simulate import simulate_to_file

    return simulate_to_file(tmp_path_factory.mktemp("scores") / "events.h5", 4, geometry, seed=5)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_inpaint", PACKAGE_ROOT / "bench" / "inpaint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zero_fill_scores_the_same_beside_flow_map_repaint_and_alone_and_in_the_bench(demo_models, event_file,
                                                                                      geometry):
    """Zero fill, flow MAP and RePaint on the same event and mask through the page's own call
    (sample_session.run_inpaint): the zero-fill score is identical in all three runs (each model normalizes
    differently; the score does not), and bench/inpaint.py scores the same fill to the same number."""
    from genesis.data import schema

    signal, _, _ = schema.read_events(event_file, indices=np.array([0]))
    brightest = int(np.bincount(geometry.string, weights=signal[0, 0] > 0).argmax())  # hidden hits to score
    mask = inpaint.strings_mask(geometry, [brightest])
    runs = {
        "flow-map": ss.run_inpaint(demo_models["flow"], event_file, 0, geometry, mask, "flow-map", steps=2, restarts=1),
        "repaint": ss.run_inpaint(demo_models["diffusion"], event_file, 0, geometry, mask, "repaint", steps=2),
        "zero": ss.run_inpaint(demo_models["flow"], event_file, 0, geometry, mask, "zero"),
    }
    zero_scores = {name: json.dumps({k: v for k, v in r.metrics["zero"].items() if k != "same_fill_as"},
                                    sort_keys=True) for name, r in runs.items()}
    assert len(set(zero_scores.values())) == 1, zero_scores
    assert runs["zero"].metrics["zero"]["n_true_hits"] > 0 and runs["zero"].metrics["zero"]["mse_all"] > 0
    assert set(runs["flow-map"].metrics["zero"]) >= {"mse_all", "npe_abs_error", "time_error_ns", "precision", "recall"}
    bench = _bench()
    true_fit = bench.linefit_dirs(runs["zero"].true, geometry)
    for name, r in runs.items():  # the bench's number for each method's own fill is the page's
        from_bench = bench.score(r.filled, r.true, mask, geometry, true_fit)
        for key, value in r.metrics[name].items():
            if key != "same_fill_as":
                assert from_bench[key] == value or (math.isnan(from_bench[key]) and math.isnan(value)), (name, key)
    bench_zero = inpaint.baseline_fill("zero", runs["zero"].true, mask, geometry)  # what the bench fills with
    assert np.array_equal(bench_zero, runs["zero"].filled)


def test_same_fills_and_a_verdict_that_counts_each_distinct_baseline_once():
    a, b = np.zeros((1, 2, 3)), np.ones((1, 2, 3))
    assert inpaint.same_fills({"flow-map": b, "zero": a, "neighbours": a.copy()}) == {"neighbours": "zero"}
    assert inpaint.same_fills({"flow-map": a, "zero": a, "neighbours": a}) == {"zero": "flow-map",
                                                                              "neighbours": "flow-map"}
    metrics = {"flow-map": {"mse_all": 1.0, "mse_all_se": 0.01}, "zero": {"mse_all": 2.0, "mse_all_se": 0.01},
               "neighbours": {"mse_all": 2.0, "mse_all_se": 0.01, "same_fill_as": "zero"}}
    beat, words = inpaint.inpaint_verdict(metrics, "flow-map")
    assert beat and words == ("flow-map beat zero fill (dead DOMs) (here the same fill as the neighbour mean on the "
                              "string) (2.00x lower error) on the masked DOMs.")
    assert words.count("beat") == 1
    # a difference within the spread over the masked DOMs is no win, and says so instead of "2.00x lower"
    metrics["zero"]["mse_all_se"] = metrics["neighbours"]["mse_all_se"] = 0.6
    beat, words = inpaint.inpaint_verdict(metrics, "flow-map")
    assert not beat and "within the spread over the masked DOMs of zero fill" in words and "lower error" not in words
    # the method's fill is a baseline's: said as such
    same = {"flow-map": {"mse_all": 2.0}, "zero": {"mse_all": 2.0, "same_fill_as": "flow-map"},
            "neighbours": {"mse_all": 1.0}}
    beat, words = inpaint.inpaint_verdict(same, "flow-map")
    assert not beat and words.startswith("flow-map made the same fill as zero fill (dead DOMs) and was worse than")
