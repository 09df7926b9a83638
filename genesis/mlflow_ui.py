"""The MLflow UI on the project's store, opened on our runs in its classic model-training view.

MLflow 3.x has two experiment views: "GenAI" (traces, evaluations; the default) and "Model training"
(runs, metrics, params). Our experiment holds training runs only, but opened in GenAI mode it shows an empty
traces page. Two switches select the training view, and we set both:
- the URL: the UI reads `?workflowType=machine_learning` after the experiment route (MLflow 3.17 uses this
  when its workflow switch is on, the default), e.g. http://127.0.0.1:5000/#/experiments/1/runs?workflowType=...;
- the experiment tag `mlflow.experimentKind = custom_model_development`, which MLflow 3.x versions without the
  workflow switch read to pick the experiment's view.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request

from genesis import tracking

EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = tracking.EXPERIMENT_KIND_TAG, tracking.MODEL_TRAINING_KIND
WORKFLOW_QUERY = "workflowType=machine_learning"
STARTUP_TIMEOUT_S = 120.0  # `mlflow ui` needs ~15 s on a free machine, several times that on a busy one


def mark_model_training(store: tracking.Store, name: str = tracking.DEFAULT_EXPERIMENT) -> str:
    """Create the experiment if needed and tag it as a model-training experiment (experiments made before
    tracking.Store tagged new ones need it); returns its id. Idempotent:
    setting the tag again does nothing new, so every `genesis ui` (and the dashboard) may call it."""
    exp_id = store.experiment_id(name)
    tracking.retry(lambda: store.client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND),
                   what="set_experiment_tag")
    return exp_id


def runs_url(base: str, experiment_id: str) -> str:
    """Address of an experiment's runs table in the model-training view, e.g.
    http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW_QUERY}"


def ui_command(store: tracking.Store, host: str, port: int, workers: int = 1) -> list[str]:
    """argv of `mlflow ui` on the store. One worker: a lab member's browser is the only client, and four
    workers (MLflow's default) each import MLflow, which made the UI take ~50 s to start on 2 cores."""
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.tracking_uri, "--host", host,
            "--port", str(port), "--workers", str(workers)]
    if store.artifact_root:
        argv += ["--default-artifact-root", store.artifact_root]
    return argv


def wait_until_up(base: str, process: subprocess.Popen | None = None, timeout_s: float = STARTUP_TIMEOUT_S) -> bool:
    """True once the server answers HTTP at `base`; False after timeout_s or when `process` has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    return False
