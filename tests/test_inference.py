import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.movement_bandits import MovementBanditsEnv
from mlsh.inference import sample, to_tensor


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


def test_forward_inputs_are_aligned_copies_so_a_view_gives_the_same_numbers_as_a_copy():
    """A group's rows of the envs' observations are a view at some offset; after a resume the same rows are an array
    of their own. The CPU matrix product's last bits depend on the input's alignment; ``to_tensor`` copies into
    torch's 64-byte aligned memory, so both give the same forward, bit for bit."""
    th.manual_seed(0)
    layer = th.nn.Linear(29, 64)
    flat = th.zeros(2 * 29 + 1).numpy()  # torch's memory: 64-byte aligned
    view = flat[1:].reshape(2, 29)  # 4 bytes further (two rows at such offsets differed in the last bits here)
    view[:] = np.random.default_rng(0).standard_normal((2, 29))
    own = view.copy()
    for x in (view, own):
        t = to_tensor(x)
        assert t.data_ptr() % 64 == 0 and t.dtype == th.float32 and np.array_equal(t.numpy(), x)
        assert not np.shares_memory(t.numpy(), x)
    assert th.equal(layer(to_tensor(view)), layer(to_tensor(own)))


@pytest.mark.parametrize("env_id, activation", [("mlsh/MovementBandits-v0", th.nn.Tanh),
                                                ("mlsh/AntTwoWalk-v0", th.nn.Tanh),
                                                ("mlsh/AntTwoWalk-v0", th.nn.ReLU),
                                                ("mlsh/AntTwoWalk-v0", th.nn.ELU)])  # ELU: no direct path
def test_direct_layer_calls_give_the_module_forward_bit_for_bit(env_id, activation):
    import envs  # noqa: F401  (registers the mlsh/ envs)
    from mlsh import inference

    th.manual_seed(2)
    policy = PPO("MlpPolicy", DummyVecEnv([lambda: gym.make(env_id)]), device="cpu",
                 policy_kwargs=dict(net_arch=[64, 64], activation_fn=activation)).policy
    assert (inference._plan(policy) is None) == (activation is th.nn.ELU)
    obs = th.randn(7, policy.observation_space.shape[0])
    th.manual_seed(3)
    fast = sample(policy, obs)
    with th.no_grad():  # the modules' own forward, as SB3 calls it
        latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))
        values, out = policy.value_net(latent_vf), policy.action_net(latent_pi)
    assert th.equal(fast[1], values)
    th.manual_seed(3)
    if isinstance(policy.action_space, gym.spaces.Discrete):
        assert th.equal(fast[0], th.multinomial(th.log_softmax(out, -1).exp(), 1).squeeze(1))
    else:
        assert th.equal(fast[0], out + th.randn_like(out) * policy.log_std.exp())


@pytest.mark.parametrize("env_id", ["mlsh/MovementBandits-v0", "mlsh/AntTwoWalk-v0"])
def test_numpy_forward_matches_sb3_and_follows_the_weights(env_id):
    """The selection wrapper's numpy forward: SB3's values and log-probabilities to float32 rounding, the policy's
    action distribution, torch's generator for its draws, and the weights of the last ``numpy_forward`` call."""
    import envs  # noqa: F401  (registers the mlsh/ envs)
    from mlsh.inference import numpy_forward

    th.manual_seed(4)
    model = PPO("MlpPolicy", DummyVecEnv([lambda: gym.make(env_id)]), device="cpu")
    policy = model.policy
    discrete = isinstance(policy.action_space, gym.spaces.Discrete)
    with th.no_grad():
        if discrete:
            policy.action_net.bias[:] = th.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
        else:
            policy.log_std[:] = -0.7
    obs = np.random.default_rng(0).standard_normal((20000, policy.observation_space.shape[0])).astype(np.float32)
    actions, values, log_probs = numpy_forward(policy)(obs)
    assert values.shape == log_probs.shape == (20000,) and values.dtype == log_probs.dtype == np.float32
    ref_values, ref_log_probs, _ = policy.evaluate_actions(th.as_tensor(obs), th.as_tensor(actions))
    np.testing.assert_allclose(values, ref_values.detach().numpy().ravel(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_probs, ref_log_probs.detach().numpy(), rtol=1e-4, atol=1e-4)
    dist = policy.get_distribution(th.as_tensor(obs)).distribution
    if discrete:
        assert actions.shape == (20000,) and actions.dtype == np.int64
        freq = np.bincount(actions, minlength=5) / len(actions)
        assert np.abs(freq - dist.probs.detach().numpy().mean(0)).max() < 0.01
    else:
        assert actions.shape == (20000, 8)
        assert (actions - dist.mean.detach().numpy()).std() == pytest.approx(np.exp(-0.7), rel=0.02)
    th.manual_seed(5)
    first = numpy_forward(policy)(obs[:7])
    th.manual_seed(5)
    again = numpy_forward(policy)(obs[:7])
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    with th.no_grad():  # an in-place change of the weights (an optimizer step, load_state_dict)
        policy.value_net.bias += 1.0
    moved = numpy_forward(policy)(obs[:7])[1]
    np.testing.assert_allclose(moved, first[1] + 1.0, rtol=1e-5, atol=1e-5)
    optimizer = th.optim.Adam(policy.parameters(), lr=0.1, fused=True)  # as build_ppo's; no version bump
    for p in policy.parameters():
        p.grad = th.ones_like(p)
    optimizer.step()
    stepped = numpy_forward(policy)(obs[:7])[1]
    assert np.abs(stepped - moved).max() > 0.05
    np.testing.assert_allclose(stepped, policy.predict_values(th.as_tensor(obs[:7])).detach().numpy().ravel(),
                               rtol=1e-5, atol=1e-5)


def test_numpy_forward_leaves_other_layouts_and_the_master_to_the_torch_path():
    from mlsh.inference import numpy_forward
    from mlsh.master import MasterPolicy

    venv = DummyVecEnv([MovementBanditsEnv])
    assert numpy_forward(PPO("MlpPolicy", venv, device="cpu",
                             policy_kwargs=dict(activation_fn=th.nn.ELU)).policy) is None
    master = PPO(MasterPolicy, venv, device="cpu").policy  # its forward replaces some picks by uniform ones
    assert numpy_forward(master) is None
    th.manual_seed(0)
    picked = sample(master, th.zeros(4000, 6))[0]
    th.manual_seed(0)
    assert th.equal(picked, master(th.zeros(4000, 6))[0])  # sample() calls the master's own forward
