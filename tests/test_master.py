import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.utils import ConstantSchedule

from mlsh.master import MasterPolicy


def policy(p):
    return MasterPolicy(spaces.Box(-1, 1, (3,)), spaces.Discrete(4), ConstantSchedule(0.01), random_pick_prob=p)


def test_random_pick_prob_one_gives_uniform_choices_with_their_log_prob():
    th.manual_seed(0)
    pi = policy(1.0)
    with th.no_grad():
        pi.action_net.bias[:] = th.tensor([20.0, 0, 0, 0])  # the learned policy would always pick 0
        obs = th.zeros(4000, 3)
        actions, values, log_prob = pi(obs)
        expected = pi.get_distribution(obs).log_prob(actions)
    counts = np.bincount(actions.numpy(), minlength=4) / 4000
    np.testing.assert_allclose(counts, 0.25, atol=0.03)
    th.testing.assert_close(log_prob, expected)
    assert values.shape == (4000, 1)


def test_random_pick_prob_is_the_replacement_rate():
    th.manual_seed(1)
    pi = policy(0.1)
    with th.no_grad():
        pi.action_net.bias[:] = th.tensor([20.0, 0, 0, 0])
        actions, _, _ = pi(th.zeros(20000, 3))
    # replaced w.p. 0.1, by one of the other three indices w.p. 3/4
    assert (actions != 0).float().mean().item() == pytest.approx(0.075, abs=0.01)


def test_deterministic_never_picks_randomly():
    pi = policy(1.0)
    with th.no_grad():
        pi.action_net.bias[:] = th.tensor([0, 0, 20.0, 0])
        actions, _, _ = pi(th.zeros(100, 3), deterministic=True)
    assert (actions == 2).all()


def test_rejects_probability_out_of_range():
    with pytest.raises(ValueError, match="random_pick_prob"):
        policy(1.5)


def test_probability_survives_save_and_load(tmp_path):
    pi = policy(0.25)
    pi.save(tmp_path / "pi.pt")
    assert MasterPolicy.load(tmp_path / "pi.pt").random_pick_prob == 0.25


def test_old_log_probability_is_clipped_at_minus_20():
    """A committed master's random pick: its log-probability is far below -20; PPO's ratio must stay finite."""
    from mlsh.master import MIN_LOG_PROB

    th.manual_seed(0)
    pi = policy(1.0)
    with th.no_grad():
        pi.action_net.bias[:] = th.tensor([200.0, 0, 0, 0])
        actions, _, log_prob = pi(th.zeros(400, 3))
        true_log_prob = pi.get_distribution(th.zeros(400, 3)).log_prob(actions)
    assert (true_log_prob[actions != 0] < -150).all()
    assert (log_prob[actions != 0] == MIN_LOG_PROB).all() and log_prob.min() == MIN_LOG_PROB
    th.testing.assert_close(log_prob[actions == 0], true_log_prob[actions == 0])
    assert th.isfinite(th.exp(th.zeros(1) - log_prob.min())).all()  # the largest possible ratio exp(0 + 20)
