import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.movement_bandits import MovementBanditsEnv
from mlsh.selection import SubPolicySelectionVecEnv
from tests.helpers import ConstantPolicy, CountEnv


def wrapper(n_envs=2, limit=20, n=10, gamma=0.5, values=(0.5, 1.5), segment_values=False):
    venv = DummyVecEnv([lambda: CountEnv(limit) for _ in range(n_envs)])
    subs = [ConstantPolicy(action=k + 1, value=v) for k, v in enumerate(values)]
    return SubPolicySelectionVecEnv(venv, subs, macro_duration=n, gamma=gamma, segment_values=segment_values), subs


def test_macro_step_runs_the_chosen_subpolicy_for_n_steps_and_sums_rewards():
    env, subs = wrapper()
    env.reset()
    obs, rewards, dones, infos = env.step(np.array([0, 1]))
    np.testing.assert_array_equal(rewards, [55.0, 55.0])  # 1 + 2 + ... + 10
    assert not dones.any()
    np.testing.assert_array_equal(obs[:, 0], [10, 10])
    np.testing.assert_array_equal(obs[:, 1], [1, 2])  # env 0 ran sub-policy 0 (action 1), env 1 sub-policy 1
    assert subs[0].batch_sizes == [1] * 10 and subs[1].batch_sizes == [1] * 10
    obs, rewards, dones, infos = env.step(np.array([1, 1]))
    np.testing.assert_array_equal(rewards, [155.0, 155.0])  # 11 + ... + 20
    assert dones.all()
    assert all(info["TimeLimit.truncated"] for info in infos)
    np.testing.assert_array_equal(infos[0]["terminal_observation"], [20, 2])
    np.testing.assert_array_equal(obs[:, 0], [0, 0])  # reset for the next episode


def test_inference_is_batched_one_forward_per_active_subpolicy():
    env, subs = wrapper(n_envs=5)
    env.reset()
    env.step(np.array([0, 0, 0, 0, 0]))
    assert subs[0].batch_sizes == [5] * 10 and subs[1].batch_sizes == []
    env.step(np.array([1, 0, 1, 1, 0]))
    assert subs[0].batch_sizes[10:] == [2] * 10 and subs[1].batch_sizes == [3] * 10
    np.testing.assert_array_equal(env.choice_counts.sum(axis=0), [7, 3])
    np.testing.assert_array_equal(env.choice_counts, [[1, 1], [2, 0], [1, 1], [1, 1], [2, 0]])


def test_trajectory_records_every_primitive_step_with_truncation_bootstrap():
    env, _ = wrapper(gamma=0.5)
    env.reset()
    env.step(np.array([0, 1]))
    env.step(np.array([1, 0]))
    traj = env.pop_trajectory()
    assert traj.rewards.shape == (20, 2) and traj.observations.shape == (20, 2, 2) and len(traj) == 40
    np.testing.assert_array_equal(traj.choices[:10], [[0, 1]] * 10)
    np.testing.assert_array_equal(traj.choices[10:], [[1, 0]] * 10)
    np.testing.assert_array_equal(traj.rewards[:19, 0], np.arange(1, 20))
    # the last step truncates: reward 20 + gamma * V_k(terminal obs) of the sub-policy that acted
    np.testing.assert_allclose(traj.rewards[19], [20 + 0.5 * 1.5, 20 + 0.5 * 0.5])
    np.testing.assert_array_equal(traj.values[:10], [[0.5, 1.5]] * 10)
    np.testing.assert_array_equal(traj.episode_starts[:, 0], [1] + [0] * 19)
    np.testing.assert_array_equal(traj.last_dones, [True, True])
    np.testing.assert_array_equal(traj.observations[:, 0, 0], np.arange(20))
    with pytest.raises(RuntimeError, match="no primitive steps"):
        env.pop_trajectory()


def test_segment_values_are_the_acting_subpolicys_value_at_each_macro_steps_end():
    env, subs = wrapper(limit=40, n=5, segment_values=True)
    env.reset()
    env.step(np.array([0, 1]))
    env.step(np.array([1, 1]))
    traj = env.pop_trajectory()
    assert traj.end_values.shape == (10, 2)
    ends = ~np.isnan(traj.end_values)
    np.testing.assert_array_equal(ends[:, 0], [0, 0, 0, 0, 1] * 2)  # the last step of each macro step only
    np.testing.assert_array_equal(ends[:, 0], ends[:, 1])
    np.testing.assert_array_equal(traj.end_values[4], [0.5, 1.5])  # env 0 switches 0 -> 1: sub-policy 0's value
    np.testing.assert_array_equal(traj.end_values[9], [1.5, 1.5])
    plain, _ = wrapper(limit=40, n=5)
    plain.reset()
    plain.step(np.array([0, 1]))
    assert plain.pop_trajectory().end_values is None  # recorded only when asked: one value pass per macro step


def test_episode_ending_inside_a_macro_step_is_reported_at_its_end():
    env, _ = wrapper(limit=15)
    env.reset()
    env.step(np.array([0, 0]))
    obs, rewards, dones, infos = env.step(np.array([0, 0]))
    np.testing.assert_array_equal(rewards, [65.0, 65.0])  # 11 + ... + 15: steps after the reset are not credited
    assert dones.all()
    np.testing.assert_array_equal(infos[0]["terminal_observation"][0], 15)
    np.testing.assert_array_equal(obs[:, 0], [5, 5])  # five steps into the next episode


def test_box_actions_are_clipped_for_the_env_but_recorded_raw():
    import gymnasium as gym
    import torch as th

    class Wide(ConstantPolicy):
        def forward(self, obs):
            n = obs.shape[0]
            return th.full((n, 1), 3.0), th.zeros(n, 1), th.zeros(n)

    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    env = SubPolicySelectionVecEnv(venv, [Wide(0, 0.0)], macro_duration=2)
    env.reset()
    env.step(np.array([0]))
    np.testing.assert_array_equal(env.pop_trajectory().actions[:, 0, 0], [3.0, 3.0])


def test_works_on_movement_bandits_with_sb3_policies():
    from stable_baselines3 import PPO

    venv = DummyVecEnv([MovementBanditsEnv for _ in range(3)])
    subs = [PPO("MlpPolicy", venv, n_steps=10, device="cpu").policy for _ in range(2)]
    env = SubPolicySelectionVecEnv(venv, subs, macro_duration=5)
    env.reset()
    env.step(np.array([0, 1, 0]))
    traj = env.pop_trajectory()
    assert traj.actions.shape == (5, 3, 1) and traj.actions.dtype == np.int64
    assert set(np.unique(traj.actions)) <= set(range(5))
    assert np.isfinite(traj.log_probs).all() and (traj.log_probs <= 0).all()


def test_rejects_bad_macro_duration():
    venv = DummyVecEnv([lambda: CountEnv()])
    with pytest.raises(ValueError, match="macro_duration must be >= 1"):
        SubPolicySelectionVecEnv(venv, [ConstantPolicy(0, 0.0)], macro_duration=0)
