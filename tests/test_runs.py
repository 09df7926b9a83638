"""genesis.runs (run queries, comparison, actions) and the Runs page, on a temporary MLflow store."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from genesis import runs, tracking
from genesis.errors import GenesisError

ROOT = Path(__file__).resolve().parents[1]
EXP = [tracking.DEFAULT_EXPERIMENT]
VAL = {"alpha": [0.9, 0.4, 0.6], "beta": [0.8, 0.7, 0.75], "gamma": [0.5]}  # best: 0.4, 0.7, 0.5


SPECS = [("alpha", "flow", "0.001", "FINISHED"), ("beta", "diffusion", "0.001", "FAILED"),
         ("gamma", "flow", "0.01", None), ("delta", "diffusion", "0.001", None)]


def _populate(store: tracking.Store) -> dict[str, str]:
    """Four runs, created oldest first: alpha (flow, FINISHED), beta (diffusion, FAILED),
    gamma (flow, RUNNING), delta (diffusion, RUNNING, no metrics)."""
    ids = {}
    for name, kind, lr, status in SPECS:
        run_id = store.create_run("genesis", name, {tracking.TAG_KIND: kind},
                                  {"kind": kind, "train.lr": lr, "data.path": "data/demo.h5"})
        for step, v in enumerate(VAL.get(name, [])):
            store.log_metrics(run_id, {"train/loss": 2.0 - step, "val/loss": v}, step)
        if name == "alpha":
            store.log_metrics(run_id, {"eval/auc": 0.61}, 3)
        if status:
            store.end_run(run_id, status)
        ids[name] = run_id
    return ids


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """An empty (migrated) and a populated store database, built once: creating the MLflow tables takes
    seconds, copying the file milliseconds."""
    home = tmp_path_factory.mktemp("runs-template")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENESIS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        store = tracking.Store.default()
        store.experiment_id(tracking.DEFAULT_EXPERIMENT)
        db = home / "mlruns" / "mlflow.db"
        empty = home / "empty.db"
        empty.write_bytes(db.read_bytes())
        ids = _populate(store)
        full = home / "populated.db"
        full.write_bytes(db.read_bytes())
    return empty, full, ids


def _home_with(db: Path, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(runs.UI_URL_ENV, raising=False)
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").write_bytes(db.read_bytes())
    return tmp_path


@pytest.fixture()
def home(templates, tmp_path, monkeypatch):
    """Project home with an empty store (tables and the genesis experiment exist)."""
    return _home_with(templates[0], tmp_path, monkeypatch)


@pytest.fixture()
def store():
    """The default store; request `home` or `populated` first (they point GENESIS_HOME at tmp_path)."""
    assert os.environ.get("GENESIS_HOME"), "request the home or populated fixture before store"
    return tracking.Store.default()


@pytest.fixture()
def populated(templates, tmp_path, monkeypatch):
    """Project home whose store holds the four SPECS runs (a fresh copy per test); returns name -> run id."""
    _home_with(templates[1], tmp_path, monkeypatch)
    return dict(templates[2])


def by_name(table):
    return table.set_index("name")


def test_runs_table_columns_last_and_best(populated, store):
    table, token = runs.runs_table(store, EXP)
    assert token is None
    assert list(table["name"]) == ["delta", "gamma", "beta", "alpha"]  # newest first
    assert list(table.columns[:5]) == ["name", "status", "kind", "start", "duration"]
    t = by_name(table)
    assert t.loc["alpha", "val/loss"] == pytest.approx(0.6)  # last logged
    assert t.loc["alpha", "best val/loss"] == pytest.approx(0.4)  # minimum of the history
    assert t.loc["beta", "best val/loss"] == pytest.approx(0.7)
    assert t.loc["gamma", "best val/loss"] == pytest.approx(0.5)
    assert np.isnan(t.loc["delta", "best val/loss"])
    assert t.loc["alpha", "eval/auc"] == pytest.approx(0.61) and np.isnan(t.loc["beta", "eval/auc"])
    assert t.loc["beta", "kind"] == "diffusion" and t.loc["beta", "status"] == "FAILED"
    assert (t["duration"] >= pd.Timedelta(0)).all()
    assert set(t["run_id"]) == set(populated.values())


@pytest.mark.parametrize("kwargs, expected", [
    (dict(status="RUNNING"), {"gamma", "delta"}),
    (dict(status="FINISHED"), {"alpha"}),
    (dict(name_contains="ALP"), {"alpha"}),  # case-insensitive substring
    (dict(name_contains="a"), {"alpha", "beta", "gamma", "delta"}),
    (dict(param_filter="params.kind = 'flow'"), {"alpha", "gamma"}),
    (dict(param_filter="params.`train.lr` = '0.01'"), {"gamma"}),
    (dict(status="RUNNING", param_filter="params.kind = 'diffusion'"), {"delta"}),
    (dict(name_contains="it's"), set()),  # a quote in the name is escaped, not an error
])
def test_runs_table_filters(populated, store, kwargs, expected):
    table, _ = runs.runs_table(store, EXP, **kwargs)
    assert set(table["name"]) == expected


def test_best_values_same_without_bulk_query(populated, store, monkeypatch):
    ids = [populated[n] for n in ("alpha", "beta", "gamma", "delta")]
    bulk = runs.best_values(store, ids)
    monkeypatch.setattr(runs, "_backend", lambda s: None)  # e.g. a remote mlflow server: one request per run
    loop = runs.best_values(store, ids)
    assert list(bulk.index) == ids
    np.testing.assert_allclose(bulk.to_numpy(), [0.4, 0.7, 0.5, np.nan])
    np.testing.assert_allclose(loop.to_numpy(), bulk.to_numpy())


def test_runs_table_pages_with_tokens(populated, store):
    seen, token, pages = [], None, 0
    while True:
        table, token = runs.runs_table(store, EXP, page_size=3, page_token=token)
        seen += list(table["name"])
        pages += 1
        if token is None:
            break
    assert pages == 2 and seen == ["delta", "gamma", "beta", "alpha"]
    table, token = runs.runs_table(store, EXP, page_size=4)
    assert len(table) == 4 and token is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(name_contains="a'b\"c"), "quotes"),
    (dict(name_contains="line\nbreak"), "control character"),
    (dict(param_filter="params.kind = 'flow' or params.kind = 'x'"), "not a valid MLflow filter"),
    (dict(param_filter="params.kind = 'flow"), "not a valid MLflow filter"),
    (dict(status="DONE"), "unknown run status"),
])
def test_bad_filters_raise_genesis_error(home, store, kwargs, message):
    with pytest.raises(GenesisError, match=message):
        runs.runs_table(store, EXP, **kwargs)


def test_build_filter_quotes_user_text():
    assert runs.build_filter("FAILED", "x", "params.kind = 'flow'") == (
        "attributes.status = 'FAILED' and attributes.run_name ILIKE '%x%' and params.kind = 'flow'")
    assert runs.build_filter(name_contains="it's") == "attributes.run_name ILIKE \"%it's%\""
    assert runs.build_filter() == ""


def test_differing_params_lists_only_differences(populated, store):
    frame = runs.selected_runs(store, [populated["alpha"], populated["gamma"]])
    diff = runs.differing_params(frame)
    assert sorted(diff.columns) == ["train.lr"]
    assert list(diff.index) == ["alpha", "gamma"] and list(diff["train.lr"]) == ["0.001", "0.01"]
    frame = runs.selected_runs(store, [populated["alpha"], populated["beta"]])
    assert sorted(runs.differing_params(frame).columns) == ["kind"]
    assert runs.differing_params(runs.selected_runs(store, [populated["alpha"]])).columns.empty
    numeric = runs.numeric_params_vs_metric(runs.selected_runs(store, list(populated.values())), "val/loss")
    assert list(numeric.columns) == ["train.lr", "val/loss"]  # 'kind' differs but is not numeric


def test_compare_curves_long_frame(populated, store):
    curves = runs.compare_curves(store, [populated["alpha"], populated["beta"]], "val/loss", x="step")
    assert list(curves.columns) == ["run", "run_id", "kind", "metric", "step", "value", "wall_time"]
    assert set(zip(curves["run"], curves["kind"])) == {("alpha", "flow"), ("beta", "diffusion")}
    alpha = curves[curves["run"] == "alpha"]
    assert list(alpha["step"]) == [0, 1, 2] and list(alpha["value"]) == pytest.approx(VAL["alpha"])
    assert (curves["wall_time"] >= 0).all() and (curves["wall_time"] < 600).all()
    by_time = runs.compare_curves(store, [populated["alpha"]], "val/loss", x="wall time")
    assert by_time["wall_time"].is_monotonic_increasing
    with pytest.raises(GenesisError, match="x axis"):
        runs.compare_curves(store, [populated["alpha"]], "val/loss", x="epoch")
    assert runs.metric_keys(runs.selected_runs(store, [populated["alpha"]])) == ["eval/auc", "train/loss", "val/loss"]


def test_rename_tag_delete(populated, store):
    runs.rename_run(store, populated["alpha"], "alpha-renamed")
    assert store.run(populated["alpha"]).info.run_name == "alpha-renamed"
    runs.tag_run(store, populated["beta"], "note", "lr too high")
    assert store.run(populated["beta"]).data.tags["note"] == "lr too high"
    for key in ("genesis.pid", "mlflow.runName", "bad key!"):
        with pytest.raises(GenesisError):
            runs.tag_run(store, populated["beta"], key, "x")
    with pytest.raises(GenesisError, match="empty"):
        runs.rename_run(store, populated["alpha"], "  ")
    with pytest.raises(GenesisError, match="stop it first"):
        runs.delete_runs(store, [populated["beta"], populated["gamma"]])
    assert len(runs.runs_table(store, EXP)[0]) == 4  # refused as a whole: beta is still there
    assert runs.delete_runs(store, [populated["beta"], populated["alpha"]]) == 2
    assert set(runs.runs_table(store, EXP)[0]["name"]) == {"gamma", "delta"}
    with pytest.raises(GenesisError, match="not found"):
        runs.rename_run(store, "0" * 32, "x")


def test_mlflow_ui_link(populated, store):
    assert runs.mlflow_ui_link("http://127.0.0.1:5000/", "3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    with pytest.raises(GenesisError, match="http"):
        runs.mlflow_ui_link("127.0.0.1:5000", "3", "abc")
    table, _ = runs.runs_table(store, EXP, ui_url="https://mlflow.lab")
    assert all(link.startswith("https://mlflow.lab/#/experiments/") and link.endswith(r)
               for link, r in zip(table["mlflow"], table["run_id"]))


# ------------------------------------------------------------------------------------------ the page


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / "runs.py"), default_timeout=60)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_page_empty_store(home):
    at = page().run()
    assert_clean(at)
    assert any("No runs yet" in i.value for i in at.info)
    assert not at.dataframe
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()  # through the navigation too
    at.switch_page("views/runs.py").run()
    assert_clean(at)
    assert [t.value for t in at.title] == ["Runs"] and any("No runs yet" in i.value for i in at.info)


def test_page_lists_compares_and_acts(populated, store, monkeypatch):
    monkeypatch.setenv(runs.UI_URL_ENV, "http://127.0.0.1:5000")
    at = page().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["name"]) == ["delta", "gamma", "beta", "alpha"]
    assert "best val/loss" in table.columns and "mlflow" in table.columns
    assert not at.get("plotly_chart")  # nothing selected yet

    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [2, 3], "columns": []}}  # beta, alpha
    at.run()
    assert_clean(at)
    assert any(s.value == "Compare 2 runs" for s in at.subheader)
    metric = next(s for s in at.selectbox if s.label == "Metric")
    assert metric.value == "val loss (per kind)"
    assert set(metric.options) == {"val loss (per kind)", "train loss (per kind)", "eval/auc"}
    charts = at.get("plotly_chart")
    assert len(charts) >= 1
    assert "/#/experiments/" in " ".join(m.value for m in at.markdown)
    diff = at.dataframe[1].value
    assert list(diff.columns) == ["kind"]

    next(t for t in at.text_input if t.label == "Tag key").set_value("reviewed")
    next(t for t in at.text_input if t.label == "Tag value").set_value("yes").run()
    at = next(b for b in at.button if b.label == "Add tag").click().run()
    assert_clean(at)
    assert store.run(populated["alpha"]).data.tags["reviewed"] == "yes"
    assert store.run(populated["beta"]).data.tags["reviewed"] == "yes"

    at.checkbox[0].check().run()
    at = next(b for b in at.button if b.label == "Delete").click().run()
    assert_clean(at)
    assert list(at.dataframe[0].value["name"]) == ["delta", "gamma"]


def test_page_refuses_deleting_running_and_filters(populated, store):
    at = page().run()
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [0], "columns": []}}  # delta, RUNNING
    at.run()
    at.checkbox[0].check().run()
    at = next(b for b in at.button if b.label == "Delete").click().run()
    assert_clean(at)
    assert any("stop it first" in e.value for e in at.error)
    assert store.run(populated["delta"]).info.lifecycle_stage == "active"

    at = page().run()
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [3], "columns": []}}  # alpha
    at.run()
    next(t for t in at.text_input if t.label == "New name").set_value("alpha-2")
    at = next(b for b in at.button if b.label == "Rename").click().run()
    assert_clean(at)
    assert store.run(populated["alpha"]).info.run_name == "alpha-2"
    assert "alpha-2" in list(at.dataframe[0].value["name"])

    at = page().run()
    next(s for s in at.selectbox if s.label == "Status").set_value("FINISHED").run()
    assert_clean(at)
    assert list(at.dataframe[0].value["name"]) == ["alpha-2"]
    next(t for t in at.text_input if t.label == "Filter").set_value("params.kind = 'oops").run()
    assert any("not a valid MLflow filter" in e.value for e in at.error)
    next(t for t in at.text_input if t.label == "Filter").set_value("params.kind = 'nothing'").run()
    assert_clean(at)
    assert any("No runs match" in i.value for i in at.info)


def test_page_pages_with_next_and_previous(populated, store):
    for i in range(8):
        store.create_run("genesis", f"extra{i}", {}, {})
    at = page().run()
    assert len(at.dataframe[0].value) == 12
    next(s for s in at.selectbox if s.label == "Rows per page").set_value(10).run()
    assert len(at.dataframe[0].value) == 10
    assert next(b for b in at.button if b.label == "Previous").disabled
    at = next(b for b in at.button if b.label == "Next").click().run()
    assert_clean(at)
    assert list(at.dataframe[0].value["name"]) == ["beta", "alpha"]  # the two oldest
    assert next(b for b in at.button if b.label == "Next").disabled
    at = next(b for b in at.button if b.label == "Previous").click().run()
    assert len(at.dataframe[0].value) == 10 and at.dataframe[0].value["name"].iloc[0] == "extra7"


def test_page_marks_dead_runs_failed(populated, store):
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.set_tags(populated["gamma"], {tracking.TAG_PID: str(dead.pid), tracking.TAG_HOST: socket.gethostname()})
    at = page().run()
    assert_clean(at)
    table = by_name(at.dataframe[0].value)
    assert table.loc["gamma", "status"] == "FAILED" and table.loc["delta", "status"] == "RUNNING"
    assert store.run(populated["gamma"]).data.tags[tracking.TAG_ERROR] == "process lost"


def test_package_module_does_not_import_streamlit():
    import ast

    tree = ast.parse((ROOT / "genesis" / "runs.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "streamlit" not in imported and "views" not in imported


def test_page_bad_ui_url_warns_and_still_lists(populated, monkeypatch):
    monkeypatch.setenv(runs.UI_URL_ENV, "mlflow.lab:5000")
    at = page().run()
    assert_clean(at)
    assert any("http://" in w.value for w in at.warning)
    assert len(at.dataframe[0].value) == 4 and "mlflow" not in at.dataframe[0].value.columns


# ------------------------------------------------------------------------------------------ honest comparisons


def _kind_runs(store: tracking.Store) -> dict[str, str]:
    """A diffusion run (train/loss, val/loss), a flow run (train/nll, val/nll: negative) and a flow run from
    before losses were named by kind (train/loss, val/loss: also negative). Params as each one logged them:
    the old ones every section, the new ones only their kind's."""
    specs = {
        "dit": ("diffusion", {"train/loss": [0.9, 0.5, 0.3], "val/loss": [0.6, 0.4]},
                {"kind": "diffusion", "model.hidden_size": "64", "diffusion.timesteps": "1000", "train.lr": "0.001"}),
        "flow": ("flow", {"train/nll": [-100.0, -3e4, -3.9e4], "val/nll": [-2e4, -3.8e4]},
                 {"kind": "flow", "flow.hidden_size": "32", "train.lr": "0.001"}),
        "old-flow": ("flow", {"train/loss": [-50.0, -2e4], "val/loss": [-1e4]},
                     {"kind": "flow", "flow.hidden_size": "64", "model.hidden_size": "128", "diffusion.timesteps": "50",
                      "train.lr": "0.001"}),
    }
    ids = {}
    for name, (kind, metrics, params) in specs.items():
        run_id = store.create_run("genesis", name, {tracking.TAG_KIND: kind}, params)
        for key, values in metrics.items():
            for step, v in enumerate(values):
                store.log_metrics(run_id, {key: v}, step * 10)
        store.end_run(run_id, "FINISHED")
        ids[name] = run_id
    return ids


def test_losses_compare_per_kind_in_separate_panels(home, store):
    from genesis import viz

    ids = _kind_runs(store)
    frame = runs.selected_runs(store, ids.values())
    assert runs.compare_options(frame)[:2] == ["val loss (per kind)", "train loss (per kind)"]
    assert not {"train/loss", "val/loss", "train/nll", "val/nll"} & set(runs.compare_options(frame))
    curves = runs.compare_curves(store, ids.values(), "val loss (per kind)")
    metric_of = curves.groupby("run")["metric"].unique().map(list).to_dict()
    assert metric_of == {"dit": ["val/loss"], "flow": ["val/nll"], "old-flow": ["val/loss"]}  # each run's own
    assert dict(curves.groupby("run")["kind"].first()) == {"dit": "diffusion", "flow": "flow", "old-flow": "flow"}

    fig = viz.loss_panels(curves, log_y=True)
    axis_of = {t.name.split(" · ")[0]: t.yaxis for t in fig.data}
    assert axis_of["flow"] == axis_of["old-flow"] != axis_of["dit"]  # never one axis across kinds
    layout = fig.layout
    diff_axis, flow_axis = (layout["yaxis" + axis_of[k][1:]] for k in ("dit", "flow"))
    assert diff_axis.type == "log" and "MSE" in diff_axis.title.text  # all positive: log as asked
    assert flow_axis.type == "linear"  # negative NLL: a log axis would draw nothing
    flow_y = np.concatenate([np.asarray(t.y) for t in fig.data if t.name.startswith("flow ·")])
    assert (flow_y < 0).all() and len(flow_y) == 2


def test_params_that_differ_compare_like_with_like(home, store):
    ids = _kind_runs(store)
    frame = runs.selected_runs(store, ids.values())
    diff = runs.differing_params(frame)
    # flow.hidden_size differs among the two flows; the old flow's model.*/diffusion.* never count
    assert sorted(diff.columns) == ["flow.hidden_size", "kind"]
    assert diff.loc["dit", "flow.hidden_size"] == runs.NOT_APPLICABLE
    assert list(diff.loc[["flow", "old-flow"], "flow.hidden_size"]) == ["32", "64"]
    one_kind = runs.selected_runs(store, [ids["flow"], ids["old-flow"]])
    assert runs.single_kind(one_kind) == "flow" and runs.single_kind(frame) is None
    assert list(runs.differing_params(one_kind).columns) == ["flow.hidden_size"]


def test_failure_reason_in_table_and_red_on_the_page(populated, store):
    failed = store.create_run("genesis", "broken", {tracking.TAG_KIND: "diffusion"}, {"kind": "diffusion"})
    store.end_run(failed, "FAILED", "DataError: data/tiny.h5: the 'val' split is empty")
    table = by_name(runs.runs_table(store, EXP)[0])
    assert table.loc["broken", "reason"] == "DataError: data/tiny.h5: the 'val' split is empty"
    assert table.loc["beta", "reason"] == "no reason recorded" and pd.isna(table.loc["alpha", "reason"])
    at = page().run()
    assert_clean(at)
    # the newest run failed: its reason shows in red without selecting anything
    assert any("broken" in e.value and "split is empty" in e.value for e in at.error)
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [3], "columns": []}}  # beta (FAILED)
    at.run()
    assert any("beta" in e.value and "no reason recorded" in e.value for e in at.error)


def _walk(block):
    for child in getattr(block, "children", {}).values():
        yield child
        yield from _walk(child)


def test_page_paging_buttons_sit_below_the_table(populated):
    at = page().run()
    order = [getattr(e, "type", "") + ":" + str(getattr(e, "label", "")) for e in _walk(at.main)]
    table = next((i for i, e in enumerate(order) if e.startswith(("arrow_data_frame", "dataframe"))), order)
    nxt = next(i for i, e in enumerate(order) if e == "button:Next")
    assert nxt > table  # above the table, its hover toolbar covered the Next button


def test_trained_runs_log_their_kinds_losses_and_params(trained_home):
    store = tracking.Store.default()
    flow, dit = store.run(trained_home.flow_run), store.run(trained_home.diffusion_run)
    # these 4-step runs end before the first train log (log_every 5): the validation at their end names the
    # kind's loss (train/nll in MLflow is checked by test_live_view.test_real_flow_log_matches_mlflow)
    assert {"val/nll", "val/bits_per_dim"} <= set(flow.data.metrics)
    assert not {"train/loss", "val/loss"} & set(flow.data.metrics)
    assert "val/loss" in dit.data.metrics and not {"train/nll", "val/nll"} & set(dit.data.metrics)
    assert not [k for k in flow.data.params if k.startswith(("model.", "diffusion."))]
    assert [k for k in flow.data.params if k.startswith("flow.")]
    assert not [k for k in dit.data.params if k.startswith("flow.")]
    assert [k for k in dit.data.params if k.startswith("model.")] and [k for k in dit.data.params if k.startswith("diffusion.")]
    val = runs.val_loss_histories(store, [trained_home.flow_run, trained_home.diffusion_run])
    assert set(zip(val["run_id"], val["key"])) == {(trained_home.flow_run, "val/nll"), (trained_home.diffusion_run, "val/loss")}


def test_compare_view_starts_on_a_metric_every_run_has_and_names_the_runs_without_it(home, store):
    ids = _kind_runs(store)
    eval_run = store.create_run("genesis", "dit-eval", {tracking.TAG_KIND: "diffusion"}, {"kind": "diffusion"})
    store.log_metrics(eval_run, {"eval/auc": 0.8, "train/loss": 0.5}, 0)  # no val loss yet
    store.end_run(eval_run, "FINISHED")
    frame = runs.selected_runs(store, [*ids.values(), eval_run])
    options = runs.compare_options(frame)
    assert runs.runs_without(frame, "val loss (per kind)") == ["dit-eval"]
    assert runs.runs_without(frame, "eval/auc") == ["dit", "flow", "old-flow"]
    assert options[runs.shared_option(frame, options)] == "train loss (per kind)"  # the first one all four have
    only_dit = runs.selected_runs(store, [ids["dit"]])
    assert runs.shared_option(only_dit, runs.compare_options(only_dit)) == 0
