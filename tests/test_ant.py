import os

os.environ.setdefault("MUJOCO_GL", "egl")


import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import envs  # noqa: E402, F401
from envs.ant import (  # noqa: E402
    MAZE_ALWAYS_OPEN,
    MAZE_CELLS,
    MAZE_LAYOUTS,
    AntMazeEnv,
    AntObstacleEnv,
    AntTwoWalkEnv,
)
from tests.helpers import smoke_iterations  # noqa: E402

ENVS = [  # class, registered id, time limit, config name
    (AntTwoWalkEnv, "mlsh/AntTwoWalk-v0", 1000, "ant_two_walk"),
    (AntMazeEnv, "mlsh/AntMaze-v0", 1000, "ant_maze"),
    (AntObstacleEnv, "mlsh/AntObstacle-v0", 2000, "ant_obstacle"),
]
CLASSES = [e[0] for e in ENVS]


def place(env, xy, joints=None, z=None):
    """Put the ant's torso at ``xy`` at rest (upright unless ``joints``/``z`` say otherwise)."""
    qpos = env.init_qpos.copy()
    qpos[:2] = xy
    if z is not None:
        qpos[2] = z
    if joints is not None:
        qpos[7:] = joints
    env.set_state(qpos, np.zeros(env.model.nv))


# -- gymnasium API -----------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*(infinity|alternative render modes)")  # unbounded Box, as Ant-v5's
@pytest.mark.parametrize("cls,env_id,_,__", ENVS)
def test_check_env_passes(cls, env_id, _, __):
    check_env(cls(render_mode="rgb_array", width=64, height=64))  # includes the rgb_array render check
    # the registered env, without trying every declared render mode ("human" needs a display)
    check_env(gym.make(env_id).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("cls,env_id,limit,_", ENVS)
def test_registered_limit_observation_and_never_terminates(cls, env_id, limit, _):
    env = gym.make(env_id)
    assert env.spec.max_episode_steps == limit
    assert env.observation_space.shape == (29,) and env.action_space.shape == (8,)
    obs, info = env.reset(seed=0)
    u = env.unwrapped
    np.testing.assert_array_equal(obs, np.concatenate([u.data.qpos, u.data.qvel]))  # the ant's state only
    assert u.model.nq == 15 and u.model.nv == 14  # scenery adds no degrees of freedom
    assert u.dt == pytest.approx(0.05)  # Ant-v5's timestep 0.01 x frame_skip 5
    env.action_space.seed(0)
    for _ in range(30):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert not terminated and not truncated
    assert info["task"] == 0


@pytest.mark.parametrize("cls,steps", [(AntTwoWalkEnv, 100), (AntMazeEnv, 40), (AntObstacleEnv, 40)])
def test_robot_and_physics_are_ant_v5s(cls, steps):
    """Same state and controls, same trajectory as Ant-v5, bit for bit (until the ant touches scenery)."""
    env, base = cls(), gym.make("Ant-v5").unwrapped
    env.reset(seed=0)
    base.reset(seed=0)
    qpos = base.init_qpos + 0.05
    qpos[:2] = env.start
    env.set_state(qpos, np.zeros(14))
    base.set_state(qpos, np.zeros(14))
    for action in np.random.default_rng(0).uniform(-1, 1, size=(steps, 8)):
        env.do_simulation(action, env.frame_skip)
        base.do_simulation(action, base.frame_skip)
    np.testing.assert_array_equal(env.data.qpos, base.data.qpos)
    np.testing.assert_array_equal(env.data.qvel, base.data.qvel)


@pytest.mark.parametrize("env_id", [e[1] for e in ENVS])
def test_same_seed_same_actions_same_observations(env_id):
    rollouts = []
    for seed in (7, 7, 8):
        env = gym.make(env_id, posture_reset_interval=10) if "TwoWalk" not in env_id else gym.make(env_id)
        obs, _ = env.reset(seed=seed)
        actions = np.random.default_rng(0).uniform(-1, 1, size=(25, 8))
        rollouts.append(np.array([obs] + [env.step(a)[0] for a in actions]))
    np.testing.assert_array_equal(rollouts[0], rollouts[1])
    assert not np.allclose(rollouts[0][0], rollouts[2][0])


# -- task API ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES)
def test_sample_task_uses_the_callers_rng(cls):
    draws = [cls.sample_task(np.random.default_rng(s)) for s in range(60)]
    assert set(draws) == set(range(cls.n_tasks))
    assert draws == [cls.sample_task(np.random.default_rng(s)) for s in range(60)]


@pytest.mark.parametrize("cls", [AntTwoWalkEnv, AntMazeEnv])
def test_task_applies_from_next_reset_and_is_kept(cls):
    env = cls()
    last = cls.n_tasks - 1
    _, info = env.reset(seed=0, options={"task": last})
    assert info["task"] == last and env.task == last
    for _ in range(2):
        assert env.reset()[1]["task"] == last
        assert env.step(np.zeros(8))[-1]["task"] == last
    env.set_task(0)
    assert env.step(np.zeros(8))[-1]["task"] == last  # the running episode keeps its task
    assert env.reset()[1]["task"] == 0
    with pytest.raises(ValueError, match=rf"task must be one of \[0, .*{last}\], got {cls.n_tasks}"):
        env.set_task(cls.n_tasks)
    with pytest.raises(ValueError, match="must be one of"):
        env.reset(options={"task": 0.5})


def test_obstacle_has_a_single_task():
    assert AntObstacleEnv.sample_task(np.random.default_rng(3)) == 0
    with pytest.raises(ValueError, match=r"task must be one of \[0\], got 1"):
        AntObstacleEnv().set_task(1)


def test_reward_options_are_validated():
    with pytest.raises(ValueError, match="reference"):
        AntTwoWalkEnv(reward="dense")
    with pytest.raises(ValueError, match="sparse"):
        AntObstacleEnv(reward="shaped")


# -- Twowalk -----------------------------------------------------------------------------------------------------
def test_two_walk_goals_and_distance_reward():
    env = AntTwoWalkEnv()
    for task, goal in enumerate([(5.0, 0.0), (0.0, 5.0)]):
        env.reset(seed=0, options={"task": task})
        target = env.data.mocap_pos[env._target_mocap]
        np.testing.assert_allclose(target, [*goal, 1.0])
        np.testing.assert_allclose(env.data.geom("target_geom").xpos, [*goal, 1.0])
        rewards = {}
        for name, xy in [("goal", goal), ("start", (0.0, 0.0)), ("other", goal[::-1])]:
            place(env, xy)
            rewards[name] = env.step(np.zeros(8))[1]
        assert rewards["goal"] > rewards["start"] > rewards["other"]
        assert -np.sqrt(1.0) / 3000 < rewards["goal"] < 0  # within ~1 unit (the target floats 1 up)
        assert rewards["other"] == pytest.approx(-np.sqrt(np.hypot(5, 5)) / 3000, rel=0.03)
    assert env.model.geom("target_geom").contype == 0 and env.model.geom("target_geom").conaffinity == 0


def test_two_walk_progress_reward_and_goal_relative_observation():
    env = AntTwoWalkEnv(reward="progress", relative_to_goal=True)
    obs, _ = env.reset(seed=0, options={"task": 1})
    np.testing.assert_allclose(obs[:2], env.data.qpos[:2] - [0.0, 5.0])
    before = env.data.qpos[:2].copy()
    action = np.full(8, 0.5)
    _, reward, *_, info = env.step(action)
    after = env.data.qpos[:2]
    progress = (np.linalg.norm(before - [0, 5]) - np.linalg.norm(after - [0, 5])) / env.dt
    assert reward == pytest.approx(progress - 0.5 * 8 * 0.25)
    assert info["reward_ctrl"] == pytest.approx(-1.0)


# -- maze --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", range(len(MAZE_LAYOUTS)))
def test_each_maze_layout_opens_exactly_its_cells(task):
    env = AntMazeEnv()
    env.reset(seed=task, options={"task": task})
    open_cells, goal = MAZE_LAYOUTS[task]
    expected_open = {tuple(map(float, c)) for c in (*MAZE_ALWAYS_OPEN, *open_cells)}
    in_place = env.block_in_place()
    for i, cell in enumerate(MAZE_CELLS):
        geom = env.data.geom(f"block{i}_geom")
        if cell in expected_open:
            assert not in_place[i] and geom.xpos[2] + 5.0 <= 0.0  # entirely under the floor
        else:
            assert in_place[i]
            np.testing.assert_allclose(geom.xpos, [*cell, 5.0])
            np.testing.assert_allclose(env.model.geom(f"block{i}_geom").size, [7.6, 7.6, 5.0])
    np.testing.assert_allclose(env.goal, goal)
    np.testing.assert_allclose(env.data.geom("goal_geom").xpos, [*goal, 10.0])
    assert not any("block" in env.model.geom(c.geom[1]).name + env.model.geom(c.geom[0]).name
                   for c in env.data.contact[: env.data.ncon])  # the start cell is clear


def test_maze_blocks_stop_the_ant_and_open_cells_do_not():
    env = AntMazeEnv()
    env.reset(seed=0, options={"task": 4})  # (8,0), (24,0), (40,0) open; (8,16) closed
    place(env, (8.0, 7.8))  # the legs (reach 0.88) cross the face at y = 8.4 of the block at (8, 16)
    env.step(np.zeros(8))
    touching = {env.model.geom(g).name for c in env.data.contact[: env.data.ncon] for g in c.geom}
    assert "block0_geom" in touching  # MAZE_CELLS[0] = (8, 16)
    place(env, (24.0, 0.0))
    env.step(np.zeros(8))
    assert all("block" not in env.model.geom(g).name for c in env.data.contact[: env.data.ncon] for g in c.geom)


def test_maze_reward_is_velocity_toward_goal_minus_control_cost():
    env = AntMazeEnv()
    env.reset(seed=1, options={"task": 3})  # goal (24, -24)
    action = np.linspace(-1, 1, 8)
    for _ in range(5):
        before = env.data.qpos[:2].copy()
        _, reward, *_ = env.step(action)
        after = env.data.qpos[:2]
        toward = np.sign(np.array([24.0, -24.0]) - after) @ ((after - before) / env.dt)
        assert reward == pytest.approx(toward - 0.1 * float(action @ action))


def test_posture_is_reset_upright_every_200_steps_keeping_x_y():
    env = AntMazeEnv()
    env.reset(seed=0, options={"task": 6})
    for _ in range(199):
        env.step(np.zeros(8))
    bent = np.array([0.4, 1.0, 0.4, -1.0, 0.4, -1.0, 0.4, 1.0])  # hip, ankle of each leg, within their ranges
    place(env, (5.0, 1.0), joints=bent, z=0.4)  # crouched just before step 200
    env.step(np.zeros(8))
    q = env.data.qpos
    assert np.allclose(q[:2], (5.0, 1.0), atol=0.2)
    assert 0.65 <= q[2] <= 0.85 and np.abs(q[3:7] - [1, 0, 0, 0]).max() <= 0.1 and np.abs(q[7:]).max() <= 0.1
    place(env, (5.0, 1.0), joints=bent, z=0.4)
    env.step(np.zeros(8))  # step 201: no reset
    assert np.abs(env.data.qpos[7:]).max() > 0.5


# -- obstacle course ---------------------------------------------------------------------------------------------
def test_monster_moves_toward_the_ant_only_inside_its_zone():
    env = AntObstacleEnv()
    env.reset(seed=0)
    np.testing.assert_allclose(env.monster_xy(), [0.0, 20.0])
    place(env, (20.0, 2.0))  # 27 from the zone centre (0, 20): outside
    for _ in range(3):
        env.step(np.zeros(8))
    np.testing.assert_allclose(env.monster_xy(), [0.0, 20.0])
    place(env, (6.0, 10.0))  # 11.7 from the centre: inside
    env.step(np.zeros(8))
    np.testing.assert_allclose(env.monster_xy(), [1.0, 19.0])  # one unit per axis toward the ant
    env.step(np.zeros(8))
    np.testing.assert_allclose(env.monster_xy(), [2.0, 18.0])
    place(env, (25.0, 2.0))  # outside again: the monster stays where it is
    env.step(np.zeros(8))
    np.testing.assert_allclose(env.monster_xy(), [2.0, 18.0])
    env.reset()
    np.testing.assert_allclose(env.monster_xy(), [0.0, 20.0])


def test_monster_knocks_the_ant_back():
    env = AntObstacleEnv()
    env.reset(seed=0)
    place(env, (0.0, 14.5))  # the monster (radius 3) closes in from (0, 20)
    for _ in range(6):
        env.step(np.zeros(8))
    assert env.data.qpos[1] < 12.0  # pushed back by more than 2.5 units
    assert np.hypot(*env.data.qvel[:2]) > 5.0


def test_sparse_goal_pays_only_inside_its_radius():
    env = AntObstacleEnv()
    assert env.goal_radius == pytest.approx(np.sqrt(30.0))
    env.reset(seed=0)
    rewards = {}
    for xy in [(34.0, 36.0), (36.0, 34.5), (31.0, 36.0), (0.0, 0.0)]:  # 4.5 and 4.0 away; 7.3 and 54 away
        place(env, xy)
        rewards[xy] = env.step(np.zeros(8))[1]
    assert list(rewards.values()) == [1.0, 1.0, 0.0, 0.0]
    small = AntObstacleEnv(goal_radius=2.0)
    small.reset(seed=0)
    place(small, (36.5, 38.0))
    assert small.step(np.zeros(8))[1] == 1.0
    place(small, (35.0, 38.0))
    assert small.step(np.zeros(8))[1] == 0.0


def test_dense_reward_is_the_originals():
    env = AntObstacleEnv(reward="dense")
    env.reset(seed=0)
    place(env, (10.0, 20.0))
    reward = env.step(np.zeros(8))[1]
    x, y = env.data.qpos[:2]
    assert reward == pytest.approx(-((2 * (x - 50) + 2 * (y - 50)) ** 2) / 1e5)
    assert reward == pytest.approx(-(2 * -40 + 2 * -30) ** 2 / 1e5, rel=0.01)


def test_obstacle_walls_and_zone_match_the_reference():
    env = AntObstacleEnv()
    wall = env.model.geom("wall5_geom")  # x = 30 over y in [-5, 25]
    np.testing.assert_allclose(env.model.body("wall5").pos, [30.0, 10.0, 5.0])
    np.testing.assert_allclose(wall.size, [0.3, 15.3, 5.0])
    zone = env.model.geom("enemy_zone")
    assert zone.size[0] == 15.0 and zone.contype == 0 and zone.conaffinity == 0
    assert env.model.geom("monster_geom").conaffinity == 1


# -- rendering ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES)
def test_renders_rgb_frame(cls):
    env = cls(render_mode="rgb_array", width=96, height=80)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (80, 96, 3) and frame.dtype == np.uint8
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 10


# -- MLSH smoke run ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [e[3] for e in ENVS])
def test_mlsh_smoke_run(name, tmp_path):
    # the end-of-run video capped at 100 steps: a whole episode (1000-2000 steps) costs 15-20 s of rendering
    iters = smoke_iterations(tmp_path / "run", f"env={name}", "schedule.rollout_steps=400", "media.video_steps=100")
    assert [r["global_step"] for r in iters] == [400, 800, 1200, 1600]  # 2 tasks x (1 warmup + 1 joint)
    from PIL import Image

    assert Image.open(tmp_path / "run" / "video.gif").n_frames == 20  # a frame every 5 steps (the env file's)
