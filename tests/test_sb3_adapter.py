"""The SB3 private seams MLSH relies on (stable-baselines3 2.9.2)."""

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.movement_bandits import MovementBanditsEnv
from mlsh import sb3_adapter
from mlsh.sb3_adapter import VariableRolloutBuffer


def model(**kwargs):
    venv = DummyVecEnv([MovementBanditsEnv for _ in range(2)])
    m = PPO("MlpPolicy", venv, n_steps=8, device="cpu", rollout_buffer_class=VariableRolloutBuffer, **kwargs)
    sb3_adapter.capture_logger(m)
    return m


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return dict(observations=rng.random((n, 6)).astype(np.float32), actions=rng.integers(0, 5, (n, 1)),
                values=rng.random(n), log_probs=np.full(n, -1.6), advantages=rng.standard_normal(n),
                returns=rng.random(n))


def test_variable_buffer_yields_every_sample_once_for_any_length():
    m = model()
    m.rollout_buffer.load(**batch(37))
    seen = np.concatenate([s.observations.numpy() for s in m.rollout_buffer.get(10)])
    assert seen.shape == (37, 6)
    np.testing.assert_allclose(np.sort(seen[:, 0]), np.sort(batch(37)["observations"][:, 0]))


def test_reloading_the_buffer_is_not_served_stale_data():
    m = model()
    m.rollout_buffer.load(**batch(50, seed=0))
    list(m.rollout_buffer.get(10))  # flattens and marks the generator ready
    m.rollout_buffer.load(**batch(20, seed=1))
    seen = np.concatenate([s.observations.numpy() for s in m.rollout_buffer.get(7)])
    assert seen.shape == (20, 6)
    np.testing.assert_allclose(np.sort(seen[:, 0]), np.sort(batch(20, seed=1)["observations"][:, 0]))


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="empty batch"):
        model().rollout_buffer.load(**batch(0))


def test_train_on_batch_runs_ppo_train_outside_learn():
    m = model(n_epochs=3, batch_size=16)
    before = th.nn.utils.parameters_to_vector(m.policy.parameters()).clone()
    records = sb3_adapter.train_on_batch(m, batch(40))
    assert not th.equal(before, th.nn.utils.parameters_to_vector(m.policy.parameters()))
    assert sb3_adapter.n_updates(m) == 3  # SB3 counts epochs
    assert m.num_timesteps == 40
    assert {"train/value_loss", "train/policy_gradient_loss", "train/entropy_loss"} <= set(records)
    assert sb3_adapter.pop_records(m) == {}  # records are handed over once


def test_train_on_batch_needs_the_variable_buffer():
    venv = DummyVecEnv([MovementBanditsEnv])
    m = PPO("MlpPolicy", venv, n_steps=8, batch_size=8, device="cpu")
    sb3_adapter.capture_logger(m)
    with pytest.raises(TypeError, match="VariableRolloutBuffer"):
        sb3_adapter.train_on_batch(m, batch(8))


def test_collect_outside_learn_fills_the_buffer_and_counts_timesteps():
    m = model()
    sb3_adapter.begin_collection(m, m.env.reset())
    sb3_adapter.collect(m, 8)
    assert m.rollout_buffer.full and m.num_timesteps == 16
    assert np.abs(m.rollout_buffer.advantages).sum() > 0
    records = sb3_adapter.train(m)
    assert "train/approx_kl" in records
