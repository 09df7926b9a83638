"""Progressive distillation: nested step grids, the two-teacher-step target against the real DDIM sampler,
the loss, and a real distillation run (launcher subprocess, MLflow store, checkpoint record, inspect, Runs)."""

import copy

import numpy as np
import pytest
import torch

from conftest import ROOT, run_to_end, tiny_cfg
from genesis import checkpoint, config, diffusion, distill, inspect, launcher, runs, sampling, tracking
from genesis.data.normalization import Normalization
from genesis.errors import ConfigError
from genesis.models.dit import PMTDiT
from genesis.train import train

P = 120  # two strings of 60 DOMs: a tiny detector for the unit tests


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: a second thread only waits on the other (tens of times slower on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def process():
    return diffusion.GaussianDiffusion(config.DiffusionConfig(objective="v"))


@pytest.fixture(scope="module")
def teacher():
    """A tiny PMTDiT with random (not zero-initialised) weights, so its outputs depend on x, t and labels."""
    torch.manual_seed(0)
    cfg = config.DiTConfig(hidden_size=32, depth=1, num_heads=4, time_embed_dim=32)
    model = PMTDiT(cfg, P, Normalization())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def batch(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 2, P, generator=g) * 2 - 1
    return x0, torch.rand(n, 6, generator=g), torch.rand(3, P, generator=g) * 2 - 1


@pytest.mark.parametrize("spacing, steps", [("trailing", [(64, 32), (32, 16), (16, 8), (8, 4)]),
                                            ("linspace", [(49, 25), (25, 13), (13, 7), (7, 4)])])
def test_schedule_halves_on_nested_grids_that_end_on_the_samplers(process, spacing, steps):
    rounds = distill.schedule(process, 4, 64, spacing)
    assert [(r.teacher_steps, r.student_steps) for r in rounds] == steps
    assert list(rounds[-1].student_grid) == diffusion.timesteps(process, 4, spacing) + [-1]
    for r in rounds:
        assert set(r.student_grid) <= set(r.teacher_grid)
        assert list(r.teacher_grid) == distill.refine(list(r.student_grid))
    for a, b in zip(rounds, rounds[1:]):
        assert a.student_grid == b.teacher_grid  # each round's teacher is the previous round's student
    assert distill.number_of_rounds(2, 64) == 5 and distill.number_of_rounds(4, 8) == 1


def test_target_steps_reproduce_the_teachers_ddim_sampler(process, teacher):
    """Student grid of 2 DDIM steps [999, 0, -1]; the teacher's is DDIM-3's [999, 500, 0, -1]. Two teacher steps
    per interval, turned into x0 targets and taken as one DDIM step each, land on ddim_sample(teacher, steps=3)."""
    (rnd,) = distill.schedule(process, 2, 3, spacing="linspace")
    assert list(rnd.teacher_grid) == diffusion.timesteps(process, 3, "linspace") + [-1]
    _, labels, geo = batch()
    z = torch.randn(3, 2, P, generator=torch.Generator().manual_seed(5))
    clip = (torch.full((1, 2, 1), -1.2), torch.full((1, 2, 1), 1.5))
    steps = distill.TeacherSteps(process, teacher, clip=clip)
    t_k, m_k, s_k = distill.round_intervals(rnd, torch.device("cpu"))
    for k in range(2):
        t, m, s = (v[k].expand(3) for v in (t_k, m_k, s_k))
        z_s = steps.two_steps(z, t, m, s, labels, geo)
        x0 = distill.x0_target(process, z, t, z_s, s)
        eps = process.eps_from_x0(z, t, x0)
        assert torch.allclose(distill.ddim_step(process, x0, eps, s), z_s, atol=1e-5)  # one step with the target
        z = z_s
    ref = diffusion.ddim_sample(process, teacher, labels, geo, steps=3, noise=torch.randn(
        3, 2, P, generator=torch.Generator().manual_seed(5)), clip_x0=clip)
    assert torch.allclose(z, ref, atol=1e-5)


def test_loss_of_a_student_equal_to_the_teacher_is_the_one_vs_two_step_mismatch(process, teacher):
    """One round from 2 to 1 step (trailing grid [999, -1] <- [999, 499, -1]): with student = teacher, the loss
    is max(SNR, 1) times the mean squared difference of DDIM-1 and DDIM-2 run from the same x_t."""
    (rnd,) = distill.schedule(process, 1, 2, spacing="trailing")
    assert list(rnd.teacher_grid) == diffusion.timesteps(process, 2, "trailing") + [-1]
    x0, labels, geo = batch()
    steps = distill.TeacherSteps(process, teacher)
    loss = distill.distillation_loss(process, teacher, steps, rnd, x0, labels, geo, torch.Generator().manual_seed(7),
                                     interval=torch.zeros(3, dtype=torch.long))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    t = torch.full((3,), 999)
    z_t = process.q_sample(x0, t, noise)
    one = diffusion.ddim_sample(process, teacher, labels, geo, steps=1, noise=z_t)
    two = diffusion.ddim_sample(process, teacher, labels, geo, steps=2, spacing="trailing", noise=z_t)
    a = process.alpha_bar(t, x0)
    expected = ((a / (1 - a)).clamp(min=1) * (one - two) ** 2).mean()
    assert float(loss.detach()) > 0 and torch.allclose(loss.detach(), expected, rtol=1e-4)
    # the last interval of a linspace grid (0 -> clean data) cannot be split: its target is the teacher's own x0
    (rnd,) = distill.schedule(process, 2, 4, spacing="linspace")
    last = torch.ones(3, dtype=torch.long)
    loss = distill.distillation_loss(process, teacher, steps, rnd, x0, labels, geo, interval=last)
    assert float(loss.detach()) < 1e-10


def test_distillation_loss_decreases(process, teacher):
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    (rnd,) = distill.schedule(process, 2, 4)
    steps = distill.TeacherSteps(process, teacher)
    x0, labels, geo = batch(8)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        gen = torch.Generator().manual_seed(3)
        loss = distill.distillation_loss(process, student, steps, rnd, x0, labels, geo, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_solver_round_nests_sub_grids_denser_towards_each_interval_end(process):
    assert distill.sub_grid(249, -1, 4) == [249, 140, 62, 15, -1]
    assert distill.sub_grid(999, 749, 4) == [999, 890, 812, 765, 749]
    assert distill.sub_grid(3, 2, 4) == [3, 2]  # an interval of one index: one teacher step
    rnd = distill.solver_round(process, 4, 4)
    assert list(rnd.student_grid) == distill.final_grid(process, 4)
    assert set(rnd.student_grid) <= set(rnd.teacher_grid) and rnd.teacher_steps == 16
    assert list(rnd.teacher_grid) == sorted(rnd.teacher_grid, reverse=True)
    assert distill.rounds_of(config.DistillConfig(teacher_sampler="unipc", student_steps=4, start_steps=64)) == 1
    assert distill.rounds_of(config.DistillConfig(student_steps=4, start_steps=64)) == 4


def test_solver_teacher_reproduces_the_unipc_sampler(process, teacher):
    """A 1-step student ([999, -1]) with 5 teacher substeps: sub_grid(999, -1, 5) is the sampler's quadratic grid,
    so the teacher's z_s from x_999 is unipc_sample's event from the same noise; a batch that mixes intervals gets
    for each example what a batch of that interval alone gets."""
    rnd = distill.solver_round(process, 1, 5)
    assert list(rnd.teacher_grid) == diffusion.timesteps(process, 5, "quadratic") + [-1]
    _, labels, geo = batch()
    z = torch.randn(3, 2, P, generator=torch.Generator().manual_seed(5))
    clip = (torch.full((1, 2, 1), -1.2), torch.full((1, 2, 1), 1.5))
    solver = distill.TeacherSolver(process, teacher, clip=clip)
    z_s = solver.z_s(z, torch.zeros(3, dtype=torch.long), rnd, labels, geo)
    ref = diffusion.unipc_sample(process, teacher, labels, geo, steps=5, spacing="quadratic", noise=z, clip_x0=clip)
    assert torch.allclose(z_s, ref, atol=1e-5)

    rnd = distill.solver_round(process, 3, 3)
    mixed = solver.z_s(z, torch.tensor([2, 0, 2]), rnd, labels, geo)
    for k in (0, 2):
        alone = solver.z_s(z, torch.full((3,), k), rnd, labels, geo)
        rows = [1] if k == 0 else [0, 2]
        assert torch.allclose(mixed[rows], alone[rows], atol=1e-6)
    assert not torch.allclose(mixed[1], solver.z_s(z, torch.full((3,), 2), rnd, labels, geo)[1])


def test_config_refuses_flows_and_a_start_below_the_student():
    with pytest.raises(ConfigError, match="only diffusion"):
        config.load(None, ["kind=flow", "distill.teacher=x.pt"])
    with pytest.raises(ConfigError, match="must exceed"):
        config.load(None, ["distill.teacher=x.pt", "distill.student_steps=8", "distill.start_steps=8"])
    with pytest.raises(ConfigError, match="unknown config key"):
        config.load(None, ["distill.rounds=3"])
    # a solver teacher has one round: start_steps does not apply
    cfg = config.load(None, ["distill.teacher=x.pt", "distill.teacher_sampler=unipc", "distill.student_steps=8",
                             "distill.start_steps=8"])
    assert cfg.distill.teacher_sampler == "unipc"


def test_eps_teacher_is_refused(tmp_path, geometry):
    cfg = config.load(None, ["diffusion.objective=eps", "model.hidden_size=32", "model.depth=1"])
    model = checkpoint.build_model(cfg, geometry.n_doms, cfg.data.normalization)
    state = checkpoint.make_state(cfg, model, None, geometry, 0, 0, float("inf"))
    teacher = checkpoint.save(state, tmp_path / "eps.pt")
    with pytest.raises(ConfigError, match="v-objective teacher"):
        distill.student_config(config.load(None, [f"distill.teacher={teacher}"]))


def test_distillation_run_through_the_launcher(home):
    """A tiny teacher (3 steps), distilled for 2 rounds of 2 steps by a launched trainer subprocess."""
    teacher = train(tiny_cfg(home, "train.max_steps=3"))
    teacher_path = f"{teacher['checkpoint_dir']}/last.pt"
    cfg = config.load(ROOT / "configs" / "distill_tiny.yaml", [
        f"data.path={home}/data/demo.h5", f"distill.teacher={teacher_path}", "distill.start_steps=16",
        "distill.steps_per_round=2", "train.batch_size=8", "train.log_every=1", "train.device=cpu"])
    store = tracking.Store.default()
    run_id = launcher.launch(cfg, store=store)
    run = run_to_end(store, run_id, timeout_s=300)
    assert run.info.status == "FINISHED", launcher.log_tail(store, run_id)
    tags, params = run.data.tags, run.data.params
    assert tags[distill.TAG_TEACHER_RUN] == teacher["run_id"] and tags[distill.TAG_TEACHER_PATH] == teacher_path
    assert params["distill.teacher"] == teacher_path and params["diffusion.sampling_steps"] == "4"
    assert params["model.hidden_size"] == "32"  # the teacher's architecture, not the preset's
    rounds = store.metric_history(run_id, "train/round")
    assert list(rounds["value"]) == [1, 1, 2, 2]
    assert list(store.metric_history(run_id, "train/student_steps")["value"]) == [8, 8, 4, 4]  # trailing grids
    assert {"train/loss", "val/loss"} <= set(run.data.metrics)

    path = store.artifact_dir(run_id) / "checkpoints" / "last.pt"
    state = checkpoint.load_state(path)
    record = state["distillation"]
    assert (record["teacher_path"], record["teacher_run_id"], record["teacher_step"], record["student_steps"]) == (
        teacher_path, teacher["run_id"], 3, 4)
    assert state["config"]["diffusion"]["sampling_steps"] == 4 and state["config"]["diffusion"]["sampler"] == "ddim"
    assert state["config"]["diffusion"]["spacing"] == record["spacing"] == "trailing"
    teacher_state = checkpoint.load_state(teacher_path)
    assert state["config"]["model"] == teacher_state["config"]["model"]
    assert state["normalization"] == teacher_state["normalization"]
    assert (store.artifact_dir(run_id) / "checkpoints" / "best.pt").is_file()

    loaded = checkpoint.load_model(path)
    assert loaded.distillation == record
    labels = sampling.labels_from_args(None, 2, 1e5, 1.0, 1.0, 0.0, 0.0, 0.0)
    events = sampling.generate(loaded, labels, steps=loaded.config.diffusion.sampling_steps, batch_size=2)
    assert events.shape == (2, 2, 5160) and torch.isfinite(torch.from_numpy(events)).all()
    # the student samples on its own grid unless told otherwise; another sampler keeps that sampler's default
    assert sampling.producer_info(loaded, "ddim", 4, 1.0, 0)["spacing"] == "trailing"
    assert sampling.producer_info(loaded, "ddim", 4, 1.0, 0, spacing="linspace")["spacing"] == "linspace"
    assert np.array_equal(events, sampling.generate(loaded, labels, steps=4, batch_size=2, spacing="trailing"))
    assert not np.array_equal(events, sampling.generate(loaded, labels, steps=4, batch_size=2, spacing="linspace"))

    text = inspect.render_text(inspect.inspect_checkpoint(path))
    assert "Distillation" in text and teacher["run_id"] in text and "student_steps" in text
    assert runs.teacher_runs(store, [run_id]) == [teacher["run_id"]]
    assert runs.teacher_runs(store, [run_id, teacher["run_id"]]) == []


def test_solver_distillation_run_is_one_round_on_the_final_grid(home):
    """A real run with teacher_sampler unipc: one round of steps_per_round steps whose student is the final
    4-step student; the checkpoint records the solver teacher and samples with DDIM on its grid."""
    teacher = train(tiny_cfg(home, "train.max_steps=2"))
    cfg = config.load(ROOT / "configs" / "distill_tiny.yaml", [
        f"data.path={home}/data/demo.h5", f"distill.teacher={teacher['checkpoint_dir']}/last.pt",
        "distill.teacher_sampler=unipc", "distill.teacher_substeps=2", "distill.steps_per_round=3",
        "distill.spacing=quadratic", "train.batch_size=4", "train.log_every=1", "train.device=cpu"])
    result = train(distill.student_config(cfg))
    assert result["step"] == 3
    store = tracking.Store.default()
    assert list(store.metric_history(result["run_id"], "train/student_steps")["value"]) == [4, 4, 4]
    state = checkpoint.load_state(f"{result['checkpoint_dir']}/last.pt")
    record = state["distillation"]
    assert (record["teacher_sampler"], record["rounds"], record["teacher_steps"], record["student_steps"]) == (
        "unipc", 1, 8, 4)
    assert record["grid"] == [999, 561, 249, 61, -1]
    assert state["config"]["diffusion"]["spacing"] == "quadratic" and state["config"]["diffusion"]["sampler"] == "ddim"
    # the student learns the cleaned events its teacher learned and carries its own noise model (genesis.noise)
    assert state["config"]["data"]["noise_radius_m"] == 150.0 and state["data"]["noise"]["rate"] > 0


def test_train_page_distills_a_checkpoint(home):
    """'Distill a checkpoint' on the Train page: distill presets only, the shipped demo among the teachers; Distill
    launches a run that carries the teacher (stopped at once: the launcher test above runs one to the end)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "views" / "train.py"), default_timeout=300).run()
    at.radio[0].set_value("distill").run()
    assert not at.exception, [e.value for e in at.exception]
    preset = next(w for w in at.selectbox if w.label == "Preset")
    assert all("distill" in str(p) for p in preset.options) and len(preset.options) == 2
    teacher = next(w for w in at.selectbox if w.label == "Teacher checkpoint")
    assert any("demo-diffusion.pt" in str(o) for o in teacher.options)
    next(w for w in at.number_input if w.label == "Training steps per round").set_value(1)
    next(b for b in at.button if b.label == "Distill").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run_id = at.session_state["launched"]
    store = tracking.Store.default()
    try:
        run = store.run(run_id)
        assert run.data.tags[distill.TAG_TEACHER_PATH].endswith("demo-diffusion.pt")
        assert run.data.params["distill.steps_per_round"] == "1" and run.data.params["diffusion.sampling_steps"] == "4"
    finally:
        launcher.stop(run_id, timeout=60, store=store)
