"""Inpainting scores: one definition for every method, the Inpaint page, `genesis inpaint` and bench/inpaint.py.

A fill is scored as a physical event (npe, time in ns; a DOM is hit when its npe > 0, as in the data)
against the true event on the masked DOMs only, in one fixed scoring space that no checkpoint changes:
`SCORING`, log1p npe and linear time (x_n = (log1p(npe) - 1) / 2, t_n = (t - 9000 ns) / 2000 ns; a DOM
without a hit sits at (-0.5, -4.5)), the space of the README's inpainting table. So zero fill scores the
same beside flow MAP and beside RePaint, and rows of different methods and checkpoints compare.

`inpaint_metrics` returns (keys):
- mse_all: mean squared error over every masked DOM and both channels (false hits and missed hits count);
  the score of the verdict; mse_all_se: its standard error over the masked DOMs (of all events);
- mse_hit: the same over masked DOMs hit in the truth (rewards filling hits anywhere: read it with
  precision);
- npe_abs_error: mean |npe fill - npe true| over masked DOMs [pe]; npe_rel_error: mean relative npe error
  over masked true hits;
- time_error_ns: median |t fill - t true| over masked DOMs hit in both [ns] (NaN when none);
- precision, recall: of the filled hits at masked DOMs (NaN when nothing to divide by); hit_accuracy:
  share of masked DOMs whose hit / no hit is right;
- total_charge_error: mean over events with charge of |total npe fill - true| / true (all DOMs);
- n_masked_doms, n_true_hits (masked DOMs hit in the truth, all events).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from genesis.data.normalization import Normalization
from genesis.errors import ConfigError, DataError

SCORING = Normalization(npe_transform="log1p", time_transform="none",
                        affine_offsets=(1.0, 9000.0, -600.0, -550.0, -550.0),
                        affine_scales=(2.0, 2000.0, 1200.0, 1100.0, 1100.0))
SCORE = "mse_all"  # what the verdict and the improvement ratios compare
LEGACY_SCORE = "mse_normalized"  # metrics written before the scoring space (in a checkpoint's own units)
VERDICT_BASELINES = {"zero": "zero fill (dead DOMs)", "neighbours": "the neighbour mean on the string"}
VERDICT_TIE = 0.05  # score ratios within 5% of 1 count as "no better": the fill is indistinguishable
SPREAD_SIGMAS = 2.0  # a difference under this many standard errors is "within the spread"


def inpaint_metrics(filled: Any, true: Any, mask: Any) -> dict[str, float]:
    """Scores (module doc) of physical fills (B, 2, P) against the true events (B, 2, P) on the masked DOMs
    (mask (P,) bool, True = masked); numpy arrays or tensors."""
    fill, truth = (np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float64)
                   for v in (filled, true))
    if fill.shape != truth.shape:
        raise DataError(f"filled events {fill.shape} and true events {truth.shape} differ in shape")
    m = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask, dtype=bool)
    if m.shape != (truth.shape[-1],):
        raise DataError(f"mask has shape {m.shape} but events have {truth.shape[-1]} DOMs")
    per_dom = ((SCORING.normalize_signal(fill) - SCORING.normalize_signal(truth)) ** 2)[:, :, m].mean(1)  # (B, M)
    hit_f, hit_t = fill[:, 0, m] > 0, truth[:, 0, m] > 0
    both = hit_f & hit_t
    npe_f, npe_t = np.where(hit_f, fill[:, 0, m], 0.0), np.where(hit_t, truth[:, 0, m], 0.0)
    q_f, q_t = np.where(fill[:, 0] > 0, fill[:, 0], 0).sum(1), np.where(truth[:, 0] > 0, truth[:, 0], 0).sum(1)
    has_q = q_t > 0
    nan = math.nan
    return {
        "mse_all": float(per_dom.mean()),
        "mse_all_se": float(per_dom.std(ddof=1) / math.sqrt(per_dom.size)) if per_dom.size > 1 else nan,
        "mse_hit": float(per_dom[hit_t].mean()) if hit_t.any() else nan,
        "npe_abs_error": float(np.abs(npe_f - npe_t).mean()),
        "npe_rel_error": float((np.abs(npe_f - npe_t)[hit_t] / npe_t[hit_t]).mean()) if hit_t.any() else nan,
        "time_error_ns": float(np.median(np.abs(fill[:, 1, m] - truth[:, 1, m])[both])) if both.any() else nan,
        "precision": float(both.sum() / hit_f.sum()) if hit_f.any() else nan,
        "recall": float(both.sum() / hit_t.sum()) if hit_t.any() else nan,
        "hit_accuracy": float((hit_f == hit_t).mean()),
        "total_charge_error": float((np.abs(q_f - q_t)[has_q] / q_t[has_q]).mean()) if has_q.any() else nan,
        "n_masked_doms": int(m.sum()),
        "n_true_hits": int(hit_t.sum()),
    }


def score_of(metrics: dict) -> float:
    """The compared score of one method's metrics (mse_all; mse_normalized in metrics from before it)."""
    return metrics[SCORE] if SCORE in metrics else metrics[LEGACY_SCORE]


def improvement_ratios(metrics_by_method: dict[str, dict], method: str) -> dict[str, float]:
    """{other method: score(other) / score(method)}; > 1 means `method` is better."""
    if method not in metrics_by_method:
        raise ConfigError(f"method {method!r} has no metrics; available: {sorted(metrics_by_method)}")
    ref = score_of(metrics_by_method[method])
    return {name: (score_of(m) / ref if ref > 0 else math.inf)
            for name, m in metrics_by_method.items() if name != method}


def same_fills(fills: dict[str, np.ndarray]) -> dict[str, str]:
    """{method: the first earlier method (in the dict's order) whose fill is identical}, for fills
    (B, 2, P) by method; methods with a fill of their own are left out."""
    out, names = {}, list(fills)
    for i, name in enumerate(names):
        twin = next((other for other in names[:i] if np.array_equal(fills[other], fills[name])), None)
        if twin is not None:
            out[name] = out.get(twin, twin)
    return out


def _within_spread(a: dict, b: dict) -> bool:
    """Whether two methods' scores differ by less than SPREAD_SIGMAS of their combined standard error
    (False when either has no standard error, e.g. metrics from before it)."""
    se = math.hypot(a.get("mse_all_se", math.nan), b.get("mse_all_se", math.nan))
    return math.isfinite(se) and abs(score_of(a) - score_of(b)) < SPREAD_SIGMAS * se


def _baseline_groups(metrics_by_method: dict[str, dict], method: str) -> list[list[str]]:
    """The baselines present, grouped by identical fill (metrics' 'same_fill_as'); a group holding
    `method` itself comes first as [method, baselines...]."""
    groups: dict[str, list[str]] = {}
    for name in VERDICT_BASELINES:
        if name != method and name in metrics_by_method:
            groups.setdefault(metrics_by_method[name].get("same_fill_as") or name, []).append(name)
    own = groups.pop(method, None)
    return ([[method, *own]] if own else []) + list(groups.values())


def _compare(metrics_by_method: dict[str, dict], method: str, name: str, words: str) -> tuple[bool, str]:
    """(method beat the baseline `name`, the phrase) for one distinct baseline."""
    mine, theirs = metrics_by_method[method], metrics_by_method[name]
    r = improvement_ratios(metrics_by_method, method)[name]
    if math.isnan(r):
        return False, f"could not be compared with {words} (no error defined)"
    if r == 0:
        return False, f"was worse than {words} (exact here" + (": the masked DOMs recorded nothing)"
                                                               if name == "zero" else ")")
    if _within_spread(mine, theirs):
        return False, (f"was within the spread over the masked DOMs of {words} (error {score_of(mine):.3g} vs "
                       f"{score_of(theirs):.3g}, standard errors {mine['mse_all_se']:.2g} and "
                       f"{theirs['mse_all_se']:.2g})")
    if r > 1 + VERDICT_TIE:
        return True, f"beat {words} ({f'{r:.2f}x lower error' if math.isfinite(r) else 'no error left'})"
    if r >= 1 - VERDICT_TIE:
        return False, f"was no better than {words} (error ratio {r:.2f})"
    return False, f"was worse than {words} ({1 / r:.2f}x higher error)"


def inpaint_verdict(metrics_by_method: dict[str, dict], method: str) -> tuple[bool, str]:
    """(beat every distinct baseline, one sentence) comparing `method`'s score on the masked DOMs with the
    zero-fill and neighbour-mean baselines present in metrics_by_method (see `inpaint_metrics`): each
    distinct fill once (on a whole string both baselines are the same fill and the sentence says so), and
    "within the spread" where the difference is under SPREAD_SIGMAS standard errors."""
    parts, beat_all = [], True
    for group in _baseline_groups(metrics_by_method, method):
        words = " and ".join(VERDICT_BASELINES[n] for n in group if n in VERDICT_BASELINES)
        if group[0] == method:
            beat_all = False
            parts.append(f"made the same fill as {words}")
            continue
        if len(group) > 1:
            words = f"{VERDICT_BASELINES[group[0]]} (here the same fill as " + words.split(" and ", 1)[1] + ")"
        beat, phrase = _compare(metrics_by_method, method, group[0], words)
        beat_all = beat_all and beat
        parts.append(phrase)
    if not parts:
        return True, f"{method}: no baseline to compare with."
    return beat_all, f"{method} " + " and ".join(parts) + " on the masked DOMs."
