"""Raw ``env.step`` rate of the MLSH MuJoCo envs against the gymnasium env each one builds on, side by side:

    python -m mlsh.benchmarks.env_speed [--steps 20000] [--rounds 5] [--only Ant]

Each row times ``gym.make(env_id)`` and ``gym.make(base_id)`` (same wrappers: order enforcing, time limit) on
uniformly random actions from a seeded action space, resetting when an episode ends. The two envs of a row take
turns in ``--rounds`` chunks of ``steps / rounds`` steps, so that a background load hits both alike; a rate is the
total steps over the total time. The target is ratio >= 0.9: the task scenery must not slow the simulation much.
A row is one line of ``PAIRS``.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers mlsh/*)
from mlsh.benchmarks import cli_description

TARGET_RATIO = 0.9

# (our env id, the gymnasium env it builds on)
PAIRS: list[tuple[str, str]] = [
    ("mlsh/AntTwoWalk-v0", "Ant-v5"),
    ("mlsh/AntMaze-v0", "Ant-v5"),
    ("mlsh/AntObstacle-v0", "Ant-v5"),
    ("mlsh/HumanoidWalkCrawl-v0", "Humanoid-v5"),
    ("mlsh/HumanoidCourse-v0", "Humanoid-v5"),
]


class _Runner:
    """One env stepping through a pre-drawn action sequence, timing only the ``step`` and ``reset`` calls."""

    def __init__(self, env_id: str, steps: int, seed: int):
        self.env = gym.make(env_id)
        self.env.reset(seed=seed)
        self.env.action_space.seed(seed)
        self.actions = [self.env.action_space.sample() for _ in range(steps)]
        self.next = 0
        self.seconds = 0.0

    def run(self, n: int) -> None:
        env, actions, i = self.env, self.actions, self.next
        start = time.perf_counter()
        for a in actions[i : i + n]:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        self.seconds += time.perf_counter() - start
        self.next = i + n

    def rate(self) -> float:
        return self.next / self.seconds


def measure(env_id: str, base_id: str, steps: int, rounds: int, seed: int = 0) -> tuple[float, float]:
    """Steps per second of ``env_id`` and of ``base_id``, timed in alternating chunks."""
    ours, base = _Runner(env_id, steps, seed), _Runner(base_id, steps, seed)
    chunk = max(1, steps // rounds)
    for r in range(rounds):
        n = chunk if r < rounds - 1 else steps - chunk * (rounds - 1)
        first, second = (ours, base) if r % 2 == 0 else (base, ours)
        first.run(n)
        second.run(n)
    ours.env.close()
    base.env.close()
    return ours.rate(), base.rate()


def main(argv: list[str] | None = None) -> list[tuple[str, str, float, float]]:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.env_speed",
                                     description=cli_description(__doc__))
    parser.add_argument("--steps", type=int, default=20_000, help="timed steps per env")
    parser.add_argument("--rounds", type=int, default=6, help="alternating chunks per pair")
    parser.add_argument("--only", default="", help="run only the rows whose env id contains this text")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'env':<28} {'base':<14} {'steps/s':>9} {'base steps/s':>13} {'ratio':>6}")
    for env_id, base_id in PAIRS:
        if args.only not in env_id:
            continue
        rate, base_rate = measure(env_id, base_id, args.steps, args.rounds)
        ratio = rate / base_rate
        flag = "" if ratio >= TARGET_RATIO else f"  below {TARGET_RATIO}"
        print(f"{env_id:<28} {base_id:<14} {rate:>9,.0f} {base_rate:>13,.0f} {ratio:>6.2f}{flag}", flush=True)
        rows.append((env_id, base_id, rate, base_rate))
    if rows:
        ratios = np.array([r / b for _, _, r, b in rows])
        print(f"{args.steps:,} steps per env in {args.rounds} alternating chunks; min ratio {ratios.min():.2f}")
    return rows


if __name__ == "__main__":
    main()
