"""Learning checks. The first is fast and runs in CI; the ones marked slow take minutes (pytest -m slow)."""

import numpy as np
import pytest

from mlsh import sb3_adapter
from mlsh.learners import build_ppo, make_task_env
from mlsh.master import MasterPolicy
from mlsh.selection import SubPolicySelectionVecEnv
from tests.helpers import GoalSeekingPolicy


@pytest.mark.parametrize("task", [0, 1])
def test_fresh_master_learns_to_pick_the_subpolicy_that_solves_the_task(compose, task):
    """With two scripted sub-policies (walk to goal 0, walk to goal 1) a fresh master must commit to the right
    one within a few updates: the master level of MLSH, end to end through SB3's collect and train."""
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(task)  # torch (master sampling) and numpy (SB3's minibatch shuffling): independent of test order
    cfg = compose("seed=0")
    venv = make_task_env(cfg, seed=task, n_groups=1)
    env = SubPolicySelectionVecEnv(venv, [GoalSeekingPolicy(0), GoalSeekingPolicy(1)], cfg.macro_duration)
    env.set_options({"task": task})
    first_obs = env.reset()
    macro_steps = cfg.schedule.rollout_steps // cfg.schedule.n_envs // cfg.macro_duration
    master = build_ppo(cfg.algo.master, env, macro_steps, policy=MasterPolicy,
                       policy_kwargs={"random_pick_prob": cfg.algo.master.random_pick_prob})
    sb3_adapter.begin_collection(master, first_obs)
    returns, shares = [], []
    for _ in range(8):
        env.choice_counts[:] = 0
        sb3_adapter.collect(master, macro_steps)
        returns.append(np.mean(venv.pop()))
        counts = env.choice_counts.sum(axis=0)
        shares.append(counts[task] / counts.sum())
        sb3_adapter.train(master)
    assert returns[0] < 33  # an uncommitted master: about halfway between one goal (~23) and the oracle (~44)
    assert returns[-1] > 38, returns
    assert shares[-1] > 0.9, shares  # 95% minus what the 10% random picks take away


@pytest.mark.slow
def test_mlsh_meta_training_splits_the_subpolicies_one_per_goal(compose, tmp_path):
    """Meta-train MLSH on MovementBandits (seed 0, at most 15 minutes), then the transfer protocol on held-out
    tasks: a fresh master over the frozen sub-policies must reach 85% of the oracle within 10 updates."""
    from mlsh.checkpoint import latest
    from mlsh.evaluate import transfer
    from mlsh.train import meta_train

    cfg = compose("seed=0", "logger.mode=disabled", "schedule.max_minutes=15", "schedule.target_return=37")
    summary = meta_train(cfg, tmp_path, progress=False)
    result = transfer(cfg, latest(tmp_path), n_tasks=10, n_updates=10, seed=0)
    assert summary["tasks_done"] > 20
    assert max(result["mean_return"]) >= 0.85 * 43.8, result["mean_return"]
