"""Small envs and scripted policies whose behaviour the tests can compute by hand."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces


class CountEnv(gym.Env):
    """Observation [t, last action]; reward t at the t-th step of an episode (1-based); truncated after ``limit``."""

    def __init__(self, limit: int = 20):
        self.limit = limit
        self.observation_space = spaces.Box(-1e6, 1e6, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(5)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, -1.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.array([self.t, int(action)], dtype=np.float32)
        return obs, float(self.t), False, self.t >= self.limit, {}


class ConstantPolicy(th.nn.Module):
    """Stands in for a sub-policy: always action ``action``, value ``value``; records the batch size of each call."""

    def __init__(self, action: int, value: float):
        super().__init__()
        self.action, self.value = action, value
        self.batch_sizes: list[int] = []

    def forward(self, obs):
        n = obs.shape[0]
        self.batch_sizes.append(n)
        return th.full((n,), self.action), th.full((n, 1), self.value), th.zeros(n)

    def predict_values(self, obs):
        return th.full((obs.shape[0], 1), self.value)


class GoalSeekingPolicy(th.nn.Module):
    """A scripted MovementBandits sub-policy that walks straight to goal ``goal`` (0 or 1), read from the obs."""

    def __init__(self, goal: int):
        super().__init__()
        self.goal = goal

    def forward(self, obs):
        agent, target = obs[:, :2] * 400, obs[:, 2 + 2 * self.goal: 4 + 2 * self.goal] * 400
        delta = target - agent
        axis = delta.abs().argmax(dim=1)
        sign_neg = (delta.gather(1, axis[:, None])[:, 0] < 0).long()
        action = 1 + 2 * axis + sign_neg
        close = (delta**2).sum(dim=1) < 2500
        action = th.where(close & (delta.abs().max(dim=1).values < 20), th.zeros_like(action), action)
        n = obs.shape[0]
        return action, th.zeros(n, 1), th.zeros(n)

    def predict_values(self, obs):
        return th.zeros(obs.shape[0], 1)


def random_trajectory(choices: np.ndarray, seed: int = 0):
    """A ``Trajectory`` of MovementBandits-shaped random data with the given (T, n_envs) sub-policy ``choices``."""
    from mlsh.selection import Trajectory

    rng = np.random.default_rng(seed)
    T, n_envs = choices.shape
    return Trajectory(
        observations=rng.random((T, n_envs, 6)).astype(np.float32),
        actions=rng.integers(0, 5, (T, n_envs, 1)),
        rewards=rng.random((T, n_envs)).astype(np.float32),
        episode_starts=np.zeros((T, n_envs)),
        values=rng.random((T, n_envs)).astype(np.float32),
        log_probs=np.full((T, n_envs), -1.6, dtype=np.float32),
        choices=choices,
        last_values=np.zeros(n_envs, dtype=np.float32),
        last_dones=np.ones(n_envs, dtype=bool),
    )


def smoke_iterations(run_dir, *overrides: str) -> list[dict]:
    """Run ``run.py`` with the smoke schedule (W&B off) into ``run_dir``; return the per-iteration metrics rows."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "run.py", "schedule=smoke", "logger.mode=disabled", "progress_bar=false",
         f"hydra.run.dir={run_dir}", *overrides],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "episode_return" in r]


