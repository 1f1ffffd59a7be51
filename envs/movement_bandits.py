"""MovementBandits: the paper's "2D moving bandits" task distribution (REFERENCE.md section 2).

The agent starts at (200, 200) on an open plane and moves 20 units per step (stay, +x, -x, +y, -y). Two goals
are drawn uniformly in [0, 400]^2 at every reset; the task says which one pays. The reward is 1 on every step that
ends within ``goal_radius`` of the correct goal. The task is not observed: the observation is the agent's and both
goals' positions divided by ``scale``. Episodes never terminate; ``max_episode_steps`` (50) truncates them.

Task API (shared by every env in ``envs/``): ``sample_task(rng)`` draws a task with the caller's RNG,
``set_task(task)`` or ``reset(options={"task": task})`` selects it, it is kept across episodes until changed,
and ``info["task"]`` reports it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# stay, +x, -x, +y, -y
_MOVES = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float64)


class MovementBanditsEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    n_tasks = 2

    def __init__(
        self,
        start: tuple[float, float] = (200.0, 200.0),
        step_size: float = 20.0,
        arena_size: float = 400.0,
        goal_radius: float = 50.0,
        scale: float = 400.0,
        render_mode: str | None = None,
    ):
        self.start = np.asarray(start, dtype=np.float64)
        self.step_size = float(step_size)
        self.arena_size = float(arena_size)
        self.goal_radius = float(goal_radius)
        self.scale = float(scale)
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(len(_MOVES))
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(6,), dtype=np.float32)
        self.task = 0
        self.agent = self.start.copy()
        self.goals = np.zeros((2, 2))

    # -- task API -------------------------------------------------------------------------------------------
    @classmethod
    def sample_task(cls, rng: np.random.Generator) -> int:
        """Which goal is the correct one, drawn with the caller's RNG."""
        return int(rng.integers(cls.n_tasks))

    def set_task(self, task: int) -> None:
        task = int(task)
        if task not in range(self.n_tasks):
            raise ValueError(f"MovementBandits task must be 0 or 1, got {task}")
        self.task = task

    # -- gymnasium API --------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        self.agent = self.start.copy()
        self.goals = self.np_random.uniform(0.0, self.arena_size, size=(2, 2))
        return self._obs(), {"task": self.task}

    def step(self, action):
        self.agent = self.agent + self.step_size * _MOVES[int(action)]
        distance2 = float(np.sum((self.agent - self.goals[self.task]) ** 2))
        reward = 1.0 if distance2 < self.goal_radius**2 else 0.0
        return self._obs(), reward, False, False, {"task": self.task}

    def _obs(self) -> np.ndarray:
        return self.obs_at(self.agent)

    def obs_at(self, agent) -> np.ndarray:
        """The observation with the agent at ``agent`` and the current goals (for maps of what a policy does)."""
        return (np.concatenate([np.asarray(agent, dtype=np.float64), self.goals.ravel()]) / self.scale
                ).astype(np.float32)

    def render(self):
        """Top view of [-200, 600]^2: the goal arena [0, 400]^2 in grey, the correct goal green with its reward
        radius, the other goal yellow, the agent blue."""
        if self.render_mode != "rgb_array":
            return None
        size = 240
        lo, span = -self.arena_size / 2, 2 * self.arena_size
        y, x = np.mgrid[:size, :size]
        wx, wy = lo + (x + 0.5) / size * span, lo + (size - 0.5 - y) / size * span  # world coordinates of pixels
        frame = np.full((size, size, 3), 255, dtype=np.uint8)
        frame[(wx >= 0) & (wx <= self.arena_size) & (wy >= 0) & (wy <= self.arena_size)] = (235, 235, 235)

        def disc(p, radius, color):
            frame[(wx - p[0]) ** 2 + (wy - p[1]) ** 2 <= radius**2] = color

        disc(self.goals[self.task], self.goal_radius, (200, 235, 200))
        disc(self.goals[1 - self.task], 24, (220, 180, 40))
        disc(self.goals[self.task], 24, (50, 160, 60))
        disc(self.agent, 20, (40, 80, 220))
        return frame


def oracle_action(env: MovementBanditsEnv) -> int:
    """The action of a policy that knows the task and walks straight to the correct goal."""
    delta = env.goals[env.task] - env.agent
    if np.sum(delta**2) < env.goal_radius**2 and np.max(np.abs(delta)) < env.step_size:
        return 0
    axis = int(np.argmax(np.abs(delta)))
    return 1 + 2 * axis + (0 if delta[axis] > 0 else 1)
