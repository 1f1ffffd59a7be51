import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401
from envs.movement_bandits import MovementBanditsEnv, oracle_action


def test_check_env_passes():
    check_env(MovementBanditsEnv(), skip_render_check=False)
    check_env(gym.make("mlsh/MovementBandits-v0").unwrapped)


def test_registered_with_50_step_limit():
    env = gym.make("mlsh/MovementBandits-v0")
    env.reset(seed=0)
    for t in range(50):
        _, _, terminated, truncated, _ = env.step(0)
        assert not terminated
        assert truncated == (t == 49)


@pytest.mark.parametrize("action,delta", [(0, (0, 0)), (1, (20, 0)), (2, (-20, 0)), (3, (0, 20)), (4, (0, -20))])
def test_actions_move_twenty_units(action, delta):
    env = MovementBanditsEnv()
    obs, _ = env.reset(seed=1)
    np.testing.assert_allclose(obs[:2], [0.5, 0.5])  # (200, 200) / 400
    obs, *_ = env.step(action)
    np.testing.assert_allclose(env.agent, np.array([200.0, 200.0]) + delta)
    np.testing.assert_allclose(obs, np.concatenate([env.agent, env.goals.ravel()]) / 400, rtol=1e-6)


@pytest.mark.parametrize("offset,reward", [(49.0, 1.0), (49.9, 1.0), (50.0, 0.0), (70.0, 0.0)])
def test_reward_radius_is_fifty_around_correct_goal_only(offset, reward):
    env = MovementBanditsEnv()
    env.reset(seed=0, options={"task": 1})
    env.goals = np.array([[200.0 + offset + 20, 200.0], [200.0 + offset + 20, 200.0]])
    _, r, *_ = env.step(0)  # stay: distance to both goals is offset + 20
    assert r == 0.0
    env.goals = np.array([[0.0, 0.0], [220.0 + offset, 200.0]])  # correct goal (1) at `offset` after a +x move
    _, r, *_ = env.step(1)
    assert r == reward
    env.agent = np.array([200.0, 200.0])
    env.goals = env.goals[::-1].copy()  # now the wrong goal is the near one
    _, r, *_ = env.step(1)
    assert r == 0.0


def test_task_is_set_on_reset_kept_across_episodes_and_reported():
    env = MovementBanditsEnv()
    _, info = env.reset(seed=0, options={"task": 1})
    assert info["task"] == 1 and env.task == 1
    for _ in range(3):
        _, info = env.reset()
        assert info["task"] == 1
        _, _, _, _, info = env.step(0)
        assert info["task"] == 1
    env.set_task(0)
    assert env.reset()[1]["task"] == 0
    with pytest.raises(ValueError, match="task must be 0 or 1"):
        env.set_task(2)


def test_goals_resampled_every_reset_from_the_seeded_rng():
    a, b = MovementBanditsEnv(), MovementBanditsEnv()
    a.reset(seed=3)
    b.reset(seed=3)
    first = a.goals.copy()
    np.testing.assert_array_equal(first, b.goals)
    a.reset()
    assert not np.allclose(first, a.goals)
    assert ((a.goals >= 0) & (a.goals <= 400)).all()


def test_sample_task_uses_the_callers_rng():
    draws = [MovementBanditsEnv.sample_task(np.random.default_rng(s)) for s in range(40)]
    assert set(draws) == {0, 1}
    assert draws == [MovementBanditsEnv.sample_task(np.random.default_rng(s)) for s in range(40)]


def test_oracle_scores_about_44():
    env = gym.make("mlsh/MovementBandits-v0")
    totals = []
    for s in range(100):
        env.reset(seed=s, options={"task": s % 2})
        total, truncated = 0.0, False
        while not truncated:
            _, r, _, truncated, _ = env.step(oracle_action(env.unwrapped))
            total += r
        totals.append(total)
    assert 42.0 < np.mean(totals) < 45.5


def test_renders_rgb_frame():
    env = MovementBanditsEnv(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 240, 3) and frame.dtype == np.uint8
    assert (frame != 255).any()
