"""Inpainting of masked or dead DOMs: masks, baselines, flow MAP, RePaint, scores and files.

Masks are boolean numpy arrays (P,), True = masked (unknown, to be filled). Models work on normalized tensors
x (B, C, P); whole jobs (`inpaint_events`, `inpaint_to_file`) take and return physical events (B, 2, P).

Methods (see `run_inpainting`):
- "flow-map": maximise the flow's log p(x | labels, geometry) over the masked values only (Adam in a logit
  space), observed DOMs fixed exactly, from several restarts, combined as flow.inpaint_fill says ('best'
  restart, or 'vote': per DOM from all restarts, see `restarts`). A flow with a hit head (flow.hit_head)
  decides hit / no hit of every masked DOM with it and optimises only the hit DOMs' values (`hit_head`);
- "repaint": RePaint sampling with a diffusion model (`genesis.diffusion.repaint_sample`);
- "neighbours": mean of the nearest unmasked DOMs above and below on the same string;
- "zero": masked DOMs left empty (what a dead DOM records).
Every fill is scored the one way (`metrics`: physical values in one scoring space), on the page, by
`genesis inpaint` and by bench/inpaint.py.

Parts: masks.py (mask builders and the CLI's mask syntax), baselines.py (zero and neighbour fills),
box.py / hit_head.py / restarts.py / flow_map.py (flow MAP), repaint.py, metrics.py (scores and the
verdict), run.py (dispatch, whole jobs), files.py (HDF5 in and out), timing.py (expected times).
"""

from genesis.errors import ConfigError
from genesis.inpaint.baselines import (BASELINES, baseline_fill, nearest_unmasked_above_below, neighbour_fill,
                                       nohit_value, zero_fill)
from genesis.inpaint.box import (BOX_EPS, HEADROOM, MIN_SPAN, from_unconstrained, hit_bounds, map_bounds,
                                 to_unconstrained)
from genesis.inpaint.files import inpaint_to_file, parse_events
from genesis.inpaint.flow_map import (LR_FLOOR, MAP_LR, MAP_TEMPERATURE, MAX_MAP_STEPS, MAX_RESTARTS, _map_restart,
                                      flow_map_fill, flow_map_inpaint)
from genesis.inpaint.hit_head import HIT_PROBABILITY, START_MARGIN, HeadSplit, hit_head_split
from genesis.inpaint.masks import (MASK_FORMS, combine, dead_doms_mask, deepcore_mask, mask_tensor, parse_mask,
                                   random_mask, sphere_mask, strings_mask)
from genesis.inpaint.metrics import (SCORE, SCORING, VERDICT_BASELINES, VERDICT_TIE, improvement_ratios,
                                     inpaint_metrics, inpaint_verdict, same_fills)
from genesis.inpaint.repaint import (REPAINT_JUMP_LENGTH, REPAINT_RESAMPLE, REPAINT_STEPS, repaint_evaluations,
                                     run_repaint)
from genesis.inpaint.restarts import FILLS, VOTE_SHARE, MapFill, head_mean_fill, restart_spread, vote_fill
from genesis.inpaint.run import METHOD_KIND, METHODS, InpaintResult, inpaint_events, run_inpainting
from genesis.inpaint.timing import (LOAD_MARGIN, TimeRange, estimate_flow_map_seconds, estimate_repaint_seconds,
                                    expected_seconds, expected_time_text, flow_map_range, repaint_range,
                                    time_flow_map, time_flow_map_tries, time_repaint_tries, work_units)

__all__ = [
    "BASELINES", "BOX_EPS", "ConfigError", "FILLS", "HEADROOM", "HIT_PROBABILITY", "HeadSplit", "InpaintResult",
    "LOAD_MARGIN", "LR_FLOOR", "MAP_LR", "MAP_TEMPERATURE", "MASK_FORMS", "MAX_MAP_STEPS", "MAX_RESTARTS", "METHODS",
    "METHOD_KIND", "MIN_SPAN", "MapFill", "REPAINT_JUMP_LENGTH", "REPAINT_RESAMPLE", "REPAINT_STEPS", "SCORE",
    "SCORING", "START_MARGIN", "TimeRange", "VERDICT_BASELINES", "VERDICT_TIE", "VOTE_SHARE", "_map_restart",
    "baseline_fill", "combine", "dead_doms_mask", "deepcore_mask", "estimate_flow_map_seconds",
    "estimate_repaint_seconds", "expected_seconds", "expected_time_text", "flow_map_fill", "flow_map_inpaint",
    "flow_map_range", "from_unconstrained", "head_mean_fill", "hit_bounds", "hit_head_split", "improvement_ratios",
    "inpaint_events", "inpaint_metrics", "inpaint_to_file", "inpaint_verdict", "map_bounds", "mask_tensor",
    "nearest_unmasked_above_below", "neighbour_fill", "nohit_value", "parse_events", "parse_mask", "random_mask",
    "repaint_evaluations", "repaint_range", "restart_spread", "run_inpainting", "run_repaint", "same_fills",
    "sphere_mask", "strings_mask", "time_flow_map", "time_flow_map_tries", "time_repaint_tries", "to_unconstrained",
    "vote_fill", "work_units", "zero_fill",
]
