import os

os.environ.setdefault("MUJOCO_GL", "egl")


import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import envs  # noqa: E402, F401
from envs.humanoid import CRAWL, HUMANOID_XML, WALK, HumanoidCourseEnv, HumanoidWalkCrawlEnv  # noqa: E402
from tests.helpers import smoke_iterations  # noqa: E402

IDS = {HumanoidWalkCrawlEnv: "mlsh/HumanoidWalkCrawl-v0", HumanoidCourseEnv: "mlsh/HumanoidCourse-v0"}
EVERY_TASK = [(HumanoidWalkCrawlEnv, CRAWL), (HumanoidWalkCrawlEnv, WALK), (HumanoidCourseEnv, 0)]


def actions(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.4, 0.4, size=(n, 17)).astype(np.float32)


def slab_contacts(env):
    """Signed distances (negative = penetration) of the contacts that involve the slab."""
    slab = env.model.geom("slab").id
    return [c.dist for c in env.data.contact[: env.data.ncon] if slab in (c.geom1, c.geom2)]


def place(env, x=0.0, z=None, lying=False, vx=0.0):
    """Put the humanoid at root x (and z), upright or lying face down, with root x velocity ``vx``."""
    qpos, qvel = env.init_qpos.copy(), env.init_qvel.copy()
    qpos[0] = x
    if lying:
        qpos[2] = 0.2
        qpos[3:7] = [np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0]  # 90 degrees about y
    if z is not None:
        qpos[2] = z
    qvel[0] = vx
    env.set_state(qpos, qvel)


@pytest.mark.parametrize("cls", [HumanoidWalkCrawlEnv, HumanoidCourseEnv])
def test_check_env_passes_and_time_limits_are_registered(cls):
    check_env(cls(render_mode="rgb_array"), skip_render_check=False)
    env = gym.make(IDS[cls])
    check_env(env.unwrapped, skip_render_check=True)  # "human" mode needs a display
    assert env.spec.max_episode_steps == (1000 if cls is HumanoidWalkCrawlEnv else 3000)
    assert env.observation_space.shape == (348,) and env.action_space.shape == (17,)


def test_model_is_gymnasiums_humanoid_plus_a_mocap_slab():
    assert HUMANOID_XML.is_file() and HUMANOID_XML.parent.parent.name == "mujoco"
    env = HumanoidWalkCrawlEnv()
    v5 = gym.make("Humanoid-v5").unwrapped
    assert (env.model.nq, env.model.nv, env.model.nu) == (v5.model.nq, v5.model.nv, v5.model.nu) == (24, 23, 17)
    assert env.model.nbody == v5.model.nbody + 1 and env.model.nmocap == 1
    np.testing.assert_allclose(env.model.geom("slab").size, [11.5, 11.5, 0.5])
    assert env.dt == pytest.approx(0.015) and env.model.opt.timestep == pytest.approx(0.003)


@pytest.mark.parametrize("cls,task", EVERY_TASK)
def test_same_seed_and_actions_give_the_same_observations(cls, task):
    def rollout(seed):
        env = cls()
        obs, _ = env.reset(seed=seed, options={"task": task})
        out = [obs]
        for a in actions(30):
            obs, _, terminated, _, _ = env.step(a)
            out.append(obs)
            if terminated:
                break
        return np.array(out)

    a, b = rollout(7), rollout(7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], rollout(8)[0])  # the reset noise comes from the seeded RNG


def test_walk_task_slab_is_out_of_the_way_and_matches_humanoid_v5():
    env, v5 = HumanoidWalkCrawlEnv(), gym.make("Humanoid-v5").unwrapped
    obs, info = env.reset(seed=3, options={"task": WALK})
    assert info["task"] == WALK
    np.testing.assert_array_equal(obs, v5.reset(seed=3)[0])
    lo_y = env.data.geom("slab").xpos[1] - 11.5
    assert lo_y >= 18.0  # the slab is moved 30 m sideways
    contacts = 0
    for a in actions(200, seed=1):
        obs, reward, terminated, _, info = env.step(a)
        obs5, reward5, terminated5, _, info5 = v5.step(a)
        # same physics and the same observation layout; cfrc_ext (the last 78) is computed within the step
        np.testing.assert_array_equal(obs[:-78], obs5[:-78])
        contacts += bool(np.any(obs[-78:]))
        assert terminated == terminated5
        assert not slab_contacts(env)
        if terminated:
            break
        # 0.25 dx/0.003 = Humanoid-v5's 1.25 dx/dt; the contact cost reads cfrc_ext
        assert reward - info["reward_contact"] == pytest.approx(reward5 - info5["reward_contact"], rel=1e-9, abs=1e-9)
    assert contacts > 0


def test_cfrc_ext_is_that_of_the_state_before_the_last_substep():
    """What the step computes (the torso accelerometer makes MuJoCo run mj_rnePostConstraint in it): the contact
    forces of mj_forward at the state before the last substep."""
    import mujoco

    env = HumanoidWalkCrawlEnv()
    env.reset(seed=0, options={"task": CRAWL})
    probe = mujoco.MjData(env.model)
    seen = 0
    for a in actions(40, seed=2):
        mujoco.mj_copyData(probe, env.model, env.data)
        probe.ctrl[:] = a
        mujoco.mj_step(env.model, probe, nstep=env.frame_skip - 1)
        mujoco.mj_forward(env.model, probe)
        mujoco.mj_rnePostConstraint(env.model, probe)
        env.step(a)
        np.testing.assert_array_equal(env.data.cfrc_ext, probe.cfrc_ext)
        seen += bool(np.any(probe.cfrc_ext))
    assert seen > 10  # contact forces were there to compare


def test_slab_stops_a_standing_humanoid():
    env = HumanoidWalkCrawlEnv()
    env.reset(seed=0, options={"task": CRAWL})
    assert env.slab_x == (0.5, 23.5)
    np.testing.assert_allclose(env.data.geom("slab").xpos, [12.0, 0.0, 1.5])  # underside at z = 1.0
    place(env, x=3.0)  # standing height under the slab's x-range: the head and torso are inside it
    dists = slab_contacts(env)
    assert len(dists) >= 3 and min(dists) < -0.3
    env.reset(seed=0)
    place(env, x=0.0, vx=3.0)  # run into the slab's edge at 3 m/s
    xs, zs, touched = [], [], 0
    for _ in range(60):
        env.step(np.zeros(17))
        xs.append(env.data.qpos[0])
        zs.append(env.data.qpos[2])
        touched += len(slab_contacts(env))
    assert touched > 0
    assert max(x for x, z in zip(xs, zs, strict=True) if z >= 1.0) < 0.5  # never upright past the slab's start


def test_lying_humanoid_fits_under_the_slab():
    env = HumanoidWalkCrawlEnv()
    env.reset(seed=0, options={"task": CRAWL})
    place(env, x=3.0, lying=True)
    assert not slab_contacts(env)
    for _ in range(100):
        _, _, terminated, _, _ = env.step(np.zeros(17))
        assert not slab_contacts(env) and not terminated  # crawl never terminates
    assert 2.5 < env.data.qpos[0] < 3.5 and env.data.qpos[2] < 0.4


def test_observation_layout_is_identical_in_walk_crawl_and_course():
    wc, course = HumanoidWalkCrawlEnv(), HumanoidCourseEnv()
    assert wc.observation_space == course.observation_space
    assert wc.observation_structure == course.observation_structure
    obs_wc, _ = wc.reset(seed=5, options={"task": WALK})
    obs_c, info = course.reset(seed=5)
    assert info["mode"] == WALK
    for a in actions(15, seed=2):
        np.testing.assert_array_equal(obs_wc, obs_c)
        assert obs_wc[0] == wc.data.qpos[2] and obs_c[0] == course.data.qpos[2]  # index 0 is root z in both
        obs_wc, r_wc, *_ = wc.step(a)
        obs_c, r_c, *_ = course.step(a)
        assert r_wc == r_c
    for env in (wc, course):  # the root's x, y are not observed: the same posture elsewhere looks the same
        place(env, x=10.0)
        far = env._get_obs()
        place(env, x=0.0)
        np.testing.assert_allclose(far, env._get_obs(), rtol=0, atol=1e-9)


def test_walk_reward_pays_forward_motion_and_terminates_below_the_healthy_height():
    env = HumanoidWalkCrawlEnv()
    env.reset(seed=0, options={"task": WALK})
    forward = {}
    for vx in (1.0, -1.0):
        place(env, vx=vx)
        _, reward, terminated, _, info = env.step(np.zeros(17))
        assert not terminated and info["reward_survive"] == 5.0
        assert info["reward_forward"] == pytest.approx(0.25 * 5 * info["x_velocity"])
        assert reward == pytest.approx(5.0 + info["reward_forward"] + info["reward_ctrl"] + info["reward_contact"])
        forward[vx] = info["reward_forward"]
    assert forward[1.0] > 0.5 and forward[-1.0] < -0.5
    place(env, z=0.9)
    _, reward, terminated, _, info = env.step(np.zeros(17))
    assert terminated and info["reward_survive"] == 0.0 and info["reward_forward"] == 0.0 and reward <= 0.0
    low = HumanoidWalkCrawlEnv(healthy_z_range=(0.5, 2.0))
    low.reset(seed=0, options={"task": WALK})
    place(low, z=0.9)
    assert not low.step(np.zeros(17))[2]


@pytest.mark.parametrize("direction", [1, -1])
def test_crawl_reward_pays_motion_in_crawl_direction_toward_the_slab(direction):
    env = HumanoidWalkCrawlEnv(crawl_direction=direction)
    env.reset(seed=0, options={"task": CRAWL})
    assert env.slab_x == ((0.5, 23.5) if direction == 1 else (-23.5, -0.5))
    place(env, lying=True, vx=direction * 1.0)
    _, reward, terminated, _, info = env.step(np.zeros(17))
    assert not terminated and info["reward_survive"] == 0.0
    assert info["reward_forward"] == pytest.approx(1.5 * 5 * direction * info["x_velocity"])
    assert info["reward_forward"] > 1
    with pytest.raises(ValueError, match="crawl_direction must be 1"):
        HumanoidWalkCrawlEnv(crawl_direction=0)


def test_course_walks_then_switches_to_crawl_past_the_slab_start():
    env = HumanoidCourseEnv()
    _, info = env.reset(seed=0)
    assert info == {"task": 0, "mode": WALK, "x_position": pytest.approx(0.0, abs=0.02)}
    assert env.slab_x == (25.5, 48.5)  # switch at x = 25, slab 0.5 m further, as the crawl task's start
    _, _, terminated, _, info = env.step(np.zeros(17))
    assert info["mode"] == WALK and info["reward_survive"] == 5.0
    place(env, x=24.0, vx=1.0)  # upright, before the switch: still walking
    assert env.step(np.zeros(17))[4]["mode"] == WALK
    place(env, x=25.2, lying=True, vx=1.0)  # past the switch, lying: crawl mode, forward pays, no termination
    _, _, terminated, _, info = env.step(np.zeros(17))
    assert info["mode"] == CRAWL and not terminated and info["reward_survive"] == 0.0
    assert info["reward_forward"] == pytest.approx(1.5 * 5 * info["x_velocity"]) and info["reward_forward"] > 1
    place(env, x=0.0, lying=True)  # crawl mode lasts for the rest of the episode
    assert env.step(np.zeros(17))[4]["mode"] == CRAWL
    assert env.reset()[1]["mode"] == WALK


def test_course_walk_mode_terminates_below_the_healthy_height():
    env = HumanoidCourseEnv()
    env.reset(seed=0)
    place(env, z=0.9)
    _, _, terminated, _, info = env.step(np.zeros(17))
    assert terminated and info["mode"] == WALK


def test_task_is_applied_at_reset_kept_across_episodes_and_reported():
    env = HumanoidWalkCrawlEnv()
    assert env.reset(seed=0)[1]["task"] == WALK  # before any task is set: walk, i.e. Humanoid-v5
    _, info = env.reset(seed=0, options={"task": CRAWL})
    assert info["task"] == CRAWL and env.data.mocap_pos[0, 1] == 0.0
    env.set_task(WALK)  # applies from the next reset: this episode stays a crawl
    _, _, _, _, info = env.step(np.zeros(17))
    assert info["task"] == CRAWL and env.data.mocap_pos[0, 1] == 0.0
    for _ in range(2):
        _, info = env.reset()
        assert info["task"] == WALK and env.data.mocap_pos[0, 1] == 30.0
        assert env.step(np.zeros(17))[4]["task"] == WALK
    with pytest.raises(ValueError, match="task must be 0 or 1"):
        env.set_task(2)
    with pytest.raises(ValueError, match="task must be 0 or 1"):
        env.reset(options={"task": 0.5})
    with pytest.raises(ValueError, match="HumanoidCourseEnv task must be 0, got 1"):
        HumanoidCourseEnv().set_task(1)


def test_sample_task_uses_the_callers_rng():
    draws = [HumanoidWalkCrawlEnv.sample_task(np.random.default_rng(s)) for s in range(40)]
    assert set(draws) == {CRAWL, WALK}
    assert draws == [HumanoidWalkCrawlEnv.sample_task(np.random.default_rng(s)) for s in range(40)]
    assert {HumanoidCourseEnv.sample_task(np.random.default_rng(s)) for s in range(10)} == {0}


@pytest.mark.parametrize("cls,task", EVERY_TASK)
def test_renders_rgb_frame(cls, task):
    env = cls(render_mode="rgb_array", width=96, height=64)
    env.reset(seed=0, options={"task": task})
    env.step(np.zeros(17))
    frame = env.render()
    env.close()
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 50


@pytest.mark.parametrize("name", ["humanoid_walk_crawl", "humanoid_course"])
def test_mlsh_smoke_run(name, tmp_path):
    iters = smoke_iterations(tmp_path / "run", f"env={name}", "schedule.rollout_steps=400")
    assert [r["global_step"] for r in iters] == [400, 800, 1200, 1600]  # 2 tasks x (1 warmup + 1 joint)
