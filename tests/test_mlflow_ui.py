"""`genesis ui`: the MLflow UI opens on our experiment in its model-training view (issue 15)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genesis import cli, mlflow_ui, tracking


@pytest.fixture()
def store(tmp_path, monkeypatch) -> tracking.Store:
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tracking.Store.default()


def experiment_tags(store: tracking.Store) -> dict[str, str]:
    return store.client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).tags


def test_experiment_created_as_model_training(store):
    """A real SQLite store: the experiment is created and tagged with MLflow's model-training kind."""
    assert store.client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT) is None
    exp_id = mlflow_ui.mark_model_training(store)
    assert experiment_tags(store)["mlflow.experimentKind"] == "custom_model_development"
    # idempotent, and it tags an experiment that existed before (created by a trainer, untagged)
    assert mlflow_ui.mark_model_training(store) == exp_id
    store.client.delete_experiment_tag(exp_id, "mlflow.experimentKind")
    mlflow_ui.mark_model_training(store)
    assert experiment_tags(store)["mlflow.experimentKind"] == "custom_model_development"


def test_a_trainer_creates_its_experiment_as_model_training(store):
    """The store tags an experiment when it creates it (a run launched before any `genesis ui`)."""
    store.experiment_id("from-a-trainer")
    tags = store.client.get_experiment_by_name("from-a-trainer").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_runs_url_selects_the_model_training_view():
    url = mlflow_ui.runs_url("http://127.0.0.1:5000/", "7")
    assert url == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"


def test_ui_command_uses_the_store_and_one_worker(store):
    argv = mlflow_ui.ui_command(store, "127.0.0.1", 5001)
    assert argv[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert argv[argv.index("--backend-store-uri") + 1] == store.tracking_uri
    assert argv[argv.index("--default-artifact-root") + 1] == store.artifact_root
    assert argv[argv.index("--workers") + 1] == "1" and argv[argv.index("--port") + 1] == "5001"


def test_cli_ui_tags_the_experiment_and_prints_the_runs_url(store, monkeypatch, capsys):
    started = []

    class FakeServer:
        def __init__(self, argv, env):
            started.append(argv)

        def poll(self):
            return None

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeServer)
    monkeypatch.setattr(mlflow_ui, "wait_until_up", lambda base, process=None, timeout_s=0: True)
    assert cli.main(["ui", "--port", "5002"]) == 0
    exp_id = store.experiment_id()
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:5002/#/experiments/{exp_id}/runs?workflowType=machine_learning" in out
    assert experiment_tags(store)["mlflow.experimentKind"] == "custom_model_development"
    assert len(started) == 1 and "--backend-store-uri" in started[0]


def test_wait_until_up_gives_up_when_the_server_exits():
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert mlflow_ui.wait_until_up("http://127.0.0.1:9", done, timeout_s=5) is False
