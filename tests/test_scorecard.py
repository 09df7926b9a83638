"""bench/scorecard.py: every ablation row builds (config and model, no training), rows that differ only in
sampling share one training, seeds train separately and combine to a mean with standard errors, and result
files can name their commit."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from genesis import checkpoint, config
from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("scorecard", ROOT / "bench" / "scorecard.py")
scorecard = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scorecard)


@pytest.mark.parametrize("suffix", ["tiny", ""])
def test_every_ablation_row_builds(suffix):
    """Each row's config loads (unknown keys and inconsistent options are errors) and its model is built."""
    torch.manual_seed(0)
    for name, kind, overrides in scorecard.ABLATION:
        cfg = config.load(scorecard.preset_paths(suffix)[kind], overrides)
        assert cfg.kind == kind, name
        model = checkpoint.build_model(cfg, 5160, cfg.data.normalization)
        assert sum(p.numel() for p in model.parameters()) > 0, name
        del model


def test_rows_share_a_training_only_when_they_differ_in_sampling():
    args = scorecard.parse_args(["--preset-suffix", "tiny"])
    rows = {name: (kind, ov) for name, kind, ov in scorecard.ABLATION}
    key = lambda name, extra=(): scorecard.training_key(rows[name][0], [*rows[name][1], *extra], args)  # noqa: E731
    assert key("same model, DDIM-50 eta 1") == key("+time from direct light")
    assert key("+redraw untriggered events") == key("+asinh delay, w 200 ns") == key("+guidance 2")
    assert key("+asinh delay, w 200 ns") != key("+asinh delay, w 500 ns")
    # the preset without its energy inputs is the redraw row's model, sampled with the preset's sampler
    assert key("diffusion preset, no energy inputs") == key("+redraw untriggered events")
    assert len({key(name) for name in rows}) == 16  # 13 diffusion models (5 rows only sample differently), 3 flows
    two = scorecard.parse_args(["--preset-suffix", "tiny", "--seeds", "2"])
    assert scorecard.seed_overrides(args, 0) == [] and scorecard.seed_overrides(two, 1) == ["train.seed=1"]
    k0, k1 = (scorecard.training_key("diffusion", [*scorecard.REDRAW, *scorecard.seed_overrides(two, k)], two)
              for k in (0, 1))
    assert k0 != k1  # two seeds: two trainings


def test_options_for_the_held_out_sets_and_seeds():
    args = scorecard.parse_args([])
    assert args.heldout == "report" and args.seeds == 1 and args.eval_events >= 3400
    assert scorecard.parse_args(["--heldout", "selection"]).heldout == "selection"
    assert len(set(scorecard.HELDOUT_SEEDS.values()) | {1}) == 3  # training, selection and report seeds differ
    assert len(set(scorecard.HELDOUT_FILES.values())) == 2
    with pytest.raises(SystemExit):
        scorecard.parse_args(["--seeds", "2", "--set", "train.seed=3"])
    with pytest.raises(SystemExit):
        scorecard.parse_args(["--seeds", "0"])


def _result(auc, auc_se, w1, redrawn):
    return {"run_id": f"r{auc}", "checkpoint": f"c{auc}", "train_events_per_s": 100.0,
            "report": {"scalars": {"eval/auc": auc, "eval/auc_se": auc_se, "eval/w1_total_npe": w1},
                       "timing": {"sampling_events_per_s": 2.0},
                       "sampling": {"redrawn_fraction": redrawn}}}


def test_combine_seeds_mean_range_and_standard_error_of_the_mean():
    row = scorecard.combine_seeds([_result(0.80, 0.006, 0.2, 0.1), _result(0.76, 0.008, 0.4, 0.3)])
    s = row["report"]["scalars"]
    assert s["eval/auc"] == pytest.approx(0.78) and s["eval/w1_total_npe"] == pytest.approx(0.3)
    assert s["eval/auc_se"] == pytest.approx(np.sqrt(0.006 ** 2 + 0.008 ** 2) / 2)
    assert row["seed_range"]["eval/auc"] == pytest.approx(0.04) and "eval/auc_se" not in row["seed_range"]
    assert row["report"]["sampling"]["redrawn_fraction"] == pytest.approx(0.2)
    assert [e["checkpoint"] for e in row["seeds"]] == ["c0.8", "c0.76"]  # each training kept for --keep-rows
    one = scorecard.combine_seeds([_result(0.8, 0.006, 0.2, 0.1)])
    assert one["report"]["scalars"] == _result(0.8, 0.006, 0.2, 0.1)["report"]["scalars"] and one["seed_range"] == {}


def test_tables_show_both_aucs_with_errors(capsys):
    from genesis.metrics import FEATURES

    scalars = {**{f"eval/w1_{k}": 0.1 for k in FEATURES}, **{f"eval/w1_{k}_se": 0.01 for k in FEATURES},
               "eval/auc": 0.7, "eval/auc_se": 0.008, "eval/auc_conditional": 0.75, "eval/auc_conditional_se": 0.009,
               "eval/response_summary": 1.25, "eval/decade3_log10_npe_diff": 0.16, "eval/decade3_hit_doms_ratio": 1.11}
    rows = {"diffusion": scorecard.combine_seeds([_result(0.7, 0.008, 0.1, 0.05)]),
            "simulator": {"report": {"scalars": scalars, "timing": {"sampling_events_per_s": 1.0}}}}
    rows["diffusion"]["report"]["scalars"] = scalars
    scorecard.print_tables(rows, 100)
    scorecard.print_ablation(rows, 100)
    scorecard.print_decades(rows)
    out = capsys.readouterr().out
    assert "AUC|labels" in out and "0.750+-0.009" in out and "0.700+-0.008" in out and "1.25" in out
    assert "0.050" in out  # the redraw fraction
    decades = next(line for line in out.splitlines() if line.startswith("diffusion") and "|" in line)
    assert decades.split()[1:] == ["+0.16", "n/a", "n/a", "n/a", "|", "+11%", "n/a", "n/a", "n/a", "|", "n/a", "/",
                                   "n/a"]


def test_git_state_names_the_commit_the_run_started_at():
    state = scorecard.git_state()
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and isinstance(state["dirty"], bool)
    args = scorecard.parse_args([])
    assert args.git == state and scorecard.recorded_git(args) == state
    args.git = {"commit": "0" * 40, "dirty": False}  # as if a commit had been made while the run trained
    assert scorecard.recorded_git(args) == {"commit": "0" * 40, "dirty": False, "head_when_written": state["commit"]}


def test_rows_that_share_a_model_keep_their_own_sampler():
    args = scorecard.parse_args(["--preset-suffix", "tiny"])
    rows = {name: (kind, ov) for name, kind, ov in scorecard.ABLATION}
    of = lambda name: scorecard.sampler_of(*rows[name], args)  # noqa: E731
    older, preset = of("+redraw untriggered events"), of("diffusion preset, no energy inputs")
    # measured with DDIM-50 (its own linspace grid) before the few-step samplers
    assert (older["sampler"], older["spacing"], older["steps"]) == ("ddim", "", 50)
    assert (preset["sampler"], preset["spacing"], preset["steps"]) == ("unipc", "quadratic", 8)
    assert scorecard.sampler_of("flow", [], args) == {}


WORKER_SCRIPT = """
import importlib.util, multiprocessing, sys, time
from concurrent.futures import ProcessPoolExecutor
spec = importlib.util.spec_from_file_location("scorecard", sys.argv[1])
scorecard = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scorecard)
if __name__ == "__main__":
    with scorecard.workers_end_with_us(), ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(time.sleep, 120) for _ in range(2)]
        while len(multiprocessing.active_children()) < 2:
            time.sleep(0.1)
        print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
        [job.result() for job in jobs]
"""


def test_stopping_the_scorecard_stops_its_pool_workers(tmp_path):
    """SIGTERM to a scorecard whose --jobs pool is busy ends the spawned workers too (they used to go on)."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "pool.py"
    script.write_text(WORKER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(ROOT / "bench" / "scorecard.py")], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    workers = [int(pid) for pid in proc.stdout.readline().split()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM

    def alive(pid: int) -> bool:  # a zombie (ended, not yet reaped by whoever adopted it) counts as ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    deadline = time.time() + 20
    while any(map(alive, workers)) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(map(alive, workers))
