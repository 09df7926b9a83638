"""Run queries, comparison and housekeeping for the Runs page (and scripts); never imports streamlit.

Everything here works on a `tracking.Store`; filters go to MLflow server-side (one page of runs per call),
and the only per-run data fetched is the val/loss history of the runs on the current page, in one batched
query, to show its best (minimum) value.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

import numpy as np
import pandas as pd

from genesis import tracking
from genesis.errors import GenesisError

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED")
BEST_METRIC = "val/loss"  # "best" = minimum over its history (a diffusion run's; flows: val/nll)
# Compare-view choices that stand for "the loss of each run's own kind" (tracking.LOSS_KEYS), drawn in one
# panel per kind: never one axis for a flow's NLL and a diffusion MSE.
LOSS_ROLES = {"val loss (per kind)": "val", "train loss (per kind)": "train"}
NOT_APPLICABLE = "—"  # a param cell of a run whose kind has no such param
X_AXES = {"step": "step", "wall time": "wall_time", "wall_time": "wall_time"}
UI_URL_ENV = "GENESIS_MLFLOW_UI_URL"
RESERVED_TAG_PREFIXES = ("mlflow.", "genesis.")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TAG_KEY = re.compile(r"^[\w./ -]{1,250}$")
_MAX_TEXT = 250


# ------------------------------------------------------------------------------------------ filters


def quote(value: str, what: str = "value") -> str:
    """`value` as an MLflow filter string literal; GenesisError for text no literal can hold."""
    if _CONTROL.search(value):
        raise GenesisError(f"{what} {value!r} contains a control character (newline, tab, ...); remove it")
    if len(value) > _MAX_TEXT:
        raise GenesisError(f"{what} is {len(value)} characters long; use at most {_MAX_TEXT}")
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise GenesisError(f"{what} {value!r} contains both ' and \" quotes, which an MLflow filter cannot hold; "
                       "remove one kind")


def build_filter(status: str | None = None, name_contains: str = "", param_filter: str = "") -> str:
    """MLflow filter string: status equality, case-insensitive name substring, and a raw extra clause.

    `param_filter` is an MLflow filter such as "params.kind = 'flow' and metrics.`val/loss` < 0.5"; it
    is checked with MLflow's own parser so a typo gives a clear GenesisError instead of a failed query.
    Note that % and _ in `name_contains` are SQL LIKE wildcards (they still match themselves).
    """
    clauses = []
    if status:
        if status not in STATUSES:
            raise GenesisError(f"unknown run status {status!r}; choose one of {', '.join(STATUSES)}")
        clauses.append(f"attributes.status = '{status}'")
    name = (name_contains or "").strip()
    if name:
        clauses.append(f"attributes.run_name ILIKE {quote('%' + name + '%', 'name filter')}")
    extra = (param_filter or "").strip()
    if extra:
        if _CONTROL.search(extra):
            raise GenesisError("param filter contains a control character (newline, tab, ...); write it on one line")
        from mlflow.utils.search_utils import SearchUtils

        try:
            SearchUtils.parse_search_filter(extra)
        except Exception as exc:  # MlflowException with the parser's reason
            raise GenesisError(f"param filter {extra!r} is not a valid MLflow filter ({exc}); "
                               "write e.g. params.kind = 'flow' and params.`train.lr` = '0.001'") from exc
        clauses.append(extra)
    return " and ".join(clauses)


# ------------------------------------------------------------------------------------------ metrics


def _backend(store: tracking.Store):
    """The MLflow tracking store behind the client (private API: None when it cannot be reached)."""
    return getattr(getattr(store.client, "_tracking_client", None), "store", None)


def metric_histories(store: tracking.Store, run_ids: Iterable[str], key: str) -> pd.DataFrame:
    """Long frame run_id, step, value, timestamp (s) of one metric for many runs.

    A SQL store answers in one query (get_metric_history_bulk); other stores (a remote `mlflow server`)
    get one request per run, a few at a time.
    """
    ids = list(dict.fromkeys(run_ids))
    cols = ["run_id", "step", "value", "timestamp"]
    if not ids:
        return pd.DataFrame(columns=cols)
    backend = _backend(store)
    if hasattr(backend, "get_metric_history_bulk"):
        rows = tracking.retry(lambda: backend.get_metric_history_bulk(ids, key, max_results=50_000_000))
        pairs = [(r.run_id, r) for r in rows]
    else:
        with ThreadPoolExecutor(max_workers=min(8, len(ids))) as pool:
            hists = pool.map(lambda i: tracking.retry(lambda: store.client.get_metric_history(i, key)), ids)
            pairs = [(i, m) for i, hist in zip(ids, hists) for m in hist]
    return pd.DataFrame({"run_id": [p[0] for p in pairs], "step": [p[1].step for p in pairs],
                         "value": [p[1].value for p in pairs], "timestamp": [p[1].timestamp / 1000 for p in pairs]},
                        columns=cols)


def best_values(store: tracking.Store, run_ids: Iterable[str], key: str = BEST_METRIC) -> pd.Series:
    """Minimum of each run's metric history (NaN where never logged), indexed by run id."""
    ids = list(run_ids)
    hist = metric_histories(store, ids, key)
    best = hist.groupby("run_id")["value"].min() if len(hist) else pd.Series(dtype=np.float64)
    return best.reindex(ids).astype(np.float64)


def val_loss_histories(store: tracking.Store, run_ids: Iterable[str]) -> pd.DataFrame:
    """Long frame run_id, step, value, timestamp, key of each run's validation loss, whatever its kind
    (val/loss: diffusion and flows from before the naming by kind; val/nll: flows)."""
    ids = list(run_ids)
    parts = [metric_histories(store, ids, key).assign(key=key) for key in tracking.VAL_LOSS_KEYS]
    return pd.concat(parts, ignore_index=True) if ids else pd.DataFrame(columns=["run_id", "step", "value", "timestamp", "key"])


def metric_keys(frame: pd.DataFrame) -> list[str]:
    """Sorted union of the metric keys that at least one run of a store frame has logged."""
    return sorted(c[len("metrics."):] for c in frame.columns if c.startswith("metrics.") and frame[c].notna().any())


# ------------------------------------------------------------------------------------------ tables


def run_labels(frame: pd.DataFrame) -> pd.Series:
    """Display label per run: its name, with a short id where names are missing or repeated."""
    names = frame["name"].fillna("").astype(str)
    short = frame["run_id"].astype(str).str[:8]
    dup = names.duplicated(keep=False) | (names == "")
    return names.where(~dup, names + " (" + short + ")").str.strip()


def _duration(frame: pd.DataFrame) -> pd.Series:
    now = pd.Timestamp(time.time() * 1000, unit="ms")
    end = frame["end_time"].where(frame["end_time"].notna(), now) if "end_time" in frame else now
    return (end - frame["start_time"]).dt.floor("s")


def _kind(frame: pd.DataFrame) -> pd.Series:
    kind = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for col in (f"tags.{tracking.TAG_KIND}", "params.kind"):
        if col in frame:
            kind = kind.where(kind.notna(), frame[col])
    return kind


def failure_reasons(frame: pd.DataFrame) -> pd.Series:
    """Why each FAILED run failed (tag genesis.error; 'no reason recorded' when absent), None for the others."""
    col = f"tags.{tracking.TAG_ERROR}"
    error = frame[col] if col in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)
    failed = frame["status"] == "FAILED"
    text = error.where(error.notna() & (error.astype(str) != ""), "no reason recorded")
    return text.where(failed, None).astype(object)


def display_table(frame: pd.DataFrame, best: dict[str, pd.Series] | None = None,
                  ui_url: str | None = None) -> pd.DataFrame:
    """Store frame -> name, status, kind, start, duration, key metrics (last; best val loss of each kind),
    eval/*, reason (FAILED runs), ids."""
    if frame.empty:
        return pd.DataFrame(columns=["name", "status", "kind", "start", "duration", "run_id", "experiment_id"])
    out = pd.DataFrame({"name": run_labels(frame), "status": frame["status"], "kind": _kind(frame),
                        "start": frame["start_time"].dt.floor("s"), "duration": _duration(frame)})
    keys = metric_keys(frame)
    for key in [k for k in tracking.KEY_METRICS if k in keys] + [k for k in keys if k.startswith("eval/")]:
        if key in out:
            continue
        out[key] = frame[f"metrics.{key}"].astype(np.float64)
        if key in tracking.VAL_LOSS_KEYS and best is not None and key in best:
            out[f"best {key}"] = best[key].reindex(frame["run_id"]).to_numpy(np.float64)
    reasons = failure_reasons(frame)
    if reasons.notna().any():
        out["reason"] = reasons.to_numpy()
    out["run_id"], out["experiment_id"] = frame["run_id"], frame["experiment_id"]
    if ui_url:
        out["mlflow"] = [mlflow_ui_link(ui_url, e, r) for e, r in zip(frame["experiment_id"], frame["run_id"])]
    return out.reset_index(drop=True)


def runs_table(store: tracking.Store, experiments: list[str] | None, status: str | None = None, name_contains: str = "",
               param_filter: str = "", page_size: int = 50, page_token: str | None = None,
               ui_url: str | None = None) -> tuple[pd.DataFrame, str | None]:
    """One page of runs (newest first) as a display table, and the token of the next page (None at the end).

    Filtering and paging happen in MLflow; best val/loss comes from one batched history query for the
    runs of this page only.
    """
    if not 1 <= int(page_size) <= 1000:
        raise GenesisError(f"page size must be between 1 and 1000, got {page_size}")
    flt = build_filter(status, name_contains, param_filter)
    frame, token = store.search(experiments, flt, max_results=int(page_size), page_token=page_token)
    if frame.empty:
        return display_table(frame), None
    best = {key: best_values(store, frame["run_id"], key) for key in tracking.VAL_LOSS_KEYS if f"metrics.{key}" in frame}
    return display_table(frame, best, ui_url), token or None


def selected_runs(store: tracking.Store, run_ids: Iterable[str]) -> pd.DataFrame:
    """Store frame (params.*, metrics.*, tags.*) of the given runs, in the given order."""
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        return pd.DataFrame()
    return tracking.runs_to_frame([store.run(i) for i in ids])


def teacher_runs(store: tracking.Store, run_ids: Iterable[str]) -> list[str]:
    """The teacher runs (tag genesis.teacher_run_id of distillation runs) of the given runs that are in the store
    and not among them: what the Runs page offers to compare a student with its teacher."""
    from genesis.distill import TAG_TEACHER_RUN

    ids = list(dict.fromkeys(run_ids))
    out = []
    for run_id in ids:
        teacher = store.run(run_id).data.tags.get(TAG_TEACHER_RUN)
        if teacher and teacher not in ids and teacher not in out:
            try:
                store.run(teacher)
            except Exception:  # MlflowException: the teacher's run was deleted or lives in another store
                continue
            out.append(teacher)
    return out


def differing_params(frame: pd.DataFrame) -> pd.DataFrame:
    """Params whose values differ among the runs they apply to (a missing param counts as a value).

    Like with like: a param of one kind's section (model.*, diffusion.* for diffusion; flow.* for flows)
    is compared among the runs of that kind only and shows NOT_APPLICABLE for the others, so a diffusion
    run never "differs" in flow.* (older runs logged every section; those values are ignored too).
    Rows are runs (index: run label), columns the differing param names without the 'params.' prefix.
    """
    cols = [c for c in frame.columns if c.startswith("params.")]
    if len(frame) < 2 or not cols:
        return pd.DataFrame(index=run_labels(frame) if len(frame) else None)
    values = frame[cols].astype(object).where(frame[cols].notna(), None)
    kinds = _kind(frame).tolist()
    keep = []
    for c in cols:
        applies = np.array([tracking.param_applies(k, c[len("params."):]) for k in kinds])
        if applies.sum() >= 2 and values.loc[applies, c].map(repr).nunique() > 1:
            values.loc[~applies, c] = NOT_APPLICABLE
            keep.append(c)
    out = values[keep].rename(columns=lambda c: c[len("params."):])
    out.index = run_labels(frame).to_numpy()
    out.index.name = "run"
    return out


def numeric_params_vs_metric(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Differing params that are all numbers, as floats, plus the runs' last value of `metric`."""
    diff = differing_params(frame).replace(NOT_APPLICABLE, None)
    out = pd.DataFrame(index=diff.index)
    for col in diff.columns:
        num = pd.to_numeric(diff[col], errors="coerce")
        if diff[col].notna().all() and num.notna().all():
            out[col] = num.astype(np.float64)
    col = f"metrics.{metric}"
    out[metric] = frame[col].astype(np.float64).to_numpy() if col in frame else np.nan
    return out


def compare_options(frame: pd.DataFrame) -> list[str]:
    """Metric choices of the compare view: the per-kind loss roles (when a run logged a loss), then every
    other logged metric by name (the raw loss keys are reached through the roles)."""
    keys = metric_keys(frame)
    losses = {k for kind in tracking.LOSS_KEYS.values() for k in kind.values()} | set(tracking.LEGACY_LOSS_KEYS.values())
    roles = [role for role, split in LOSS_ROLES.items()
             if any(k in keys for k in (tracking.LEGACY_LOSS_KEYS[split], *(v[split] for v in tracking.LOSS_KEYS.values())))]
    return roles + [k for k in keys if k not in losses]


def runs_without(frame: pd.DataFrame, choice: str) -> list[str]:
    """Labels (run_labels) of the runs of a store frame that have not logged `choice` (a metric key or a
    LOSS_ROLES choice, resolved per run): the compare view says which runs its chart leaves out."""
    labels = dict(zip(frame["run_id"], run_labels(frame)))
    has = {rid: bool(key) and f"metrics.{key}" in frame.columns
           and frame.loc[frame["run_id"] == rid, f"metrics.{key}"].notna().any()
           for rid, key in _metric_of_each_run(frame, choice).items()}
    return [labels[rid] for rid, ok in has.items() if not ok]


def shared_option(frame: pd.DataFrame, options: list[str]) -> int:
    """Index of the first of `options` (compare_options) that every run of the frame has logged; 0 if none."""
    return next((i for i, choice in enumerate(options) if not runs_without(frame, choice)), 0)


def _metric_of_each_run(frame: pd.DataFrame, choice: str) -> dict[str, str | None]:
    """run_id -> the metric key that `choice` means for that run (a loss role resolves by the run's kind)."""
    split = LOSS_ROLES.get(choice)
    out = {}
    for (_, row), kind in zip(frame.iterrows(), _kind(frame)):
        if split is None:
            out[row["run_id"]] = choice
        else:
            logged = {c[len("metrics."):] for c in frame.columns if c.startswith("metrics.") and pd.notna(row[c])}
            out[row["run_id"]] = tracking.loss_key_of(kind if isinstance(kind, str) else None, split, logged)
    return out


def compare_curves(store: tracking.Store, run_ids: Iterable[str], metric: str, x: str = "step") -> pd.DataFrame:
    """Long frame run, run_id, kind, metric, step, value, wall_time (s since the run started), sorted by x.

    `metric` is a metric key or a LOSS_ROLES choice, which takes each run's own loss (train/loss or
    val/loss for diffusion, train/nll or val/nll for flows; older flow runs' train/loss, val/loss)."""
    if x not in X_AXES:
        raise GenesisError(f"x axis must be one of {', '.join(X_AXES)}, got {x!r}")
    frame = selected_runs(store, run_ids)
    cols = ["run", "run_id", "kind", "metric", "step", "value", "wall_time"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    per_run = _metric_of_each_run(frame, metric)
    parts = [metric_histories(store, [r for r, k in per_run.items() if k == key], key).assign(metric=key)
             for key in sorted({k for k in per_run.values() if k})]
    hist = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["run_id", "step", "value", "timestamp", "metric"])
    labels = dict(zip(frame["run_id"], run_labels(frame)))
    kinds = dict(zip(frame["run_id"], _kind(frame).fillna("unknown")))
    starts = dict(zip(frame["run_id"], (frame["start_time"] - pd.Timestamp(0)).dt.total_seconds()))
    hist["run"] = hist["run_id"].map(labels)
    hist["kind"] = hist["run_id"].map(kinds)
    hist["wall_time"] = hist["timestamp"] - hist["run_id"].map(starts)
    return hist[cols].sort_values(["run", X_AXES[x], "step"], kind="stable").reset_index(drop=True)


def single_kind(frame: pd.DataFrame) -> str | None:
    """The kind all runs of a frame share, None when they mix kinds (or none is known)."""
    kinds = set(_kind(frame).dropna())
    return kinds.pop() if len(kinds) == 1 else None


# ------------------------------------------------------------------------------------------ actions


def _run_or_error(store: tracking.Store, run_id: str):
    try:
        return store.run(run_id)
    except Exception as exc:  # MlflowException RESOURCE_DOES_NOT_EXIST and friends
        raise GenesisError(f"run {run_id} not found in {store.tracking_uri}: {exc}") from exc


def rename_run(store: tracking.Store, run_id: str, name: str) -> None:
    """Give a run a new display name."""
    name = (name or "").strip()
    if not name:
        raise GenesisError("the new run name is empty; type a name")
    quote(name, "run name")  # same character rules as the filters, so the run stays findable by name
    _run_or_error(store, run_id)
    tracking.retry(lambda: store.client.update_run(run_id, name=name))


def tag_run(store: tracking.Store, run_id: str, key: str, value: str) -> None:
    """Set one tag; keys under mlflow.* and genesis.* are reserved for MLflow and the trainer."""
    key = (key or "").strip()
    if not _TAG_KEY.match(key):
        raise GenesisError(f"tag key {key!r} must be 1-250 letters, digits, and _ - . / or space")
    if key.startswith(RESERVED_TAG_PREFIXES):
        raise GenesisError(f"tag key {key!r} is reserved ({', '.join(RESERVED_TAG_PREFIXES)}); choose another key")
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", str(value)):
        raise GenesisError("tag value contains a control character; remove it")
    _run_or_error(store, run_id)
    store.set_tags(run_id, {key: str(value)})


def delete_runs(store: tracking.Store, run_ids: Iterable[str]) -> int:
    """Delete runs (MLflow soft delete); refuses all of them if any is still RUNNING. Returns the count."""
    ids = list(dict.fromkeys(run_ids))
    runs = [_run_or_error(store, i) for i in ids]
    running = [r.info.run_name or r.info.run_id for r in runs if r.info.status == "RUNNING"]
    if running:
        raise GenesisError(f"run(s) {', '.join(running)} still RUNNING; stop it first (Train page), then delete")
    for i in ids:
        tracking.retry(lambda: store.client.delete_run(i))
    return len(ids)


# ------------------------------------------------------------------------------------------ links


def ui_url_from_env() -> str:
    return os.environ.get(UI_URL_ENV, "").strip()


def mlflow_ui_link(base_url: str, experiment_id: str, run_id: str) -> str:
    """Address of a run in the MLflow UI, e.g. http://127.0.0.1:5000/#/experiments/1/runs/abc."""
    base = (base_url or "").strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+", base):
        raise GenesisError(f"MLflow UI URL {base_url!r} must start with http:// or https://, e.g. http://127.0.0.1:5000")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
