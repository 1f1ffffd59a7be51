import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401
from envs.key_door import KeyDoorEnv, oracle_action
from tests.helpers import smoke_iterations


def test_check_env_passes():
    check_env(KeyDoorEnv(render_mode="rgb_array"), skip_render_check=False)
    check_env(gym.make("mlsh/KeyDoor-v0", render_mode="rgb_array").unwrapped, skip_render_check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker warns that the env is wrapped and the Box is unbounded
        check_env(gym.make("mlsh/KeyDoor-v0"))


def test_registered_with_100_step_limit():
    env = gym.make("mlsh/KeyDoor-v0")
    env.reset(seed=0)
    for t in range(100):
        _, _, terminated, truncated, _ = env.step(t % 5)
        assert not terminated
        assert truncated == (t == 99)


@pytest.mark.parametrize("action,delta", [(0, (0, 0)), (1, (20, 0)), (2, (-20, 0)), (3, (0, 20)), (4, (0, -20))])
def test_actions_move_twenty_units_and_observation_is_scaled(action, delta):
    env = KeyDoorEnv()
    obs, _ = env.reset(seed=1)
    assert obs.shape == (9,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:2], [0.5, 0.5])  # (200, 200) / 400
    np.testing.assert_allclose(obs[2:8], env.points.ravel() / 400, rtol=1e-6)
    assert obs[8] == 0.0
    obs, *_ = env.step(action)
    np.testing.assert_allclose(env.agent, np.array([200.0, 200.0]) + delta)
    np.testing.assert_allclose(obs[:8], np.concatenate([env.agent, env.doors.ravel(), env.key]) / 400, rtol=1e-6)
    assert obs[8] == float(env.has_key)


def test_points_are_uniform_in_the_arena_and_scale_is_an_argument():
    env = KeyDoorEnv()
    env.reset(seed=0)
    obs = np.array([env.reset()[0] for _ in range(500)])
    assert (obs[:, 2:8] >= 0).all() and (obs[:, 2:8] <= 1).all()
    np.testing.assert_allclose(obs[:, 2:8].mean(), 0.5, atol=0.02)
    raw = KeyDoorEnv(scale=1.0)
    obs, _ = raw.reset(seed=0)
    np.testing.assert_allclose(obs[:8], np.concatenate([[200.0, 200.0], raw.points.ravel()]), rtol=1e-6)


@pytest.mark.parametrize("offset,picked", [(30.0, True), (49.9, True), (50.0, False), (70.0, False)])
def test_key_is_picked_up_within_fifty(offset, picked):
    env = KeyDoorEnv()
    env.reset(seed=0)
    env.points = np.array([[0.0, 0.0], [400.0, 400.0], [220.0 + offset, 200.0]])  # key `offset` away after +x
    obs, r, *_ = env.step(1)
    assert env.has_key == picked and obs[8] == float(picked) and r == 0.0
    for a in [2, 2, 2, 4]:  # walk away: the key stays held
        obs, *_ = env.step(a)
        assert obs[8] == float(picked)
    assert env.reset()[0][8] == 0.0 and not env.has_key  # a new episode starts without it


@pytest.mark.parametrize("task", [0, 1])
def test_reward_only_with_the_key_near_the_correct_door(task):
    env = KeyDoorEnv()
    env.reset(seed=0, options={"task": task})
    correct, wrong = np.array([300.0, 200.0]), np.array([100.0, 200.0])
    doors = [correct, wrong] if task == 0 else [wrong, correct]
    env.points = np.array([*doors, [200.0, 380.0]])

    def step_from(xy, action):
        env.agent = np.array(xy, dtype=np.float64)
        return env.step(action)[1]

    assert step_from((280, 200), 1) == 0.0  # at the correct door without the key
    assert step_from((120, 200), 2) == 0.0  # at the wrong door without the key
    assert step_from((200, 340), 3) == 0.0 and env.has_key  # 20 from the key: picked up, far from the doors
    assert step_from((120, 200), 2) == 0.0  # at the wrong door with the key
    assert step_from((280, 200), 1) == 1.0  # at the correct door with the key
    assert env.step(0)[1] == 1.0  # every step there pays
    assert step_from((300, 211), 3) == 1.0  # 31 away
    assert step_from((300, 229.9), 3) == 1.0  # 49.9 away
    assert step_from((300, 230), 3) == 0.0  # 50 away: outside the radius
    env.points[2] = env.points[task]  # key on the correct door: one step picks it up and pays
    env.has_key = False
    assert step_from((280, 200), 1) == 1.0 and env.has_key


def test_task_is_set_on_reset_kept_across_episodes_and_reported():
    env = KeyDoorEnv()
    _, info = env.reset(seed=0, options={"task": 1})
    assert info["task"] == 1 and env.task == 1
    for _ in range(3):
        _, info = env.reset()
        assert info["task"] == 1
        assert env.step(0)[4]["task"] == 1
    env.set_task(np.int64(0))
    assert env.reset()[1]["task"] == 0
    for bad in [2, -1, "door"]:
        with pytest.raises(ValueError, match="task must be 0 or 1"):
            env.set_task(bad)


def test_sample_task_uses_the_callers_rng():
    draws = [KeyDoorEnv.sample_task(np.random.default_rng(s)) for s in range(40)]
    assert set(draws) == {0, 1}
    assert draws == [KeyDoorEnv.sample_task(np.random.default_rng(s)) for s in range(40)]


def test_same_seed_same_trajectory():
    def trajectory(seed):
        env = KeyDoorEnv()
        obs, _ = env.reset(seed=seed, options={"task": 1})
        out = [obs]
        for a in np.random.default_rng(9).integers(5, size=100):
            obs, r, *_ = env.step(a)
            out += [obs, np.float32(r)]
        out.append(env.reset()[0])  # the next episode's points come from the same seeded stream
        return np.concatenate([np.atleast_1d(x) for x in out])

    np.testing.assert_array_equal(trajectory(3), trajectory(3))
    assert not np.array_equal(trajectory(3), trajectory(4))


def test_oracle_scores_about_84():
    env = gym.make("mlsh/KeyDoor-v0")
    totals = []
    for s in range(100):
        env.reset(seed=s, options={"task": s % 2})
        total, truncated = 0.0, False
        while not truncated:
            _, r, _, truncated, _ = env.step(oracle_action(env.unwrapped))
            total += r
        totals.append(total)
    assert 80.0 < np.mean(totals) < 88.0


def test_renders_rgb_frame():
    env = KeyDoorEnv(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (200, 200, 3) and frame.dtype == np.uint8
    assert (frame != 255).any()
    assert KeyDoorEnv().render() is None


def test_trainer_runs_on_key_door(tmp_path):
    iters = smoke_iterations(tmp_path / "run", "env=key_door")
    assert [r["global_step"] for r in iters] == [200, 400, 600, 800]  # 2 tasks x (1 warmup + 1 joint)
    assert all(r["task"] in (0, 1) and "master/share_sub1" in r for r in iters)
