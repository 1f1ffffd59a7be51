import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.movement_bandits import MovementBanditsEnv
from mlsh.sb3_adapter import VariableRolloutBuffer, capture_logger
from mlsh.subpolicies import SubPolicyLearner, full_trajectory_gae, split_by_subpolicy
from tests.helpers import random_trajectory


def test_gae_matches_hand_computation():
    # one env, three steps, no episode boundary, bootstrap from last value
    g, lam = 0.9, 0.8
    r = np.array([[1.0], [0.0], [2.0]])
    v = np.array([[0.5], [0.2], [0.1]])
    adv, ret = full_trajectory_gae(r, v, np.zeros((3, 1)), np.array([0.3]), np.array([False]), g, lam)
    d2 = 2.0 + g * 0.3 - 0.1
    d1 = 0.0 + g * 0.1 - 0.2
    d0 = 1.0 + g * 0.2 - 0.5
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [a0 + 0.5, a1 + 0.2, a2 + 0.1], rtol=1e-6)


def test_gae_cuts_at_episode_starts_and_terminal_last_step():
    g, lam = 0.99, 0.98
    r = np.array([[1.0], [2.0], [3.0]])
    v = np.array([[0.1], [0.2], [0.3]])
    starts = np.array([[1.0], [0.0], [1.0]])  # a new episode begins at step 2
    adv, _ = full_trajectory_gae(r, v, starts, np.array([9.0]), np.array([True]), g, lam)
    assert adv[2, 0] == pytest.approx(3.0 - 0.3)  # terminal: no bootstrap from last_values
    d1 = 2.0 - 0.2  # the next observation starts another episode: no bootstrap across it
    assert adv[1, 0] == pytest.approx(d1)
    assert adv[0, 0] == pytest.approx(1.0 + g * 0.2 - 0.1 + g * lam * d1)


def test_gae_bootstraps_across_a_switch_from_the_next_subpolicys_value():
    # values recorded per step come from whichever sub-policy acted; GAE runs over the whole trajectory
    r = np.zeros((2, 1))
    v = np.array([[1.0], [5.0]])  # step 0 by sub-policy 0 (V=1), step 1 by sub-policy 1 (V=5)
    adv, _ = full_trajectory_gae(r, v, np.zeros((2, 1)), np.array([0.0]), np.array([True]), 0.5, 0.0)
    assert adv[0, 0] == pytest.approx(0.5 * 5.0 - 1.0)


def test_gae_with_own_switch_bootstrap_stops_the_trace_at_each_segments_end():
    g, lam = 0.9, 0.8
    r = np.array([[1.0], [0.0], [2.0], [0.5]])
    v = np.array([[0.5], [0.2], [7.0], [6.0]])  # steps 0-1 by sub-policy 0, steps 2-3 by sub-policy 1
    ends = np.array([[np.nan], [0.4], [np.nan], [0.3]])  # sub-policy 0's value after step 1; last_values after 3
    adv, ret = full_trajectory_gae(r, v, np.zeros((4, 1)), np.array([0.3]), np.array([False]), g, lam, ends)
    d3 = 0.5 + g * 0.3 - 6.0
    d2 = 2.0 + g * 6.0 - 7.0
    d1 = 0.0 + g * 0.4 - 0.2  # its own value 0.4, not sub-policy 1's 7.0
    d0 = 1.0 + g * 0.2 - 0.5
    np.testing.assert_allclose(adv[:, 0], [d0 + g * lam * d1, d1, d2 + g * lam * d3, d3], rtol=1e-6)
    np.testing.assert_allclose(ret, adv + v, rtol=1e-6)
    starts = np.array([[0.0], [0.0], [1.0], [0.0]])  # an episode ends at the switch: no bootstrap at all
    adv, _ = full_trajectory_gae(r, v, starts, np.array([0.3]), np.array([False]), g, lam, ends)
    assert adv[1, 0] == pytest.approx(0.0 - 0.2)
    nan_free = np.full((4, 1), np.nan)
    np.testing.assert_array_equal(  # no segment ends: the plain full-trajectory GAE
        full_trajectory_gae(r, v, starts, np.array([0.3]), np.array([False]), g, lam, nan_free)[0],
        full_trajectory_gae(r, v, starts, np.array([0.3]), np.array([False]), g, lam)[0])


def test_own_switch_bootstrap_needs_end_values_and_rejects_unknown_modes():
    with pytest.raises(ValueError, match="switch_bootstrap must be one of"):
        SubPolicyLearner(_models(), gamma=0.99, gae_lambda=0.98, switch_bootstrap="previous")
    learner = SubPolicyLearner(_models(), gamma=0.99, gae_lambda=0.98, switch_bootstrap="own")
    with pytest.raises(ValueError, match="segment_values=True"):
        learner.batches(_trajectory())


def test_split_by_subpolicy_partitions_flat_indices():
    choices = np.array([[0, 1], [0, 1], [2, 1]])  # (T=3, n_envs=2), flattened row-major
    parts = split_by_subpolicy(choices, 4)
    assert [p.tolist() for p in parts] == [[0, 2], [1, 3, 5], [4], []]


def _models(n=2, batch_size=8, n_epochs=2):
    venv = DummyVecEnv([MovementBanditsEnv])
    models = [PPO("MlpPolicy", venv, n_steps=16, batch_size=batch_size, n_epochs=n_epochs, device="cpu",
                  rollout_buffer_class=VariableRolloutBuffer) for _ in range(n)]
    for m in models:
        capture_logger(m)
    return models


def _trajectory(T=30, n_envs=2, seed=0):
    choices = np.zeros((T, n_envs), dtype=np.int64)
    choices[10:20] = 1
    choices[:, 1] = 1 - choices[:, 0]
    return random_trajectory(choices, seed)


def test_batches_split_the_steps_and_normalise_each_share():
    learner = SubPolicyLearner(_models(), gamma=0.99, gae_lambda=0.98, advantage_norm="share")
    traj = _trajectory()
    batches = learner.batches(traj)
    assert [len(b["observations"]) for b in batches] == [30, 30]
    flat_obs = traj.observations.reshape(-1, 6)
    np.testing.assert_array_equal(batches[0]["observations"], flat_obs[traj.choices.reshape(-1) == 0])
    for b in batches:
        assert abs(b["advantages"].mean()) < 1e-5 and b["advantages"].std() == pytest.approx(1.0, abs=1e-3)
    adv, ret = full_trajectory_gae(traj.rewards, traj.values, traj.episode_starts, traj.last_values,
                                   traj.last_dones, 0.99, 0.98)
    np.testing.assert_allclose(batches[1]["returns"], ret.reshape(-1)[traj.choices.reshape(-1) == 1], rtol=1e-6)


def test_train_updates_only_subpolicies_that_acted():
    import torch as th

    learner = SubPolicyLearner(_models(n=3), gamma=0.99, gae_lambda=0.98)
    before = [th.nn.utils.parameters_to_vector(m.policy.parameters()).clone() for m in learner.models]
    metrics = learner.train(_trajectory())
    after = [th.nn.utils.parameters_to_vector(m.policy.parameters()) for m in learner.models]
    assert metrics["sub0/n_steps"] == 30 and metrics["sub1/n_steps"] == 30 and metrics["sub2/n_steps"] == 0
    assert not th.equal(before[0], after[0]) and not th.equal(before[1], after[1])
    assert th.equal(before[2], after[2])
    assert "sub0/value_loss" in metrics and "sub2/value_loss" not in metrics
    assert [m.num_timesteps for m in learner.models] == [30, 30, 0]


def test_rejects_unknown_advantage_norm():
    with pytest.raises(ValueError, match="advantage_norm"):
        SubPolicyLearner(_models(), 0.99, 0.98, advantage_norm="global")


def test_min_share_trains_a_subpolicy_on_a_groups_steps_only_above_that_share_or_if_most_picked():
    import torch as th

    # Group 0 (envs 0, 1): sub-policy 0 takes 50 of 60 steps, sub-policy 1 the other 10 (1/6).
    # Group 1 (envs 2, 3): sub-policy 2 takes 40 of 60, sub-policy 0 the other 20 (1/3).
    choices = np.zeros((30, 4), dtype=np.int64)
    choices[:5, 1] = 1
    choices[25:, 1] = 1
    choices[:, 2:] = 2
    choices[:20, 3] = 0
    traj = random_trajectory(choices, 3)
    groups = [np.array([0, 1]), np.array([2, 3])]
    env_of_step = np.tile(np.arange(4), 30)
    flat_obs = traj.observations.reshape(-1, 6)
    flat_choices = choices.reshape(-1)

    def sizes(min_share):
        batches = SubPolicyLearner(_models(n=3), 0.99, 0.98, n_groups=2, min_share=min_share).batches(traj, groups)
        return [None if b is None else b["group_sizes"] for b in batches]

    everything = SubPolicyLearner(_models(n=3), 0.99, 0.98, n_groups=2).batches(traj, groups)
    assert [b["group_sizes"] for b in everything] == [[50, 20], [10], [40]]
    assert sizes(1 / 6) == [[50, 20], [10], [40]]
    assert sizes(0.2) == [[50, 20], None, [40]]
    assert sizes(0.34) == sizes(1.0) == [[50], None, [40]]

    learner = SubPolicyLearner(_models(n=3), 0.99, 0.98, n_groups=2, min_share=1.0)
    top = learner.batches(traj, groups)
    assert top[0]["group_ids"] == [0] and top[2]["group_ids"] == [1]
    np.testing.assert_array_equal(top[0]["observations"],
                                  flat_obs[(flat_choices == 0) & np.isin(env_of_step, [0, 1])])
    np.testing.assert_array_equal(top[2]["observations"], flat_obs[flat_choices == 2])
    # each kept share is normalised as before: the same advantages as with every share kept
    np.testing.assert_allclose(top[0]["advantages"], everything[0]["advantages"][:50], rtol=1e-6)

    before = [th.nn.utils.parameters_to_vector(m.policy.parameters()).clone() for m in learner.models]
    metrics = learner.train(traj, groups, [0, 1])
    after = [th.nn.utils.parameters_to_vector(m.policy.parameters()) for m in learner.models]
    assert [metrics[f"sub{k}/n_steps"] for k in range(3)] == [50, 0, 40]
    assert not th.equal(before[0], after[0]) and th.equal(before[1], after[1]) and not th.equal(before[2], after[2])


def test_rejects_a_min_share_outside_0_1():
    with pytest.raises(ValueError, match="min_share"):
        SubPolicyLearner(_models(), 0.99, 0.98, min_share=1.5)
