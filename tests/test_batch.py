"""Batched MuJoCo envs (envs/batch.py) against the per-env stack they stand in for: DummyVecEnv (mlsh's TaskVecEnv)
over gym.make envs with TimeLimit and Monitor, the same seeds and actions."""

import pickle

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401
from envs.batch import BatchInfos, MujocoBatchVecEnv
from mlsh.config import ConfigError, validate
from mlsh.groups import TaskVecEnv
from tests.helpers import smoke_iterations

# (env id, kwargs): short episodes so that every case crosses episode ends; posture resets every 7 steps where
# the env has them; the obstacle course's monster zone moved onto the start, so that the monster moves
CASES = {
    "two_walk": ("mlsh/AntTwoWalk-v0", {"max_episode_steps": 50}),
    "two_walk_progress": ("mlsh/AntTwoWalk-v0", {"max_episode_steps": 50, "reward": "progress",
                                                 "relative_to_goal": True}),
    "maze": ("mlsh/AntMaze-v0", {"max_episode_steps": 50, "posture_reset_interval": 7}),
    "obstacle": ("mlsh/AntObstacle-v0", {"max_episode_steps": 60, "posture_reset_interval": 7,
                                         "zone_center": (0.0, 2.0), "zone_radius": 5.0}),
    "obstacle_dense": ("mlsh/AntObstacle-v0", {"max_episode_steps": 60, "reward": "dense"}),
    "walk_crawl": ("mlsh/HumanoidWalkCrawl-v0", {"max_episode_steps": 60}),
    "walk_crawl_backward": ("mlsh/HumanoidWalkCrawl-v0", {"max_episode_steps": 60, "crawl_direction": -1}),
    "course": ("mlsh/HumanoidCourse-v0", {"max_episode_steps": 60, "course_switch_x": 0.05}),
}


def _pair(env_id, kwargs, n=4, seed=3):
    ref = make_vec_env(env_id, n_envs=n, seed=seed, env_kwargs=kwargs, vec_env_cls=TaskVecEnv)
    batch = MujocoBatchVecEnv(env_id, n, env_kwargs=kwargs)
    batch.seed(seed)
    return ref, batch


def _comparable(info: dict) -> dict:
    out = dict(info)
    if "episode" in out:
        out["episode"] = {k: v for k, v in out["episode"].items() if k != "t"}  # wall time
    return out


def _assert_same_info(a: dict, b: dict, where: str) -> None:
    a, b = _comparable(a), _comparable(b)
    assert a.keys() == b.keys(), where
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{where}: info[{key!r}]")


@pytest.mark.parametrize("case", list(CASES))
def test_batched_and_per_env_give_identical_transitions(case):
    env_id, kwargs = CASES[case]
    ref, batch = _pair(env_id, kwargs)
    np.testing.assert_array_equal(ref.reset(), batch.reset())
    for i in range(4):
        _assert_same_info(ref.reset_infos[i], batch.reset_infos[i], f"reset info {i}")
    n_tasks = ref.get_attr("n_tasks")[0]
    rng = np.random.default_rng(0)
    done_steps, tasks_seen, monster_moved = 0, set(), False
    for t in range(130):
        if t == 30:  # a task group's new task: envs 1 and 2 reset with another task
            new = {"task": (ref.reset_infos[1]["task"] + 1) % n_tasks}
            np.testing.assert_array_equal(ref.reset_envs([1, 2], new), batch.reset_envs([1, 2], new))
        actions = rng.uniform(-1.2, 1.2, (4, *ref.action_space.shape)).astype(np.float32)
        obs, rewards, dones, infos = ref.step(actions)
        b_obs, b_rewards, b_dones, b_infos = batch.step(actions)
        np.testing.assert_array_equal(obs, b_obs, err_msg=f"step {t}: observations")
        assert rewards.dtype == b_rewards.dtype == np.float32
        np.testing.assert_array_equal(rewards, b_rewards, err_msg=f"step {t}: rewards")
        np.testing.assert_array_equal(dones, b_dones, err_msg=f"step {t}: dones")
        for i in range(4):
            _assert_same_info(infos[i], b_infos[i], f"step {t}, env {i}")
            tasks_seen.add(infos[i]["task"])
        done_steps += int(dones.any())
        if "obstacle" in case:
            monster = batch.mocap_pos[:, batch.template._monster_mocap, :2]
            monster_moved |= bool(np.any(monster != batch.template.zone_center))
    assert done_steps >= 2  # episodes ended (time limits, or falls) and the envs were reset
    assert tasks_seen == set(range(min(n_tasks, 2)))
    if case == "obstacle":
        assert monster_moved


def test_batch_state_round_trip_continues_exactly():
    env_id, kwargs = CASES["obstacle"]
    batch = MujocoBatchVecEnv(env_id, 3, env_kwargs=kwargs)
    batch.seed(0)
    batch.reset()
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (80, 3, 8)).astype(np.float32)
    for a in actions[:25]:
        batch.step(a)
    saved = pickle.loads(pickle.dumps(batch.get_state()))
    first = [batch.step(a)[:3] for a in actions[25:]]  # crosses a posture reset and an episode end
    other = MujocoBatchVecEnv(env_id, 3, env_kwargs=kwargs)
    other.set_state(saved)
    again = [other.step(a)[:3] for a in actions[25:]]
    for x, y in zip(first, again, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)


def test_batch_infos_are_built_on_access_kept_and_sliced():
    infos = BatchInfos({"task": np.array([0, 1, 1]), "x": np.array([0.5, 1.5, 2.5])}, {2: {"extra": 7}}, 3)
    assert len(infos) == 3 and infos[1] == {"task": 1, "x": 1.5} and type(infos[1]["task"]) is int
    infos[2]["extra"] = 8  # a wrapper writes into an info (VecNormalize does, into terminal_observation)
    tail = infos[1:]
    assert len(tail) == 2 and tail[1] == {"task": 1, "x": 2.5, "extra": 8}
    assert [i["task"] for i in infos] == [0, 1, 1]


def test_bad_task_and_unsupported_calls_are_named():
    batch = MujocoBatchVecEnv("mlsh/AntTwoWalk-v0", 2)
    with pytest.raises(ValueError, match="task must be one of"):
        batch.reset_envs([0], {"task": 5})
    with pytest.raises(ValueError, match="task must be one of"):
        batch.env_method("set_task", 2, indices=[1])
    batch.env_method("set_task", 1, indices=[1])
    batch.reset()
    assert batch.get_attr("task") == [0, 1]
    with pytest.raises(AttributeError, match="sim.get_data"):
        batch.get_attr("data")
    with pytest.raises(AttributeError, match="env_method"):
        batch.env_method("render")
    with pytest.raises(ValueError, match="no batched implementation"):
        MujocoBatchVecEnv("mlsh/FourRooms-v0", 2)
    with pytest.raises(ValueError, match="batch_threads"):
        MujocoBatchVecEnv("mlsh/AntTwoWalk-v0", 2, nthread=0)


def test_config_refuses_batched_for_an_env_without_a_batch(compose):
    with pytest.raises(ConfigError, match="no batched implementation"):
        validate(compose("env=four_rooms", "+env.batched=true"))
    with pytest.raises(ConfigError, match="env.batched must be true or false"):
        validate(compose("env=ant_two_walk", "env.batched=yes"))
    with pytest.raises(ConfigError, match="env.batch_threads"):
        validate(compose("env=ant_two_walk", "env.batch_threads=0"))


SMALL_ANT = ["env=ant_two_walk", "macro_duration=20", "env.episode_steps=100", "+env.kwargs.max_episode_steps=100",
             "schedule.rollout_steps=400", "schedule.n_groups=2", "schedule.stagger=wrapped", "schedule.n_tasks=4",
             "media.maps_every=0", "media.video=false"]


def test_a_run_is_the_same_batched_or_not(tmp_path):
    """Same seed, two task groups, MLSH on AntTwoWalk: every metric and every sub-policy weight identical."""
    from stable_baselines3.common.save_util import load_from_zip_file

    timing = ("time", "second", "minute", "per_s", "fps")
    runs = {}
    for batched in ("true", "false"):
        run_dir = tmp_path / f"batched_{batched}"
        rows = smoke_iterations(run_dir, *SMALL_ANT, f"env.batched={batched}")
        last = sorted((run_dir / "checkpoints").glob("task_*"))[-1]
        params = [load_from_zip_file(last / f"sub{k}.zip")[1]["policy"] for k in range(2)]
        runs[batched] = ([{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in rows], params)
    (rows_a, params_a), (rows_b, params_b) = runs["true"], runs["false"]
    assert len(rows_a) >= 4 and rows_a == rows_b
    for a, b in zip(params_a, params_b, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].equal(b[name]), name


def test_a_batched_run_killed_at_random_and_resumed_is_identical(tmp_path):
    """The batch's state (every simulation's state row, generator, task and time step) is in the checkpoint."""
    from tests.test_reliability import assert_same_run, finish, resume, start, wait_for_rows

    small = [*SMALL_ANT, "schedule.n_tasks=10"]
    code, out = finish(start(tmp_path / "full", *small))
    assert code == 0, out[-3000:]
    proc = start(tmp_path / "cut", *small)
    wait_for_rows(tmp_path / "cut", 11, proc)  # inside the fourth task
    proc.kill()
    proc.communicate()
    resume(tmp_path / "cut")
    assert_same_run(tmp_path / "full", tmp_path / "cut")


def test_speed_benchmark_times_the_staggered_steady_state():
    """mujoco_speed's end-to-end iterations: every group joint U / (W + U) of one cycle, at its stagger's phase."""
    from mlsh.benchmarks.mujoco_speed import layout_overrides, steady_state

    for groups in (1, 2, 4):
        pattern = steady_state(groups, 20, 40, "wrapped", 60)
        assert len(pattern) == 60 and all(len(joint) == groups for joint in pattern)
        assert [sum(col) for col in zip(*pattern, strict=True)] == [40] * groups
    assert steady_state(2, 20, 40, "wrapped", 6) == [[False, True], [False, True], [True, True],
                                                     [True, False], [True, False], [True, True]]
    assert layout_overrides("4x10") == ["schedule.n_groups=4", "schedule.n_envs=10"]
    assert layout_overrides("config") == []
    with pytest.raises(SystemExit, match="4by10"):
        layout_overrides("4by10")


def test_speed_benchmark_runs_the_end_to_end_loop_in_two_processes(capsys, monkeypatch):
    from mlsh.benchmarks import mujoco_speed
    from mlsh.benchmarks.mujoco_speed import main

    with pytest.raises(SystemExit, match="--layouts 2x4 of ant_two_walk with --procs 3: schedule.n_groups=2 task "
                                         "groups cannot be spread evenly over 3 processes"):
        main(["--envs", "--layouts", "2x4", "--procs", "1", "3"])
    with pytest.raises(SystemExit, match="--procs 0: give 1 or more processes"):
        main(["--envs", "--layouts", "2x4", "--procs", "0", "1"])
    results, e2e_procs = [], mujoco_speed.e2e_procs
    monkeypatch.setattr(mujoco_speed, "e2e_procs", lambda *a: results.append(e2e_procs(*a)) or results[-1])
    main(["--envs", "--iters", "2", "--layouts", "2x4", "--procs", "1", "2", "--e2e-env", "ant_maze",
          "--variants", "batched, 1 thread, 15 minibatches"])
    out = capsys.readouterr().out
    assert "MLSH meta-training on ant_maze" in out
    assert [(r["env"], r["procs"]) for r in results] == [("ant_maze", 1), ("ant_maze", 2)]  # torchrun's workers too
    rows = [line.split() for line in out.splitlines() if line.startswith("batched, 1 thread")]
    assert [row[5:8] for row in rows] == [["1", "2x4", "32,000"], ["2", "2x4", "32,000"]]  # P, layout, steps
    assert all(float(row[8].replace(",", "")) > 0 and 0 < float(row[-1]) < 1 for row in rows)


def test_speed_benchmark_repeats_each_row_against_the_base_env_timed_around_it(capsys, monkeypatch):
    from mlsh.benchmarks import mujoco_speed
    from mlsh.benchmarks.mujoco_speed import main

    with pytest.raises(SystemExit, match="--layouts 4x3 of ant_two_walk with --procs 1: schedule.rollout_steps"):
        main(["--envs", "--layouts", "4x3"])
    with pytest.raises(SystemExit, match="--layouts 4x16 of humanoid_walk_crawl .* multiple of macro_duration"):
        main(["--envs", "--layouts", "4x16", "--e2e-env", "humanoid_walk_crawl"])
    with pytest.raises(SystemExit, match="--layouts 2x10, the env file's of humanoid_walk_crawl with --procs 3: "
                                         "schedule.n_groups=2 task groups cannot be spread evenly"):
        main(["--envs", "--procs", "3", "--e2e-env", "humanoid_walk_crawl"])
    with pytest.raises(SystemExit):
        main(["--envs", "--variants", "batched"])
    assert "give one of per-env-64, batched-64, batched-15, batched2-15" in capsys.readouterr().err

    base_rates = iter([1000, 3000, 2000, 2000, 4000, 1000])  # the base env's turns: before and after each row
    row_rates = iter([3000, 5000, 4000])

    class Base:  # the base env, as fast as the next rate: only the turns right around a row count for its ratio
        def __init__(self, name, env_id):
            self.env_id, self.steps, self.seconds = env_id, 0, 0.0

        def run(self, n):
            self.steps, self.seconds = self.steps + n, self.seconds + n / next(base_rates)

    calls = []

    def e2e(procs, overrides, iters, env):
        calls.append((procs, overrides, env))
        return {"steps": 8000, "steps_per_second": next(row_rates), "subs_share": 0.1, "layout": "2x10"}

    monkeypatch.setattr(mujoco_speed, "_Gym", Base)
    monkeypatch.setattr(mujoco_speed, "e2e_procs", e2e)
    main(["--envs", "--layouts", "config", "--repeats", "3", "--e2e-env", "humanoid_walk_crawl",
          "--variants", "batched-15", "batched, 1 thread, 15 minibatches"])  # one variant, by key and by name
    out = capsys.readouterr().out
    assert "MLSH meta-training on humanoid_walk_crawl" in out and "Humanoid-v5" in out
    assert calls == [(1, ["env.batch_threads=1", "algo.subpolicy.minibatches=15"], "humanoid_walk_crawl")] * 3
    rows = [line.split() for line in out.splitlines() if line.startswith("batched, 1 thread")]
    assert len(rows) == 4  # three runs, then the summary row
    # base rate of a row: 16000 steps over its two turns' time, e.g. 16000 / (8000/1000 + 8000/3000) = 1500
    assert [(row[9], row[10]) for row in rows[:3]] == [("1,500", "2.00"), ("2,000", "2.50"), ("1,600", "2.50")]
    assert rows[3][5:10] == ["1", "2x10", "2.50", "2.00", "2.50"]  # P, layout, median, lowest, highest


def test_speed_benchmark_times_the_physics_alone_beside_the_envs():
    from mlsh.benchmarks.mujoco_speed import _Physics, env_rates

    runners = env_rates("ant_two_walk", steps=8, rounds=2, n=2)
    assert [r.name for r in runners][-1] == "mj_step only, 2 MjData, no env"
    assert all(r.steps == 8 and r.rate() > 0 for r in runners)
    physics = _Physics("physics", "mlsh/AntTwoWalk-v0", n=3)
    start = [d.qpos.copy() for d in physics.data]
    physics.run(6)  # 2 steps of each MjData, frame_skip substeps each
    dt = physics.model.opt.timestep
    assert [d.time for d in physics.data] == pytest.approx([2 * physics.frame_skip * dt] * 3)
    assert all(not np.array_equal(d.qpos, q) for d, q in zip(physics.data, start, strict=True))
    assert all(np.all(np.abs(d.ctrl) <= 1) and np.any(d.ctrl != 0) for d in physics.data)
    assert physics.healthy_z is None and physics.resets == 0  # the ant's episodes do not end on a fall
    humanoid = _Physics("physics", "mlsh/HumanoidWalkCrawl-v0", n=2)
    assert humanoid.healthy_z == (1.0, float("inf"))
    humanoid.run(200)  # random torques: it falls within 100 steps, and starts again where its episode would end
    assert humanoid.resets > 0 and all(d.qpos[2] >= 1.0 for d in humanoid.data)
