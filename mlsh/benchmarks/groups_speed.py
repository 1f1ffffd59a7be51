"""What task groups cost: meta-training throughput with one group and with G groups, at equal total envs and
primitive steps per iteration, timed side by side in one process:

    python -m mlsh.benchmarks.groups_speed [--env movement_bandits] [--groups G] [--tasks 20] [--repeats 2]

One group runs ``G * n_envs`` envs and ``G * rollout_steps`` steps per iteration on one task at a time; G groups
run ``n_envs`` envs and ``rollout_steps`` steps each, every group its own task and master (the env config's
``n_envs`` and ``rollout_steps``; G defaults to its ``n_groups``). The one-group run does ``--tasks`` tasks, the
G-group run ``G * --tasks`` (about as many iterations). Both are the full loop (``mlsh.train.meta_train``,
checkpoints and metrics file included, W&B disabled); runs alternate and each figure is the best of
``--repeats``, so that a background load hits both alike.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch as th
from hydra import compose, initialize_config_dir

from mlsh.benchmarks import cli_description
from mlsh.train import meta_train

CONF = Path(__file__).resolve().parents[2] / "conf"


def timed(cfg) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return meta_train(cfg, Path(tmp), progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.groups_speed",
                                     description=cli_description(__doc__))
    parser.add_argument("--env", default="movement_bandits", help="a conf/env name")
    parser.add_argument("--groups", type=int, default=None, help="G (default: the env config's n_groups)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks of the one-group run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for both runs")
    args = parser.parse_args()
    th.set_num_threads(1)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose(config_name="config", overrides=[f"env={args.env}", "logger.mode=disabled", *args.overrides])
        G = args.groups or base.schedule.n_groups
        s = base.schedule
        one = compose(config_name="config", overrides=[
            f"env={args.env}", "logger.mode=disabled", *args.overrides, "schedule.n_groups=1",
            f"schedule.n_envs={G * s.n_envs}", f"schedule.rollout_steps={G * s.rollout_steps}",
            f"schedule.n_tasks={args.tasks}"])
        many = compose(config_name="config", overrides=[
            f"env={args.env}", "logger.mode=disabled", *args.overrides, f"schedule.n_groups={G}",
            f"schedule.n_tasks={G * args.tasks}"])
    best = {"one": {"steps_per_second": 0.0}, "many": {"steps_per_second": 0.0}}
    for r in range(args.repeats):
        for name, cfg in (("one", one), ("many", many)):
            summary = timed(cfg.copy())
            if summary["steps_per_second"] > best[name]["steps_per_second"]:
                best[name] = summary
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v['steps_per_second']:,.0f} steps/s" for k, v in best.items()),
              flush=True)
    print(f"\n{args.env}: {G * s.n_envs} envs and {G * s.rollout_steps:,} primitive steps per iteration in both, "
          f"W={s.warmup_iters}, U={s.joint_iters}, best of {args.repeats}, torch threads 1")
    print(f"{'run':<40} {'steps':>11} {'steps/s':>9} {'ratio':>6}")
    ref = best["one"]["steps_per_second"]
    for name, label in (("one", f"1 group x {G * s.n_envs} envs, {args.tasks} tasks"),
                        ("many", f"{G} groups x {s.n_envs} envs, {G * args.tasks} tasks")):
        b = best[name]
        print(f"{label:<40} {b['global_step']:>11,} {b['steps_per_second']:>9,.0f} {b['steps_per_second'] / ref:>6.2f}")


if __name__ == "__main__":
    main()
