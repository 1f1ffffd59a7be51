"""mlsh.ppo_update.train against SB3's own PPO.train(): the same minibatches, parameters and records."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.movement_bandits import MovementBanditsEnv
from mlsh import faults, ppo_update, sb3_adapter
from mlsh.benchmarks.ppo_update_speed import batch
from mlsh.master import MasterPolicy

N = 700  # samples: with minibatches of 64, a shorter last one


def _model(env_fn, policy="MlpPolicy", **kwargs):
    th.manual_seed(0)
    kwargs = {"n_steps": N, "batch_size": 64, **kwargs}
    model = PPO(policy, DummyVecEnv([env_fn]), n_epochs=3, device="cpu",
                policy_kwargs={"net_arch": [32, 32], **kwargs.pop("policy_kwargs", {})},
                rollout_buffer_class=kwargs.pop("rollout_buffer_class", sb3_adapter.VariableRolloutBuffer),
                **kwargs)
    sb3_adapter.capture_logger(model)
    return model


def _batch(model, rng, sizes=None, seeds=None):
    data = batch(model, N, rng)  # the benchmark's random samples, with the policy's own values and log-probs
    data["log_probs"] = data["log_probs"] + rng.normal(0, 0.3, N).astype(np.float32)  # ratios away from 1: clipping
    return {**data, "group_sizes": sizes, "group_seeds": seeds}


def _both(model, fill, updates=2):
    """SB3's train and ppo_update.train on copies of ``model`` (or two models of a function that makes the same
    each time), each buffer filled by ``fill`` with numpy's global generator seeded alike: (records, parameters,
    update counter) of each."""
    out = []
    for train in (lambda m: m.train(), ppo_update.train):
        m = model() if callable(model) else copy.deepcopy(model)
        for u in range(updates):
            fill(m, u)
            np.random.seed(u)
            train(m)
        out.append((sb3_adapter.pop_records(m), [p.detach().clone() for p in m.policy.parameters()],
                    m._n_updates))
    return out


def _assert_same(ref, mine, tol=2e-5):
    (ref_records, ref_params, ref_n), (records, params, n) = ref, mine
    assert n == ref_n
    for p, q in zip(ref_params, params, strict=True):
        th.testing.assert_close(q, p, rtol=tol, atol=tol)
    assert set(records) == set(ref_records)
    for key, value in ref_records.items():
        assert records[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("ent_coef", [0.0, 0.05])
@pytest.mark.parametrize("make", [MovementBanditsEnv, lambda: gym.make("Pendulum-v1")], ids=["categorical", "gaussian"])
def test_same_update_as_sb3_on_a_loaded_batch(make, ent_coef):
    model = _model(make, ent_coef=ent_coef)
    batches = [_batch(model, np.random.default_rng(u)) for u in range(2)]
    ref, mine = _both(model, lambda m, u: m.rollout_buffer.load(**batches[u]))
    _assert_same(ref, mine)
    assert ref[0]["train/clip_fraction"] > 0.05  # the clipped branch was exercised
    moved = max(float((p - q.detach()).abs().max()) for p, q in zip(ref[1], model.policy.parameters(), strict=True))
    assert moved > 1e-3  # and the update did something


def test_same_update_with_task_groups_and_their_own_generators():
    model = _model(MovementBanditsEnv)
    batches = [_batch(model, np.random.default_rng(u), sizes=[400, 300], seeds=[[7, u, 0], [7, u, 1]])
               for u in range(2)]
    ref, mine = _both(model, lambda m, u: m.rollout_buffer.load(**batches[u]))
    _assert_same(ref, mine)


def test_same_update_for_the_master_on_sb3s_own_buffer():
    """The master: SB3's RolloutBuffer filled by collect_rollouts, a policy with its own forward."""
    from stable_baselines3.common.buffers import RolloutBuffer

    model = _model(MovementBanditsEnv, policy=MasterPolicy, rollout_buffer_class=RolloutBuffer, n_steps=128,
                   batch_size=32)

    def fill(m, u):
        th.manual_seed(u)
        m.env.seed(u)
        sb3_adapter.begin_collection(m, m.env.reset())
        sb3_adapter.collect(m, 128)

    _assert_same(*_both(model, fill))


def test_other_policies_go_through_their_own_evaluate_actions():
    """gSDE has no closed form here: its evaluate_actions serves, with the same result as SB3's loop."""
    def make():
        return _model(lambda: gym.make("Pendulum-v1"), use_sde=True)

    model = make()
    calls = []
    model.policy.evaluate_actions = lambda *args: calls.append(1) or type(model.policy).evaluate_actions(
        model.policy, *args)
    model.rollout_buffer.load(**_batch(model, np.random.default_rng(0)))
    calls.clear()
    ppo_update.train(model)
    assert len(calls) == 3 * 11  # every minibatch of the 3 epochs
    batches = [_batch(model, np.random.default_rng(u)) for u in range(2)]
    _assert_same(*_both(make, lambda m, u: m.rollout_buffer.load(**batches[u])))


@pytest.mark.parametrize("make", [MovementBanditsEnv, lambda: gym.make("Pendulum-v1")], ids=["categorical", "gaussian"])
def test_target_kl_stops_where_sb3_stops(make):
    """SB3 stops at the first minibatch whose approximate KL exceeds 1.5 target_kl, before its step: at the first
    minibatch (nothing moves), inside the first epoch, in a later one, or never."""
    stops = []
    for target_kl in (0.001, 0.02, 0.04, 1.0):
        model = _model(make, target_kl=target_kl)
        assert ppo_update.supported(model)
        batch = _batch(model, np.random.default_rng(0))
        ref, mine = _both(model, lambda m, u, batch=batch: m.rollout_buffer.load(**batch), updates=1)
        _assert_same(ref, mine)
        moved = max(float((p - q.detach()).abs().max())
                    for p, q in zip(mine[1], model.policy.parameters(), strict=True))
        stops.append((mine[2], moved > 0))
    assert stops[0] == (1, False) and stops[-1] == (3, True)  # no step at all; every epoch
    assert (1, True) in stops or (2, True) in stops  # stopped after some steps


def test_the_optimizer_hooks_still_run():
    """A non-finite gradient is caught by the finiteness check on the optimizer step (mlsh.faults)."""
    model = _model(MovementBanditsEnv)
    faults.watch(model, "the test policy")
    batch = _batch(model, np.random.default_rng(0))
    batch["advantages"][5] = np.inf
    model.rollout_buffer.load(**batch)
    with pytest.raises(faults.NonFiniteError, match="the test policy"):
        ppo_update.train(model)


class _GridObsEnv(gym.Env):
    """Observations of shape (2, 3): SB3's MLP flattens them."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2, 3), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        return np.zeros((2, 3), np.float32), {}

    def step(self, action):
        return np.zeros((2, 3), np.float32), 0.0, False, False, {}


def test_same_update_for_observations_of_several_dimensions():
    model = _model(_GridObsEnv)
    batches = [_batch(model, np.random.default_rng(u)) for u in range(2)]
    _assert_same(*_both(model, lambda m, u: m.rollout_buffer.load(**batches[u])))
