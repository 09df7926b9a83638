"""Inpainting of events from an HDF5 file into an HDF5 file: the `genesis inpaint` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from genesis.errors import ConfigError, DataError
from genesis.inpaint.masks import parse_mask
from genesis.inpaint.metrics import inpaint_verdict
from genesis.inpaint.run import METHOD_KIND, METHODS, inpaint_events


def parse_events(spec: str, n_events: int) -> np.ndarray:
    """'0,5,9' or '0-9' (inclusive) -> sorted unique indices; out of range -> DataError."""
    try:
        idx: list[int] = []
        bad: list[int] = []
        for part in spec.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            outside = [i for i in ((first, last) if sep else (first,)) if not 0 <= i < n_events]
            if outside:  # checked before a range is expanded: '0-1000000000000' must not fill memory
                bad.extend(outside)
                continue
            idx.extend(range(first, last + 1))
    except ValueError:
        raise DataError(f"--events {spec!r}: use comma-separated indices or ranges, e.g. 0,5,9 or 0-9") from None
    if bad or not idx:
        raise DataError(f"--events {spec!r}: indices must be in 0..{n_events - 1} (bad: {bad[:5]})")
    return np.unique(idx)


def inpaint_to_file(checkpoint_path: str | None, data: str, events: str, mask_spec: str, method: str, out: str,
                    *, steps: int = 200, restarts: int = 3, seed: int = 0, device: str = "auto", force: bool = False,
                    compare_baselines: bool = True) -> dict[str, Any]:
    """The `genesis inpaint` command: writes filled (as `input`), input_masked, input_true and mask; returns
    the report (method, events, masked DOMs, seconds, every fill's metrics, score ratios) as plain JSON types."""
    from genesis import checkpoint, ranges
    from genesis.data import schema

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if Path(out).exists() and not force:
        raise DataError(f"{out}: file exists; choose another name or pass --force to overwrite")
    n, _, _ = schema.file_info(data)
    geometry = schema.read_geometry(data)
    idx = parse_events(events, n)
    mask = parse_mask(mask_spec, geometry, seed=seed)
    loaded = None
    if checkpoint_path:
        expect = METHOD_KIND.get(method)
        loaded = checkpoint.load_model(checkpoint_path, device=checkpoint.resolve_device(device), expect_kind=expect)
    signal, labels, _ = schema.read_events(data, indices=idx)
    bad = ~np.isfinite(labels).all(1)
    if bad.any():  # the labels condition the models and are written to the output
        raise DataError(f"{data}: dataset 'label' has NaN/inf at event {idx[bad][0]}; choose other --events or fix the file")
    result = inpaint_events(loaded, signal, labels, mask, method, geometry, steps=steps, restarts=restarts, seed=seed,
                            compare_baselines=compare_baselines)
    report = {"method": method, "events": idx.tolist(), "masked_doms": int(mask.sum()), "seconds": result.seconds,
              "metrics": result.metrics, "improvement_over": result.ratios,
              "warnings": ranges.label_warnings(labels, ranges.record_of(loaded)) if loaded else []}
    if len(result.metrics) > 1:
        report["verdict"] = inpaint_verdict(result.metrics, method)[1]
    producer = {"producer": "genesis inpaint", "checkpoint": checkpoint_path, "method": method, "mask": mask_spec,
                "data": str(data), "events": idx.tolist(), "seed": seed, "metrics": report["metrics"]}
    extra = {"input_masked": result.masked, "input_true": result.true, "mask": mask}
    if result.uncertainty is not None:  # (N, 3, P): hit probability, npe spread [pe], time spread [ns]
        extra["uncertainty"] = result.uncertainty
    schema.write_events(out, result.filled, labels, geometry, producer=producer, force=force, extra=extra)
    return json.loads(json.dumps(report, default=float), parse_constant=lambda _: None)  # NaN -> null

