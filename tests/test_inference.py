import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.movement_bandits import MovementBanditsEnv
from mlsh.inference import sample


def test_categorical_matches_sb3_log_probs_values_and_frequencies():
    th.manual_seed(0)
    policy = PPO("MlpPolicy", DummyVecEnv([MovementBanditsEnv]), device="cpu").policy
    with th.no_grad():
        policy.action_net.bias[:] = th.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    obs = th.rand(20000, 6)
    actions, values, log_prob = sample(policy, obs)
    ref_values, ref_log_prob, _ = policy.evaluate_actions(obs, actions)
    th.testing.assert_close(values, ref_values.detach())
    th.testing.assert_close(log_prob, ref_log_prob.detach(), rtol=1e-5, atol=1e-5)
    probs = policy.get_distribution(obs[:1]).distribution.probs.detach().numpy()[0]
    freq = np.bincount(actions.numpy(), minlength=5) / len(actions)
    assert np.abs(freq - probs).max() < 0.03  # obs barely move the logits of a fresh policy


def test_gaussian_matches_sb3_log_probs_and_noise_scale():
    th.manual_seed(1)
    policy = PPO("MlpPolicy", DummyVecEnv([lambda: gym.make("Pendulum-v1")]), device="cpu").policy
    with th.no_grad():
        policy.log_std[:] = -0.7
    obs = th.rand(20000, 3)
    actions, values, log_prob = sample(policy, obs)
    ref_values, ref_log_prob, _ = policy.evaluate_actions(obs, actions)
    th.testing.assert_close(log_prob, ref_log_prob.detach(), rtol=1e-5, atol=1e-5)
    mean = policy.get_distribution(obs).distribution.mean.detach()
    assert (actions - mean).std().item() == pytest.approx(np.exp(-0.7), rel=0.03)
    assert actions.shape == (20000, 1) and values.shape == (20000, 1)


def _policies(make_env, k, seed, **policy_kwargs):
    th.manual_seed(seed)
    return [PPO("MlpPolicy", DummyVecEnv([make_env]), device="cpu", policy_kwargs=policy_kwargs).policy
            for _ in range(k)]


def _per_policy(policies, obs, choices):
    """One ``sample`` per active sub-policy, as the selection wrapper did."""
    n = len(obs)
    actions = values = log_probs = None
    for k in np.unique(choices):
        idx = np.flatnonzero(choices == k)
        a, v, lp = sample(policies[k], obs[idx])
        if actions is None:
            actions, values, log_probs = th.empty(n, *a.shape[1:], dtype=a.dtype), th.empty(n, 1), th.empty(n)
        actions[idx], values[idx], log_probs[idx] = a, v, lp
    return actions, values, log_probs


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
def test_stacked_sampler_is_one_forward_per_subpolicy_to_float_rounding(kind):
    from mlsh.inference import StackedSampler

    make = MovementBanditsEnv if kind == "categorical" else (lambda: gym.make("Pendulum-v1"))
    policies = _policies(make, 3, seed=2, net_arch=[32, 32])
    assert StackedSampler.supports(policies)
    stacked = StackedSampler(policies)
    obs = th.rand(40, policies[0].observation_space.shape[0])
    choices = np.random.default_rng(0).integers(0, 3, 40)
    groups = [(int(k), np.flatnonzero(choices == k)) for k in np.unique(choices)]
    for _ in range(2):  # the second time after an optimizer step on one sub-policy: the stacks follow
        th.manual_seed(5)
        ref = _per_policy(policies, obs, choices)
        th.manual_seed(5)
        got = stacked.sample(obs, choices, groups)
        if kind == "categorical":
            assert th.equal(got[0], ref[0])  # the same draws
        th.testing.assert_close(got[0].float(), ref[0].float(), rtol=1e-5, atol=1e-5)
        th.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-5)
        th.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-5)
        opt = th.optim.SGD(policies[1].parameters(), lr=1.0)
        loss = sum(p.square().sum() for p in policies[1].parameters())
        loss.backward()
        opt.step()


def test_stacked_sampler_refuses_mixed_architectures():
    from mlsh.inference import StackedSampler

    a = _policies(MovementBanditsEnv, 1, seed=0, net_arch=[32, 32])
    b = _policies(MovementBanditsEnv, 1, seed=0, net_arch=[64, 64])
    assert not StackedSampler.supports(a + b)
    assert not StackedSampler.supports(a)  # one sub-policy: nothing to stack
