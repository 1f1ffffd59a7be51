"""Option-critic (issue 13): its gradients against hand-computed values, option durations against termination
probabilities, a smoke run, checkpoints, resume, determinism, config errors, transfer and a short learning check."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch as th

from mlsh.config import ConfigError, validate
from mlsh.learners import make_learner, make_task_env
from mlsh.option_critic import OptionCriticLearner, policy_loss, targets, termination_loss
from mlsh.runlog import read_metrics
from mlsh.train import meta_train, setup_torch
from tests.conftest import ROOT

OC = ("env=four_rooms", "algo=option_critic", "schedule=smoke", "schedule.warmup_iters=2", "schedule.joint_iters=2",
      "logger.mode=disabled", "progress_bar=false", "media.maps_every=0", "media.video=false")
TIMING = ("steps_per_second", "time_minutes")


def rows(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def test_target_is_the_option_value_upon_arrival():
    """g = r + gamma (1 - terminated) [(1 - beta) Q'(s', w) + beta max Q'(s')]."""
    q_next = th.tensor([[2.0, 4.0], [2.0, 4.0]])
    g = targets(th.tensor([1.0, 1.0]), th.tensor([0.0, 1.0]), th.tensor([0.25, 0.25]), q_next,
                th.tensor([0, 0]), gamma=0.9)
    assert g.tolist() == pytest.approx([1 + 0.9 * (0.75 * 2 + 0.25 * 4), 1.0])


def test_intra_option_policy_gradient_matches_the_hand_computed_one():
    """logits z = (ln 3, 0): pi = (3/4, 1/4); action 0, advantage 2, entropy weight 0.1.
    d/dz_j [-log pi_a A - e H] = -A (1[j = a] - pi_j) + e pi_j (log pi_j + H)."""
    z = th.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    loss, entropy = policy_loss(z, th.tensor([0]), th.tensor([2.0]), entropy_reg=0.1)
    loss.backward()
    p = np.array([0.75, 0.25])
    h = -(p * np.log(p)).sum()
    expected = -2.0 * (np.array([1.0, 0.0]) - p) + 0.1 * p * (np.log(p) + h)
    assert z.grad[0].numpy() == pytest.approx(expected, abs=1e-6)
    assert float(entropy) == pytest.approx(h)
    assert float(loss.detach()) == pytest.approx(-math.log(0.75) * 2.0 - 0.1 * h)


def test_policy_gradient_skips_the_envs_of_groups_in_warmup():
    z = th.zeros(2, 3, requires_grad=True)
    loss, _ = policy_loss(z, th.tensor([0, 1]), th.tensor([1.0, 5.0]), 0.0, weight=th.tensor([1.0, 0.0]))
    loss.backward()
    assert z.grad[1].abs().sum() == 0 and z.grad[0].abs().sum() > 0


def test_termination_gradient_matches_the_hand_computed_one():
    """beta = sigmoid(u) = 1/2 for both; Q(s') = (1, 3), margin 0.01. Option 0 (advantage -2): d loss / du =
    beta (1 - beta) (A + xi) = -0.4975, so descent raises its termination; option 1 (the best, A = 0): +0.0025,
    descent lowers it; after a terminal state no gradient."""
    u = th.zeros(3, requires_grad=True)
    beta = th.sigmoid(u)
    q_next = th.tensor([[1.0, 3.0]] * 3)
    loss = termination_loss(beta, q_next, th.tensor([0, 1, 0]), th.tensor([0.0, 0.0, 1.0]), margin=0.01)
    loss.backward()
    assert (u.grad * 3).tolist() == pytest.approx([0.25 * (-2 + 0.01), 0.25 * 0.01, 0.0])


def test_a_net_without_hidden_layers_is_a_zero_table():
    from mlsh.option_critic import mlp

    net = mlp(5, [], 3)
    assert len(net) == 1 and net[0].bias is None and not net[0].weight.any()
    x = th.eye(5)
    with th.no_grad():
        net[0].weight[:, 2] = th.tensor([1.0, 2.0, 3.0])
    assert net(x)[2].tolist() == [1.0, 2.0, 3.0] and not net(x)[[0, 1, 3, 4]].any()


def _learner(compose, *overrides):
    cfg = compose(*OC, *overrides)
    validate(cfg)
    setup_torch(cfg)
    venv = make_task_env(cfg, seed=0)
    learner = make_learner(cfg, venv)
    assert isinstance(learner, OptionCriticLearner)
    return cfg, venv, learner


def test_option_durations_follow_the_termination_probabilities(compose):
    """Terminations fixed at beta = 0.2 everywhere (every cell's entry of the table logit(0.2), a learning rate too
    small to move them): options last 1 / 0.2 = 5 steps on average (a geometric law, cut only by episode ends)."""
    cfg, venv, learner = _learner(compose, "algo.termination_lr=1e-12", "schedule.rollout_steps=2000")
    learner.start_task(103)
    part = learner.parts[0]
    with th.no_grad():
        part.terminations[-1].weight.fill_(math.log(0.2 / 0.8))  # one-hot cells: u(s) = weight[:, s]
    durations, terminations = [], []
    for _ in range(3):
        shared, _ = learner.iterate(joint=True)
        durations += [shared[f"option{w}/duration"] for w in range(4) if not math.isnan(shared[f"option{w}/duration"])]
        terminations += [shared[f"option{w}/termination"] for w in range(4)
                         if not math.isnan(shared[f"option{w}/termination"])]
        assert sum(shared[f"option{w}/share"] for w in range(4)) == pytest.approx(1.0)
    assert np.mean(terminations) == pytest.approx(0.2, abs=1e-4)
    assert np.mean(durations) == pytest.approx(5.0, rel=0.12)
    venv.close()


def test_warmup_keeps_the_intra_option_policies_and_trains_the_task_part(compose):
    cfg, venv, learner = _learner(compose)
    learner.start_task(103)
    before = {k: v.clone() for k, v in learner.options.state_dict().items()}
    crit = {k: v.clone() for k, v in learner.parts[0].terminations.state_dict().items()}
    shared, per_group = learner.iterate(joint=False)
    assert all(th.equal(before[k], v) for k, v in learner.options.state_dict().items())
    assert not all(th.equal(crit[k], v) for k, v in learner.parts[0].terminations.state_dict().items())
    assert shared["options/trained"] == 0.0 and per_group[0]["master/epsilon"] < 1.0
    learner.iterate(joint=True)
    assert not all(th.equal(before[k], v) for k, v in learner.options.state_dict().items())
    venv.close()


def test_smoke_run_writes_option_diagnostics_and_checkpoints(tmp_path):
    proc = subprocess.run([sys.executable, "run.py", *OC, f"hydra.run.dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(tmp_path)
    it = [r for r in metrics if "option0/share" in r]
    assert len(it) == 8  # 2 tasks of 2 + 2 iterations
    for key in ("option0/duration", "option3/termination", "master/critic_loss", "options/entropy"):
        assert key in it[-1]
    assert [r["phase_joint"] for r in it] == [0, 0, 1, 1] * 2
    assert sum(r["task/warmup_return"] is not None for r in metrics if "task/index" in r) == 2
    last = sorted((tmp_path / "checkpoints").glob("task_*"))[-1]
    assert {"options.pt", "task_part_g0.pt", "resume.pkl"} <= {f.name for f in last.iterdir()}


def test_same_seed_same_run_and_resume_is_exact(compose, tmp_path, monkeypatch):
    cfg = compose(*OC, "schedule.n_tasks=3")
    meta_train(cfg, tmp_path / "a", progress=False)
    meta_train(cfg, tmp_path / "b", progress=False)
    assert rows(tmp_path / "a") == rows(tmp_path / "b") and len(rows(tmp_path / "a")) == 15
    calls = {"n": 0}
    real = OptionCriticLearner.iterate

    def dies_in_the_second_task(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # the third iteration of the second task: its critic, replay and options are live
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(OptionCriticLearner, "iterate", dies_in_the_second_task)
    with pytest.raises(KeyboardInterrupt):
        meta_train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(OptionCriticLearner, "iterate", real)
    meta_train(cfg, tmp_path / "cut", progress=False, resume=True)
    assert rows(tmp_path / "cut") == rows(tmp_path / "a")


def test_checkpoint_round_trip_and_transfer(compose, tmp_path):
    from mlsh.evaluate import evaluate_run

    cfg = compose(*OC, f"hydra.run.dir={tmp_path}")
    meta_train(cfg, tmp_path, progress=False)
    (tmp_path / ".hydra").mkdir(exist_ok=True)
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    last = sorted((tmp_path / "checkpoints").glob("task_*"))[-1]
    _, venv, learner = _learner(compose)
    learner.load(last)
    saved = th.load(last / "options.pt", weights_only=True)["net"]
    assert all(th.equal(saved[k], v) for k, v in learner.options.net.state_dict().items())
    learner.start_task(103)
    learner.load_masters(last, [0])
    part = th.load(last / "task_part_g0.pt", weights_only=True)
    assert all(th.equal(part["critic"][k], v) for k, v in learner.parts[0].critic.state_dict().items())
    venv.close()
    result = evaluate_run(tmp_path, n_tasks=2, n_updates=2)
    assert result["algo"] == "option_critic" and len(result["mean_return"]) == 3
    assert json.loads((tmp_path / "eval.json").read_text())["n_tasks"] == 2
    # held-out settings changed from the run's, kept beside the default evaluation
    other = evaluate_run(tmp_path, n_tasks=2, n_updates=2, overrides=["algo.target_every=1"], name="eval_t1")
    assert other["overrides"] == ["algo.target_every=1"]
    assert other["mean_return"] != result["mean_return"]  # the target copied every critic update: another run
    assert json.loads((tmp_path / "eval_t1.json").read_text())["mean_return"] == other["mean_return"]
    assert (tmp_path / "eval_t1.png").exists()
    assert json.loads((tmp_path / "eval.json").read_text())["mean_return"] == result["mean_return"]  # untouched
    for bad, message in [("seed=3", "give algo.<key>=<value>"), ("algo.name=scratch", "give algo.<key>=<value>"),
                         ("algo.nope=1", "the run's config has no algo.nope"),
                         ("algo.target_every=0", "algo.target_every must be an integer >= 1")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            evaluate_run(tmp_path, n_tasks=1, n_updates=0, overrides=[bad], name="bad")
    assert not (tmp_path / "bad.json").exists()
    (last / "options.pt").write_bytes(b"not a checkpoint")
    _, venv, learner = _learner(compose)
    with pytest.raises(ValueError, match="options.pt is corrupt"):
        learner.load(last)
    venv.close()


@pytest.mark.parametrize("override, message", [
    (("env=ant_two_walk", "macro_duration=1"), "needs discrete actions"),
    (("algo.policy_lr=0",), "algo.policy_lr must be a number in"),
    (("algo.optimizer=lbfgs",), "algo.optimizer must be one of"),
    (("algo.epsilon.end=1.5",), "algo.epsilon.end must be a number in"),
    (("algo.batch_size=20000",), "must be <= algo.replay_size"),
    (("algo.critic_net_arch=[0]",), "algo.critic_net_arch must be a list"),
])
def test_config_errors_name_the_value(compose, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(*OC, *override))


@pytest.mark.slow
def test_option_critic_learns_four_rooms_with_a_fixed_goal():
    """The benchmark's run for seed 0 from the fixed start (300k steps, about 1.5 minutes): the learned options
    reach goal 103 within 1.5x of the optimal expected steps and greedy play reaches it in at least 90% of
    episodes (the issue's targets)."""
    from mlsh.benchmarks.option_critic_fourrooms import run_seed

    res = run_seed(0, 103, "fixed", 300_000, 200, [])
    assert res["greedy"]["success"] >= 0.9, res
    assert res["learned"]["ratio"] <= 1.5, res
