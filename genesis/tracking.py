"""MLflow store location, run creation and logging with retries, run queries as pandas, reconciliation.

Default store: sqlite:///<home>/mlruns/mlflow.db with artifacts under <home>/mlruns/artifacts;
MLFLOW_TRACKING_URI (e.g. a lab's `mlflow server`) overrides it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, TypeVar

import pandas as pd

from genesis import paths
from genesis.errors import GenesisError

T = TypeVar("T")
log = logging.getLogger("genesis.tracking")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"  # MLflow's value for "Model training" experiments
DEFAULT_EXPERIMENT = "genesis"
TAG_KIND, TAG_PID, TAG_HOST, TAG_LOG, TAG_ERROR = "genesis.kind", "genesis.pid", "genesis.host", "genesis.log", "genesis.error"
TAG_REQUEST, TAG_FINGERPRINT, TAG_GIT = "genesis.request_id", "genesis.data_fingerprint", "genesis.git_sha"
TAG_STOP = "genesis.stop"  # how launcher.stop() ended the run: "SIGTERM" or "killed after timeout ..."
# Losses are named by what they measure, so a flow's log-likelihood (nats per event, often -1e4) is never
# read as, or drawn on one axis with, a diffusion model's noise-prediction error (~0.5):
# diffusion: train/loss, val/loss (weighted MSE of the predicted noise or v, normalized units);
# flow: train/nll, val/nll (negative log-likelihood, nats per event) and train|val/bits_per_dim.
LOSS_KEYS = {"diffusion": {"train": "train/loss", "val": "val/loss"},
             "flow": {"train": "train/nll", "val": "val/nll"}}
LOSS_UNITS = {"diffusion": "MSE, normalized units", "flow": "nats per event"}
LEGACY_LOSS_KEYS = {"train": "train/loss", "val": "val/loss"}  # flow runs logged these before the split by kind
VAL_LOSS_KEYS = ("val/loss", "val/nll")
KEY_METRICS = ("train/loss", "train/nll", "val/loss", "val/nll", "train/events_per_s", "eval/auc")
# Config sections that apply to each kind: a run logs only these as params (a flow has no model.*).
KIND_SECTIONS = {"diffusion": ("model", "diffusion", "distill"), "flow": ("flow",)}


def loss_key(kind: str, split: str = "train") -> str:
    """Metric name of the loss of a model kind for split 'train' or 'val', e.g. ('flow', 'val') -> 'val/nll'."""
    try:
        return LOSS_KEYS[kind][split]
    except KeyError:
        raise GenesisError(f"no loss metric for kind {kind!r}, split {split!r}; kinds: {', '.join(LOSS_KEYS)}") from None


def loss_key_of(kind: str | None, split: str, logged: set[str] | frozenset[str]) -> str | None:
    """The loss metric a run of `kind` actually logged for `split`: the named-by-kind key, else (runs from
    before the split by kind, or of unknown kind) the legacy train/loss or val/loss; None if neither."""
    candidates = [LOSS_KEYS[kind][split]] if kind in LOSS_KEYS else []
    candidates.append(LEGACY_LOSS_KEYS[split])
    return next((k for k in candidates if k in logged), None)


def param_applies(kind: str | None, key: str) -> bool:
    """Whether a flattened config key (e.g. 'flow.hidden_size') means anything for a run of `kind`:
    sections of the other kind do not (an unknown kind keeps everything)."""
    section = key.split(".", 1)[0]
    if kind not in KIND_SECTIONS:
        return True
    other = {s for k, secs in KIND_SECTIONS.items() if k != kind for s in secs}
    return section not in other


def run_params(cfg) -> dict[str, Any]:
    """Flattened config params that apply to the run's kind (what a run logs to MLflow)."""
    from genesis import config

    flat = config.flatten(config.to_dict(cfg))
    return {k: v for k, v in flat.items() if param_applies(cfg.kind, k)}


class StoreError(GenesisError):
    """The MLflow store is unreachable, locked or not writable."""


_retries: Counter[str] = Counter()  # what -> transient store errors retried in this process


def retry_counts() -> dict[str, int]:
    """Transient store errors retried in this process so far, by call (`what`); each one is also logged."""
    return dict(_retries)


def retries_total() -> int:
    """All transient store errors retried in this process so far."""
    return sum(_retries.values())


def retry(fn: Callable[[], T], attempts: int = 8, what: str = "MLflow call") -> T:
    """Run fn, retrying with backoff on transient store errors (SQLite 'database is locked', network).
    Every retry is counted (`retry_counts()`) and logged as a warning ("store busy ... retry"), so a
    store that is often locked shows in the run logs and in tests, not only when retries run out."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MLflow wraps SQLAlchemy/HTTP errors in many types
            transient = any(s in str(exc).lower() for s in ("locked", "busy", "timed out", "connection", "temporarily"))
            if not transient or attempt == attempts - 1:
                raise
            _retries[what] += 1
            log.warning("store busy: retry %d/%d of %s in %.1f s (%s)", attempt + 1, attempts - 1, what, delay,
                        str(exc).splitlines()[0][:200])
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Store:
    """Where runs live: a tracking URI and (for the embedded store) a local artifact root."""

    tracking_uri: str
    artifact_root: str | None = None

    @classmethod
    def default(cls) -> "Store":
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return cls(uri, None)
        root = paths.home() / "mlruns"
        try:  # a real write: catches read-only folders, a full disk, and a file in the folder's place
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"cannot write the MLflow store in {root} ({exc.strerror or exc}); free disk space, "
                             "fix the folder's permissions, or set MLFLOW_TRACKING_URI to a server") from exc
        return cls(f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))

    @property
    def is_local(self) -> bool:
        return self.tracking_uri.startswith("sqlite:") or self.tracking_uri.startswith("file:")

    @cached_property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def experiment_id(self, name: str = DEFAULT_EXPERIMENT, create: bool = True) -> str | None:
        """Id of the named experiment, created (with artifacts under mlruns/artifacts) when missing."""
        try:
            exp = retry(lambda: self.client.get_experiment_by_name(name), what="get_experiment_by_name")
            if exp is not None:
                return exp.experiment_id
            if not create:
                return None
            location = Path(self.artifact_root).as_uri() if self.artifact_root else None
            # tagged as a training experiment from the start, so MLflow 3's UI opens it in its model-training view
            return retry(lambda: self.client.create_experiment(name, artifact_location=location,
                                                               tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}),
                         what="create_experiment")
        except GenesisError:
            raise
        except Exception as exc:
            if "already exists" in str(exc):  # another process created it at the same moment
                return self.client.get_experiment_by_name(name).experiment_id
            raise StoreError(f"MLflow store {self.tracking_uri} is not usable: {exc}") from exc

    def create_run(self, experiment: str, name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        """Create a RUNNING run with tags and params; returns its id."""
        from mlflow.entities import Param

        exp_id = self.experiment_id(experiment)
        run = retry(lambda: self.client.create_run(exp_id, run_name=name or None, tags=tags), what="create_run")
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            retry(lambda: self.client.log_batch(run.info.run_id, params=items[start:start + 100]), what="log_params")
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        retry(lambda: self.client.log_batch(run_id, metrics=batch), what="log_metrics")

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        retry(lambda: self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]),
              what="set_tags")

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path), what="log_artifact")

    def end_run(self, run_id: str, status: str, error: str | None = None) -> None:
        if error:
            self.set_tags(run_id, {TAG_ERROR: error[:4000]})
        retry(lambda: self.client.set_terminated(run_id, status=status), what="end_run")

    def run(self, run_id: str):
        return retry(lambda: self.client.get_run(run_id), what="get_run")

    def artifact_dir(self, run_id: str) -> Path | None:
        """Local folder of a run's artifacts (None for remote artifact stores)."""
        uri = self.run(run_id).info.artifact_uri
        if uri.startswith("file://"):
            return Path(uri[len("file://"):])
        if uri.startswith("/"):
            return Path(uri)
        return None

    def metric_history(self, run_id: str, key: str) -> pd.DataFrame:
        """DataFrame step, value, timestamp (s) of one metric."""
        hist = retry(lambda: self.client.get_metric_history(run_id, key), what="metric_history")
        return pd.DataFrame({"step": [m.step for m in hist], "value": [m.value for m in hist],
                             "timestamp": [m.timestamp / 1000 for m in hist]})

    def search(self, experiments: list[str] | None = None, filter_string: str = "", max_results: int = 50,
               page_token: str | None = None, order_by: list[str] | None = None) -> tuple[pd.DataFrame, str | None]:
        """One page of runs as a DataFrame (server-side filter and paging) and the next page token."""
        names = experiments or [DEFAULT_EXPERIMENT]
        ids = [i for i in (self.experiment_id(n, create=False) for n in names) if i is not None]
        if not ids:
            return pd.DataFrame(), None
        try:
            page = retry(lambda: self.client.search_runs(ids, filter_string=filter_string, max_results=max_results,
                                                          page_token=page_token, order_by=order_by or ["attributes.start_time DESC"]),
                         what="search_runs")
        except Exception as exc:
            raise StoreError(f"run query failed ({exc}); check the filter syntax, e.g. params.kind = 'flow'") from exc
        return runs_to_frame(page), page.token

    def list_experiments(self) -> list[str]:
        return [e.name for e in retry(lambda: self.client.search_experiments(), what="search_experiments")]


def runs_to_frame(runs) -> pd.DataFrame:
    """MLflow Run objects -> one row per run: id, name, status, times, params.*, metrics.*, tags.*."""
    rows = []
    for r in runs:
        row = {"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
               "start_time": pd.to_datetime(r.info.start_time, unit="ms"),
               "end_time": pd.to_datetime(r.info.end_time, unit="ms") if r.info.end_time else pd.NaT,
               "experiment_id": r.info.experiment_id}
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"tags.{k}": v for k, v in r.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.note.content"})
        rows.append(row)
    return pd.DataFrame(rows)


def process_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


def reconcile(store: Store, experiments: list[str] | None = None, frame: pd.DataFrame | None = None) -> list[str]:
    """Mark RUNNING runs started on this host whose process is gone as FAILED ('process lost').

    `frame`: the RUNNING runs when the caller already has them (the live view queries them once per
    refresh and reuses the answer here, so watching a run adds one query, not two)."""
    if frame is None:
        frame, _ = store.search(experiments, "attributes.status = 'RUNNING'", max_results=500)
    lost = []
    for _, row in frame.iterrows():
        pid, host = row.get(f"tags.{TAG_PID}"), row.get(f"tags.{TAG_HOST}")
        if pid is None or pd.isna(pid) or host != socket.gethostname():
            continue
        if not process_alive(int(pid)):
            store.end_run(row["run_id"], "FAILED", "process lost")
            lost.append(row["run_id"])
    return lost


def git_sha() -> str:
    head = paths.PACKAGE_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (paths.PACKAGE_ROOT / ".git" / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    except OSError:
        return "unknown"
