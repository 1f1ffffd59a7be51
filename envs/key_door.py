"""KeyDoor: fetch a key, then stand at the correct one of two doors (REFERENCE.md section 2, KeyDoor-v0).

Not in the paper; the original openai/mlsh ships it in ``test_envs``. The agent starts at (200, 200) on an open
plane and moves 20 units per step (stay, +x, -x, +y, -y), as in MovementBandits. Two doors and a key are drawn
uniformly in [0, 400]^2 at every reset. A step that ends within ``key_radius`` (50) of the key picks it up for the
rest of the episode; the reward is 1 on every step that ends with the key held and within ``door_radius`` (50) of
the correct door (the key and the door may be reached on the same step). The task says which door is correct and
is not observed. The observation is the agent's, both doors' and the key's positions divided by ``scale`` (400),
then the has-key flag (0 or 1). Episodes never terminate; ``max_episode_steps`` (100) truncates them.

Differences from the original (deliberate):

- **Observation scale.** The original returns raw positions (0..400); here they are divided by ``scale`` so that
  door and key lie in [0, 1], as MovementBandits does (``scale=1`` gives the original's raw units).
- **Randomness.** The original draws the points and the task with the global ``np.random``; here the points come
  from ``self.np_random`` (seeded by ``reset(seed=...)``) and the task from the caller's RNG via ``sample_task``.
- **Task API** as in ``envs/movement_bandits.py`` (the original's ``randomizeCorrect`` redraws it in place).
- The observation is float32 and rendering uses numpy only.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# stay, +x, -x, +y, -y
_MOVES = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float64)
KEY = 2  # row of the key in ``points``; rows 0 and 1 are the doors


class KeyDoorEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    n_tasks = 2

    def __init__(
        self,
        start: tuple[float, float] = (200.0, 200.0),
        step_size: float = 20.0,
        arena_size: float = 400.0,
        key_radius: float = 50.0,
        door_radius: float = 50.0,
        scale: float = 400.0,
        render_mode: str | None = None,
    ):
        self.start = np.asarray(start, dtype=np.float64)
        self.step_size = float(step_size)
        self.arena_size = float(arena_size)
        self.key_radius = float(key_radius)
        self.door_radius = float(door_radius)
        self.scale = float(scale)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(len(_MOVES))
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(9,), dtype=np.float32)
        self.task = 0
        self.agent = self.start.copy()
        self.points = np.zeros((3, 2))  # door0, door1, key
        self.has_key = False

    # -- task API -------------------------------------------------------------------------------------------
    @classmethod
    def sample_task(cls, rng: np.random.Generator) -> int:
        """Which door is the correct one, drawn with the caller's RNG."""
        return int(rng.integers(cls.n_tasks))

    def set_task(self, task: int) -> None:
        try:
            task = int(task)
        except (TypeError, ValueError):
            raise ValueError(f"KeyDoor task must be 0 or 1, got {task!r}") from None
        if task not in range(self.n_tasks):
            raise ValueError(f"KeyDoor task must be 0 or 1, got {task}")
        self.task = task

    # -- gymnasium API --------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        self.agent = self.start.copy()
        self.points = self.np_random.uniform(0.0, self.arena_size, size=(3, 2))
        self.has_key = False
        return self._obs(), {"task": self.task}

    @property
    def doors(self) -> np.ndarray:
        return self.points[:KEY]

    @property
    def key(self) -> np.ndarray:
        return self.points[KEY]

    def step(self, action):
        self.agent = self.agent + self.step_size * _MOVES[int(action)]
        if float(np.sum((self.agent - self.key) ** 2)) < self.key_radius**2:
            self.has_key = True
        near_door = float(np.sum((self.agent - self.doors[self.task]) ** 2)) < self.door_radius**2
        reward = 1.0 if self.has_key and near_door else 0.0
        return self._obs(), reward, False, False, {"task": self.task}

    def _obs(self) -> np.ndarray:
        return self.obs_at(self.agent, self.has_key)

    def obs_at(self, agent, has_key: bool) -> np.ndarray:
        """The observation with the agent at ``agent``, holding the key or not, and the current doors and key."""
        coords = np.concatenate([np.asarray(agent, dtype=np.float64), self.points.ravel()]) / self.scale
        return np.append(coords, float(has_key)).astype(np.float32)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        size = 200
        frame = np.full((size, size, 3), 255, dtype=np.uint8)
        lo, span = -self.arena_size / 2, 2 * self.arena_size  # show [-200, 600]^2

        def dot(p, color, r):
            c = ((np.asarray(p) - lo) / span * size).astype(int)
            y, x = np.ogrid[:size, :size]
            frame[(x - c[0]) ** 2 + (size - 1 - y - c[1]) ** 2 <= r * r] = color

        for d, door in enumerate(self.doors):
            dot(door, (60, 160, 60) if d == self.task else (200, 170, 40), 6)
        if not self.has_key:
            dot(self.key, (200, 60, 60), 4)
        dot(self.agent, (200, 60, 60) if self.has_key else (40, 80, 220), 4)
        return frame


def _toward(env: KeyDoorEnv, target: np.ndarray, radius: float) -> int:
    delta = target - env.agent
    if np.sum(delta**2) < radius**2 and np.max(np.abs(delta)) < env.step_size:
        return 0
    axis = int(np.argmax(np.abs(delta)))
    return 1 + 2 * axis + (0 if delta[axis] > 0 else 1)


def oracle_action(env: KeyDoorEnv) -> int:
    """The action of a policy that knows the task: walk straight to the key, then to the correct door."""
    if not env.has_key:
        return _toward(env, env.key, env.key_radius)
    return _toward(env, env.doors[env.task], env.door_radius)
