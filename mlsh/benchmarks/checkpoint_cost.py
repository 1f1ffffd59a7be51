"""What a checkpoint costs, as a share of a task, at an env's own settings:

    python -m mlsh.benchmarks.checkpoint_cost --env movement_bandits --env ant_two_walk

For each env: its config (n_envs, rollout, groups, K) with W=1, U=1 so that tasks finish quickly, a few tasks
trained; the time of every checkpoint (capture of the live state, SB3 zips, resume.pkl, manifest) and of every
iteration are measured. A task at the env's real settings takes (W + U) iterations and G tasks finish per W + U
iterations, so the share is checkpoint time / (iteration time * (W + U) / G).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from mlsh import checkpoint, train  # noqa: E402
from mlsh.benchmarks import cli_description
from mlsh.runlog import read_metrics  # noqa: E402

CONF = Path(__file__).resolve().parents[2] / "conf"


def measure(env: str, tasks: int) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        real = compose("config", overrides=[f"env={env}", "logger.mode=disabled"])
        cfg = compose("config", overrides=[f"env={env}", "logger.mode=disabled", "schedule.warmup_iters=1",
                                           "schedule.joint_iters=1", "schedule.stagger=original",
                                           f"schedule.n_tasks={tasks}"])
    times: list[float] = []
    write = checkpoint.write

    def timed(folder, fill, state):
        t0 = time.perf_counter()
        out = write(folder, fill, state)
        times.append(time.perf_counter() - t0)
        return out

    capture_times: list[float] = []
    capture = train.snapshot.capture

    def timed_capture(models, venv):
        t0 = time.perf_counter()
        out = capture(models, venv)
        capture_times.append(time.perf_counter() - t0)
        return out

    checkpoint.write, train.snapshot.capture = timed, timed_capture
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train.meta_train(cfg, Path(tmp), progress=False)
            rows = [r for r in read_metrics(Path(tmp)) if "steps_per_second" in r]
            size = sum(f.stat().st_size for f in checkpoint.latest(Path(tmp)).iterdir())
    finally:
        checkpoint.write, train.snapshot.capture = write, capture
    sched = real.schedule
    iteration = float(np.median([sched.n_groups * sched.rollout_steps / r["steps_per_second"] for r in rows]))
    ckpt = float(np.median(np.add(times, capture_times)))
    per_task = iteration * (sched.warmup_iters + sched.joint_iters) / sched.n_groups
    return {"checkpoint_s": ckpt, "iteration_s": iteration, "task_s": per_task, "share": ckpt / per_task,
            "megabytes": size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.checkpoint_cost",
                                     description=cli_description(__doc__))
    parser.add_argument("--env", action="append", help="conf/env names (default movement_bandits, ant_two_walk)")
    parser.add_argument("--tasks", type=int, default=6, help="tasks to train per env (default 6)")
    args = parser.parse_args()
    print(f"{'env':<20} {'checkpoint s':>12} {'iteration s':>12} {'task s':>9} {'share':>8} {'MB':>6}")
    for env in args.env or ["movement_bandits", "ant_two_walk"]:
        m = measure(env, args.tasks)
        print(f"{env:<20} {m['checkpoint_s']:>12.3f} {m['iteration_s']:>12.3f} {m['task_s']:>9.1f} "
              f"{100 * m['share']:>7.2f}% {m['megabytes']:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
