"""End-to-end meta-training throughput of MLSH against plain SB3 PPO, timed side by side in one process:

    python -m mlsh.benchmarks.speed [--steps 400000] [--repeats 2]

Both run on MovementBandits with the same network sizes, ``n_envs`` and rollout size (the default config with
one task group: 20 envs, 4000 primitive steps per iteration, 2x64 MLPs, 10 epochs of minibatch 64). Plain PPO is
``PPO.learn``; MLSH is the full meta-training loop (``mlsh.train.meta_train``: master rebuilt per task, sub-policy
updates, checkpoints, metrics file; W&B disabled), once with the paper's schedule (W=9, U=1) and once with the
sub-policies updated on every iteration (W=0, U=10), the most expensive schedule. Runs alternate, and each
figure is the best of ``--repeats``, so that a background load hits both alike.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch as th
from hydra import compose, initialize_config_dir
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401
from mlsh.benchmarks import cli_description
from mlsh.train import meta_train

CONF = Path(__file__).resolve().parents[2] / "conf"


def plain_ppo(cfg, steps: int) -> float:
    venv = make_vec_env(cfg.env.id, n_envs=cfg.schedule.n_envs, seed=0)
    sub = cfg.algo.subpolicy
    model = PPO("MlpPolicy", venv, n_steps=cfg.schedule.rollout_steps // cfg.schedule.n_envs,
                policy_kwargs={"net_arch": list(sub.net_arch)}, device="cpu", seed=0, **sub.ppo)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model.num_timesteps / (time.perf_counter() - start)


def mlsh(cfg, steps: int) -> float:
    per_task = cfg.schedule.rollout_steps * (cfg.schedule.warmup_iters + cfg.schedule.joint_iters)
    cfg.schedule.n_tasks = max(1, steps // per_task)
    with tempfile.TemporaryDirectory() as tmp:
        summary = meta_train(cfg, Path(tmp), progress=False)
    return summary["steps_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.speed",
                                     description=cli_description(__doc__))
    parser.add_argument("--steps", type=int, default=400_000, help="primitive env steps per timed run")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    th.set_num_threads(1)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # one task group: the same envs and rollout as plain PPO (mlsh.benchmarks.groups_speed compares groups)
        cfg = compose(config_name="config", overrides=["logger.mode=disabled", "schedule.n_groups=1"])
        every = compose(config_name="config", overrides=["logger.mode=disabled", "schedule.n_groups=1",
                                                         "schedule.warmup_iters=0", "schedule.joint_iters=10"])
    best = {"ppo": 0.0, "mlsh": 0.0, "mlsh_every": 0.0}
    for r in range(args.repeats):
        best["ppo"] = max(best["ppo"], plain_ppo(cfg, args.steps))
        best["mlsh"] = max(best["mlsh"], mlsh(cfg.copy(), args.steps))
        best["mlsh_every"] = max(best["mlsh_every"], mlsh(every.copy(), args.steps))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in best.items()), flush=True)
    s = cfg.schedule
    print(f"\nMovementBandits, n_envs {s.n_envs}, rollout {s.rollout_steps}, 2x64 MLPs, {args.steps:,} steps per run, "
          f"best of {args.repeats}, torch threads 1")
    print(f"{'run':<42} {'steps/s':>9} {'vs PPO':>7}")
    rows = [("plain SB3 PPO.learn", best["ppo"]),
            (f"MLSH, paper schedule (W={s.warmup_iters}, U={s.joint_iters})", best["mlsh"]),
            ("MLSH, sub-policies every iter (W=0, U=10)", best["mlsh_every"])]
    for name, value in rows:
        print(f"{name:<42} {value:>9,.0f} {value / best['ppo']:>7.2f}")


if __name__ == "__main__":
    main()
