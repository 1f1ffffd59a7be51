import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401
from envs.four_rooms import (
    CELL_INDEX,
    CELLS,
    FREE_NEIGHBOURS,
    HALLWAYS,
    N_CELLS,
    WALLS,
    FourRoomsEnv,
    goal_distances,
    oracle_action,
)
from tests.helpers import smoke_iterations

UP, DOWN, LEFT, RIGHT = range(4)
OFFSETS = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}


def at(env: FourRoomsEnv, rc: tuple[int, int]) -> None:
    env.cell = CELL_INDEX[rc]


def test_check_env_passes():
    check_env(FourRoomsEnv(render_mode="rgb_array"), skip_render_check=False)
    check_env(FourRoomsEnv(start=None, transition="original"))
    check_env(gym.make("mlsh/FourRooms-v0", render_mode="rgb_array").unwrapped, skip_render_check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker warns that the env is wrapped
        check_env(gym.make("mlsh/FourRooms-v0"))


def test_registered_with_100_step_limit():
    env = gym.make("mlsh/FourRooms-v0")
    env.reset(seed=0)
    for t in range(100):
        _, _, terminated, truncated, _ = env.step(t % 4)
        assert not terminated
        assert truncated == (t == 99)


def test_map_has_104_free_cells_numbered_row_major_and_four_hallways():
    assert WALLS.shape == (13, 13) and N_CELLS == 104 and int((~WALLS).sum()) == 104
    assert WALLS[0].all() and WALLS[-1].all() and WALLS[:, 0].all() and WALLS[:, -1].all()
    assert [tuple(rc) for rc in CELLS] == sorted(tuple(rc) for rc in CELLS)  # row-major
    assert CELL_INDEX[(1, 1)] == 0 and CELL_INDEX[(7, 9)] == 62 and CELL_INDEX[(11, 11)] == 103
    assert HALLWAYS == ((3, 6), (6, 2), (7, 9), (10, 6))
    for r, c in HALLWAYS:
        assert not WALLS[r, c] and len(FREE_NEIGHBOURS[CELL_INDEX[(r, c)]]) == 2  # a one-cell doorway
        # walls on both sides of the doorway, along the wall it pierces
        assert (WALLS[r - 1, c] and WALLS[r + 1, c]) or (WALLS[r, c - 1] and WALLS[r, c + 1])
    # the rooms are connected only through the hallways: closing them leaves four components
    open_cells = {tuple(map(int, rc)) for rc in CELLS} - set(HALLWAYS)
    components = 0
    while open_cells:
        components += 1
        stack = [open_cells.pop()]
        while stack:
            r, c = stack.pop()
            for dr, dc in OFFSETS.values():
                if (r + dr, c + dc) in open_cells:
                    open_cells.remove((r + dr, c + dc))
                    stack.append((r + dr, c + dc))
    assert components == 4
    assert goal_distances(103)[62] == 6 and (goal_distances(0) >= 0).all()


def test_observation_is_the_one_hot_cell():
    env = FourRoomsEnv()
    obs, info = env.reset(seed=0)
    assert obs.shape == (104,) and obs.dtype == np.float32
    assert obs.sum() == 1.0 and obs[62] == 1.0 and env.position == (7, 9)
    for a in [0, 0, 1, 2, 3, 3, 0]:
        obs, *_ = env.step(a)
        assert obs.sum() == 1.0 and obs[env.cell] == 1.0 and obs.dtype == np.float32


@pytest.mark.parametrize("transition", ["standard", "original"])
@pytest.mark.parametrize(
    "rc,action,expected",
    [
        ((7, 9), UP, (6, 9)),
        ((7, 9), DOWN, (8, 9)),
        ((7, 9), LEFT, (7, 9)),  # the east hallway has walls left and right
        ((7, 9), RIGHT, (7, 9)),
        ((1, 1), UP, (1, 1)),  # top-left corner
        ((1, 1), LEFT, (1, 1)),
        ((1, 1), RIGHT, (1, 2)),
        ((3, 5), RIGHT, (3, 6)),  # into the north hallway
        ((2, 5), RIGHT, (2, 5)),  # into the wall beside it
        ((5, 2), DOWN, (6, 2)),
        ((5, 3), DOWN, (5, 3)),
    ],
)
def test_deterministic_moves_and_walls_block(transition, rc, action, expected):
    env = FourRoomsEnv(transition=transition, slip_prob=0.0)
    env.reset(seed=0)
    for _ in range(5):
        at(env, rc)
        env.step(action)
        assert env.position == expected


def _outcomes(env: FourRoomsEnv, rc: tuple[int, int], action: int, n: int) -> dict[tuple[int, int], float]:
    counts: dict[tuple[int, int], int] = {}
    for _ in range(n):
        at(env, rc)
        env.step(action)
        counts[env.position] = counts.get(env.position, 0) + 1
    return {k: v / n for k, v in counts.items()}


def test_standard_rule_moves_as_intended_two_thirds_else_one_ninth_each_way():
    env = FourRoomsEnv()
    env.reset(seed=0)
    freq = _outcomes(env, (2, 2), RIGHT, 9000)  # an open cell: every direction is free
    assert set(freq) == {(2, 3), (1, 2), (3, 2), (2, 1)}
    assert freq[(2, 3)] == pytest.approx(2 / 3, abs=0.02)
    for rc in [(1, 2), (3, 2), (2, 1)]:
        assert freq[rc] == pytest.approx(1 / 9, abs=0.015)
    # in the top-left corner, pushing up: blocked (2/3) or slipping left (1/9) both leave the agent in place
    freq = _outcomes(env, (1, 1), UP, 9000)
    assert set(freq) == {(1, 1), (2, 1), (1, 2)}
    assert freq[(1, 1)] == pytest.approx(7 / 9, abs=0.02)
    assert freq[(2, 1)] == pytest.approx(1 / 9, abs=0.015) and freq[(1, 2)] == pytest.approx(1 / 9, abs=0.015)


def test_original_rule_moves_then_jumps_to_a_free_neighbour_one_third_and_never_slips_when_blocked():
    env = FourRoomsEnv(transition="original")
    env.reset(seed=0)
    freq = _outcomes(env, (2, 2), RIGHT, 9000)  # move to (2, 3), then w.p. 1/3 jump to one of its 4 neighbours
    assert set(freq) == {(2, 3), (1, 3), (3, 3), (2, 4), (2, 2)}
    assert freq[(2, 3)] == pytest.approx(2 / 3, abs=0.02)
    for rc in [(1, 3), (3, 3), (2, 4), (2, 2)]:
        assert freq[rc] == pytest.approx(1 / 12, abs=0.015)
    assert _outcomes(env, (1, 1), UP, 500) == {(1, 1): 1.0}
    assert _outcomes(env, (7, 9), LEFT, 500) == {(7, 9): 1.0}


def test_reward_only_in_the_goal_cell():
    env = FourRoomsEnv(slip_prob=0.0, goals="all")
    goal = CELL_INDEX[(8, 9)]
    env.reset(seed=0, options={"task": goal})
    rewards = [env.step(a)[1] for a in [UP, DOWN, DOWN, DOWN, UP, LEFT, RIGHT]]
    # cells: (6,9) (7,9) (8,9) (9,9) (8,9) (8,8) (8,9)
    assert rewards == [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    stochastic = FourRoomsEnv(start=None, goals="all")
    stochastic.reset(seed=1, options={"task": 40})
    for _ in range(300):
        obs, r, *_ = stochastic.step(stochastic.action_space.sample())
        assert r == obs[40]


def test_task_is_set_on_reset_kept_across_episodes_and_reported():
    env = FourRoomsEnv(goals="all")
    assert env.task == 103  # the original's goal until a task is set
    _, info = env.reset(seed=0, options={"task": 17})
    assert info["task"] == 17 and env.task == 17
    for _ in range(3):
        _, info = env.reset()
        assert info["task"] == 17
        assert env.step(0)[4]["task"] == 17
    env.set_task(np.int64(5))
    assert env.reset()[1]["task"] == 5
    for bad in [104, -1, 2.5, "3"]:
        with pytest.raises(ValueError, match=r"must be one of 0\.\.103"):
            env.set_task(bad)
    assert FourRoomsEnv().goals == (68, 80, 90, 103)  # the default: the original's candidates
    original = FourRoomsEnv(goals=[103, 68, 90, 80])
    assert original.goals == (68, 80, 90, 103)
    with pytest.raises(ValueError, match='"all"'):
        FourRoomsEnv(goals="every")
    with pytest.raises(ValueError, match=r"must be one of \[68, 80, 90, 103\], got 5"):
        original.reset(options={"task": 5})


def test_sample_task_uses_the_callers_rng_over_the_configured_goals():
    draws = [FourRoomsEnv.sample_task(np.random.default_rng(s)) for s in range(2000)]
    assert draws == [FourRoomsEnv.sample_task(np.random.default_rng(s)) for s in range(2000)]
    assert set(draws) == {68, 80, 90, 103}  # the default: the original's candidates
    env = gym.make("mlsh/FourRooms-v0", goals="all").unwrapped
    rng = np.random.default_rng(0)
    assert {env.sample_task(rng) for _ in range(2000)} == set(range(104))  # any free cell
    env = gym.make("mlsh/FourRooms-v0", goals=[80, 90]).unwrapped
    assert {env.sample_task(rng) for _ in range(200)} == {80, 90}
    assert FourRoomsEnv().sample_task(np.random.default_rng(7)) == FourRoomsEnv.sample_task(np.random.default_rng(7))


def test_start_is_cell_62_or_a_seeded_random_cell_other_than_the_goal():
    env = FourRoomsEnv()
    assert all(env.reset(seed=s)[0][62] == 1.0 for s in range(3))
    env = FourRoomsEnv(start=None, goals="all")
    env.reset(seed=0, options={"task": 0})
    starts = [int(env.reset()[0].argmax()) for _ in range(2000)]
    assert 0 not in starts and set(starts) == set(range(1, 104))
    env.set_task(103)
    assert 103 not in {int(env.reset()[0].argmax()) for _ in range(500)}
    assert FourRoomsEnv(start=5).reset()[0][5] == 1.0
    with pytest.raises(ValueError, match="start"):
        FourRoomsEnv(start=104)
    with pytest.raises(ValueError, match="transition must be one of"):
        FourRoomsEnv(transition="bogus")


@pytest.mark.parametrize("kwargs", [{}, {"start": None}, {"transition": "original"}])
def test_same_seed_same_trajectory(kwargs):
    def trajectory(seed):
        env = FourRoomsEnv(**kwargs, goals="all")
        obs, _ = env.reset(seed=seed, options={"task": 50})
        cells, rewards = [int(obs.argmax())], []
        for a in np.random.default_rng(123).integers(4, size=200):
            obs, r, *_ = env.step(a)
            cells.append(int(obs.argmax()))
            rewards.append(r)
        env.reset()
        cells.append(env.cell)
        return cells, rewards

    assert trajectory(4) == trajectory(4)
    assert trajectory(4)[0] != trajectory(5)[0]


def test_oracle_reaches_the_goal_random_walk_rarely_does():
    env = gym.make("mlsh/FourRooms-v0")
    oracle, rand = [], []
    env.action_space.seed(0)
    for s in range(30):
        for policy, totals in [(lambda: oracle_action(env.unwrapped), oracle), (env.action_space.sample, rand)]:
            env.reset(seed=s, options={"task": 103})
            total, truncated = 0.0, False
            while not truncated:
                _, r, _, truncated, _ = env.step(policy())
                total += r
            totals.append(total)
    assert 55.0 < np.mean(oracle) < 70.0  # 6 moves away; in the goal corner, 7/9 of steps stay
    assert np.mean(rand) < 8.0


def test_renders_rgb_frame():
    env = FourRoomsEnv(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (208, 208, 3) and frame.dtype == np.uint8
    assert tuple(frame[7 * 16 + 8, 9 * 16 + 8]) == (40, 80, 220)  # agent at (7, 9)
    assert tuple(frame[11 * 16 + 1, 11 * 16 + 1]) == (60, 160, 60)  # goal 103 at (11, 11)
    assert tuple(frame[0, 0]) == (60, 60, 60)  # wall
    assert FourRoomsEnv().render() is None


def test_trainer_runs_on_four_rooms(tmp_path):
    iters = smoke_iterations(tmp_path / "run", "env=four_rooms")
    assert [r["global_step"] for r in iters] == [200, 400, 600, 800]  # 2 tasks x (1 warmup + 1 joint)
    assert all(0 <= r["task"] < 104 and "master/share_sub3" in r for r in iters)  # K = 4, goal-cell tasks
