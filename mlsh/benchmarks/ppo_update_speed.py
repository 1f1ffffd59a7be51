"""One PPO update, SB3's ``PPO.train()`` against ``mlsh.ppo_update.train``, timed side by side in one process.

    python -m mlsh.benchmarks.ppo_update_speed [--samples 3000] [--repeats 3]

For a MovementBandits sub-policy (categorical) and an AntTwoWalk one (Gaussian), 2x64 networks, 10 epochs of
minibatches of 64 on the same batch of random samples, the two alternating; prints each time, the ratio, and
how far the two models' parameters are apart afterwards (float rounding, growing with each update).
"""

from __future__ import annotations

import argparse
import copy
import time

import gymnasium as gym
import numpy as np
import torch as th
from omegaconf import OmegaConf
from stable_baselines3.common.vec_env import DummyVecEnv

import envs  # noqa: F401  (registers the task distributions)
from mlsh import ppo_update, sb3_adapter
from mlsh.benchmarks import cli_description
from mlsh.learners import build_ppo

ENVS = {"movement_bandits": "mlsh/MovementBandits-v0", "ant_two_walk": "mlsh/AntTwoWalk-v0"}


def batch(model, n: int, rng: np.random.Generator) -> dict:
    obs = rng.normal(size=(n, *model.observation_space.shape)).astype(np.float32)
    if isinstance(model.action_space, gym.spaces.Discrete):
        actions = rng.integers(0, model.action_space.n, size=n)
    else:
        actions = rng.normal(size=(n, *model.action_space.shape)).astype(np.float32)
    with th.no_grad():
        values, log_probs, _ = model.policy.evaluate_actions(th.tensor(obs), th.tensor(actions))
    return dict(observations=obs, actions=actions, values=values.numpy().ravel(), log_probs=log_probs.numpy(),
                advantages=rng.normal(size=n).astype(np.float32), returns=rng.normal(size=n).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.ppo_update_speed",
                                     description=cli_description(__doc__))
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    th.set_num_threads(1)
    section = OmegaConf.create({"net_arch": [64, 64], "ppo": {"n_epochs": 10, "batch_size": 64,
                                                              "learning_rate": 3e-4, "max_grad_norm": 0.5}})
    print(f"one update of {args.samples} samples, 10 epochs of minibatches of 64, torch threads 1")
    print(f"{'env':<18} {'SB3 train s':>11} {'ppo_update s':>12} {'ratio':>6}  max parameter difference")
    for name, env_id in ENVS.items():
        th.manual_seed(0)
        model = build_ppo(section, DummyVecEnv([lambda env_id=env_id: gym.make(env_id)]), 64,
                          rollout_buffer_class=sb3_adapter.VariableRolloutBuffer)
        data = batch(model, args.samples, np.random.default_rng(0))
        sb3, mine = copy.deepcopy(model), copy.deepcopy(model)
        for _ in range(args.repeats):
            times = []
            for m, train in ((sb3, lambda m: m.train()), (mine, ppo_update.train)):
                m.rollout_buffer.load(**data)
                np.random.seed(1)
                t0 = time.perf_counter()
                train(m)
                times.append(time.perf_counter() - t0)
                sb3_adapter.pop_records(m)
            diff = max(float((p - q).detach().abs().max()) for p, q in
                       zip(sb3.policy.parameters(), mine.policy.parameters(), strict=True))
            print(f"{name:<18} {times[0]:>11.3f} {times[1]:>12.3f} {times[0] / times[1]:>6.2f}  {diff:.1e}",
                  flush=True)


if __name__ == "__main__":
    main()
