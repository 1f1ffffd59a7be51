"""FourRooms: Sutton, Precup and Singh's (1999) four-rooms gridworld, the paper's "Four Rooms" (REFERENCE.md section 2).

A 13x13 map with walls on the border and between the rooms; the 104 free cells are numbered row-major (cell 0 is
(1, 1), cell 103 is (11, 11)); the hallways are (3, 6), (6, 2), (7, 9) and (10, 6). Actions, Discrete(4): up,
down, left, right. The observation is the one-hot code of the agent's cell (104 float32 values). The task is the
goal cell; the reward is 1 on every step that ends in it. Episodes never terminate; ``max_episode_steps`` (100)
truncates them.

Differences from the original openai/mlsh ``Fourrooms-v0`` (all deliberate, see REFERENCE.md sections 0 and 5):

- **Goal.** The original draws from {68, 80, 90, 103} and then overwrites the draw with 103, so every task is the
  same. Here the task is a goal drawn uniformly from ``goals``: by default the original's four candidates (the
  bottom-right room); ``goals="all"`` makes every free cell a goal. Sub-policies do not see the goal, so a few of
  them can serve four goals but not 104 (``python -m mlsh.benchmarks.four_rooms_primitives`` computes how far
  any fixed set of goal-blind primitives falls short).
- **Transitions.** The original moves to the target cell if it is free and then, w.p. 1/3, *also* jumps to a random
  free neighbour (issue #15); a blocked move never slips. The default here is the rule of Sutton, Precup and Singh:
  the intended direction w.p. 1 - ``slip_prob`` (2/3), each of the other three w.p. ``slip_prob`` / 3 (1/9); a move
  into a wall leaves the agent in place. ``transition="original"`` restores the original rule (jump
  probability ``slip_prob``).
- **Randomness.** The original uses its own ``RandomState(1234)``, independent of the env's seed; here every draw
  comes from ``self.np_random`` (seeded by ``reset(seed=...)``).
- **Observation.** The original returns the cell index as an int, which crashes the network (issue #4); the author's
  commented-out fix is the one-hot code used here.
- **Start.** Cell 62 = (7, 9), as the original, by default; ``start=None`` draws a uniform free cell other than
  the goal at every reset.
- **Episodes.** The original's never terminate; ``terminate_at_goal=True`` ends them on reaching the goal (reward
  1 there), the episodic task of the option-critic paper's four-rooms experiment.

Task API as in ``envs/movement_bandits.py``: ``sample_task(rng)``, ``set_task(task)``,
``reset(options={"task": task})``, the task is kept across episodes, ``info["task"]`` reports it.
"""

from __future__ import annotations

import operator
import types
from collections import deque
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

LAYOUT = """\
wwwwwwwwwwwww
w     w     w
w     w     w
w           w
w     w     w
w     w     w
ww wwww     w
w     www www
w     w     w
w     w     w
w           w
w     w     w
wwwwwwwwwwwww"""

WALLS = np.array([[c == "w" for c in line] for line in LAYOUT.splitlines()], dtype=bool)  # (13, 13)
CELLS = np.argwhere(~WALLS)  # (104, 2) row, col of each free cell, row-major
N_CELLS = len(CELLS)
CELL_INDEX = {(int(r), int(c)): i for i, (r, c) in enumerate(CELLS)}
HALLWAYS = ((3, 6), (6, 2), (7, 9), (10, 6))
ORIGINAL_GOALS = (68, 80, 90, 103)  # the original's candidates (bottom-right room); it always used 103

# up, down, left, right as (row, col) offsets
DIRECTIONS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])


def _next_cells() -> np.ndarray:
    """``table[cell, direction]``: the cell reached by one move (the same cell when the move hits a wall)."""
    table = np.empty((N_CELLS, len(DIRECTIONS)), dtype=np.int64)
    for i, rc in enumerate(CELLS):
        for d, delta in enumerate(DIRECTIONS):
            r, c = rc + delta
            table[i, d] = CELL_INDEX.get((int(r), int(c)), i)
    return table


NEXT_CELL = _next_cells()
# the free neighbours of each cell, in direction order (the original's ``empty_around``)
FREE_NEIGHBOURS = [[int(n) for n in NEXT_CELL[i] if n != i] for i in range(N_CELLS)]
TRANSITIONS = ("standard", "original")


class _class_or_instance_method:
    """Like ``classmethod``, but bound to the instance when called on one, so that instance settings apply."""

    def __init__(self, func):
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj, objtype=None):
        return types.MethodType(self.func, objtype if obj is None else obj)


def _cell(value: Any, what: str) -> int:
    try:
        cell = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be a free-cell index in 0..{N_CELLS - 1}, got {value!r}") from None
    if not 0 <= cell < N_CELLS:
        raise ValueError(f"{what} must be a free-cell index in 0..{N_CELLS - 1}, got {value!r}")
    return int(cell)


class FourRoomsEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    goals: tuple[int, ...] = ORIGINAL_GOALS  # class default, for sample_task on the class

    def __init__(
        self,
        goals: Sequence[int] | str = ORIGINAL_GOALS,
        start: int | None = 62,
        transition: str = "standard",
        slip_prob: float = 1.0 / 3.0,
        goal_reward: float = 1.0,
        terminate_at_goal: bool = False,
        render_mode: str | None = None,
    ):
        if isinstance(goals, str):
            if goals != "all":
                raise ValueError(f'goals must be a list of free-cell indices or "all", got {goals!r}')
            self.goals = tuple(range(N_CELLS))
        else:
            self.goals = tuple(sorted({_cell(g, "goals entry") for g in goals}))
            if not self.goals:
                raise ValueError('goals must name at least one free cell, or be "all" for every one of them')
        self.start = None if start is None else _cell(start, "start")
        if transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {list(TRANSITIONS)}, got {transition!r}")
        self.transition = transition
        if not 0.0 <= slip_prob <= 1.0:
            raise ValueError(f"slip_prob must be in [0, 1], got {slip_prob!r}")
        self.slip_prob = float(slip_prob)
        self.goal_reward = float(goal_reward)
        self.terminate_at_goal = bool(terminate_at_goal)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(len(DIRECTIONS))
        self.observation_space = spaces.Box(0.0, 1.0, shape=(N_CELLS,), dtype=np.float32)
        self.task = self.goals[-1]  # 103 for the default goal set and for "all"
        self.cell = self.start if self.start is not None else 0

    # -- task API -------------------------------------------------------------------------------------------
    @_class_or_instance_method
    def sample_task(self_or_cls, rng: np.random.Generator) -> int:
        """A goal cell drawn uniformly from the goal set (the instance's ``goals``, or the class default's)."""
        goals = self_or_cls.goals
        return int(goals[int(rng.integers(len(goals)))])

    def set_task(self, task: int) -> None:
        try:
            cell = operator.index(task)
        except TypeError:
            cell = None
        if cell not in self.goals:
            allowed = f"0..{N_CELLS - 1}" if len(self.goals) == N_CELLS else str(list(self.goals))
            raise ValueError(f"FourRooms task (goal cell) must be one of {allowed}, got {task!r}")
        self.task = int(cell)

    # -- gymnasium API --------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        if self.start is None:  # uniform over the free cells other than the goal
            cell = int(self.np_random.integers(N_CELLS - 1))
            self.cell = cell + 1 if cell >= self.task else cell
        else:
            self.cell = self.start
        return self._obs(), {"task": self.task}

    def step(self, action):
        action = int(action)
        if self.transition == "standard":
            if self.slip_prob > 0.0 and self.np_random.random() < self.slip_prob:
                others = [d for d in range(len(DIRECTIONS)) if d != action]
                action = others[int(self.np_random.integers(len(others)))]
            self.cell = int(NEXT_CELL[self.cell, action])
        else:  # the original's rule: move if free, then maybe also jump to a random free neighbour
            target = int(NEXT_CELL[self.cell, action])
            if target != self.cell:
                self.cell = target
                if self.np_random.random() < self.slip_prob:
                    around = FREE_NEIGHBOURS[self.cell]
                    self.cell = around[int(self.np_random.integers(len(around)))]
        at_goal = self.cell == self.task
        reward = self.goal_reward if at_goal else 0.0
        return self._obs(), reward, at_goal and self.terminate_at_goal, False, {"task": self.task}

    def _obs(self) -> np.ndarray:
        return self.obs_at(self.cell)

    @staticmethod
    def obs_at(cell: int) -> np.ndarray:
        """The observation of the agent in free cell ``cell`` (one-hot)."""
        obs = np.zeros(N_CELLS, dtype=np.float32)
        obs[cell] = 1.0
        return obs

    @property
    def position(self) -> tuple[int, int]:
        """The agent's (row, col) on the 13x13 map."""
        r, c = CELLS[self.cell]
        return int(r), int(c)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        px = 16
        frame = np.full((*WALLS.shape, 3), 255, dtype=np.uint8)
        frame[WALLS] = (60, 60, 60)
        gr, gc = CELLS[self.task]
        frame[gr, gc] = (60, 160, 60)
        frame = np.repeat(np.repeat(frame, px, axis=0), px, axis=1)
        r, c = self.position
        frame[r * px + 3:(r + 1) * px - 3, c * px + 3:(c + 1) * px - 3] = (40, 80, 220)
        return frame


def goal_distances(goal: int) -> np.ndarray:
    """Shortest-path length (in moves) from every free cell to ``goal``."""
    dist = np.full(N_CELLS, -1, dtype=np.int64)
    dist[goal] = 0
    queue = deque([goal])
    while queue:
        cell = queue.popleft()
        for n in FREE_NEIGHBOURS[cell]:
            if dist[n] < 0:
                dist[n] = dist[cell] + 1
                queue.append(n)
    return dist


def oracle_action(env: FourRoomsEnv) -> int:
    """The action of a policy that knows the goal: a shortest-path move, or into a wall once on the goal."""
    if env.cell == env.task:
        blocked = [d for d in range(len(DIRECTIONS)) if NEXT_CELL[env.cell, d] == env.cell]
        return blocked[0] if blocked else 0
    dist = goal_distances(env.task)
    return int(np.argmin(dist[NEXT_CELL[env.cell]]))
