"""The meta-training loop: task groups side by side, each sampling a task, W warmup iterations (master only), U joint
iterations (master and sub-policies), then the next task; checkpoint and log whenever a task finishes.

Collection and update live in the learners (``mlsh.learners``); this loop only schedules them, like SB3's
``OnPolicyAlgorithm.learn``. The global step is the number of primitive env steps taken so far.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from omegaconf import DictConfig
from stable_baselines3.common.utils import set_random_seed
from tqdm import tqdm

from mlsh import checkpoint
from mlsh.config import validate
from mlsh.groups import GroupClock, stagger
from mlsh.learners import make_learner, make_task_env, sample_task, task_rng
from mlsh.runlog import RunLogger, read_metrics


def setup_torch(cfg: DictConfig) -> None:
    th.set_num_threads(int(cfg.get("torch_threads", 1)))
    set_random_seed(cfg.seed)


def _restore(run_dir: Path, learner, rng: np.random.Generator, per_task: int) -> dict[str, Any]:
    """Load the latest checkpoint into ``learner`` and ``rng``; drop the metrics logged after it.

    Returns the loop's position: the groups' clocks, tasks sampled and done, global step, the finished tasks'
    returns and the minutes so far. Groups that were mid-task get their task back (envs reset) and their master."""
    ckpt = checkpoint.latest(run_dir)
    state = checkpoint.read_state(ckpt)
    learner.load(ckpt)
    rng.bit_generator.state = state["task_rng"]
    step = int(state["global_step"])
    if "groups" in state:
        clocks = [GroupClock(**c) for c in state["groups"]]
        sampled, done = int(state["tasks_sampled"]), int(state["tasks_done"])
    else:  # a checkpoint of one task group from before task groups existed
        clocks = [GroupClock(0, state.get("task"), int(state["task_index"]), per_task)]
        sampled = done = int(state["task_index"]) + 1
    if len(clocks) != learner.n_groups:
        raise ValueError(f"checkpoint {ckpt} holds {len(clocks)} task groups, the config asks for "
                         f"schedule.n_groups={learner.n_groups}")
    mid_task = [c.group for c in clocks if c.it < per_task]
    for g in mid_task:
        learner.start_task(clocks[g].task, g)
    learner.load_masters(ckpt, mid_task)
    rows = [r for r in read_metrics(run_dir) if r["global_step"] <= step]
    tmp = run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(run_dir / "metrics.jsonl")
    return {
        "clocks": clocks, "sampled": sampled, "done": done, "step": step,
        "finals": [r["task/final_return"] for r in rows if "task/final_return" in r],
        "warmups": [r["task/warmup_return"] for r in rows if r.get("task/warmup_return") is not None],
        "minutes": max((r["time_minutes"] for r in rows if "time_minutes" in r), default=0.0),
    }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def iteration_metrics(shared: dict[str, float], per_group: list[dict[str, float]], returns: list[list[float]],
                      clocks: list[GroupClock], joint: list[bool]) -> dict[str, Any]:
    """One iteration's row. One group: the learner's keys as they are. Several: every per-group value under
    ``group<g>/`` and, under the plain key, its mean over the groups (episode returns: over all episodes)."""
    row: dict[str, Any] = dict(shared)
    all_returns = [r for rets in returns for r in rets]
    row.update({"episode_return": _mean(all_returns), "episodes": len(all_returns), "phase_joint": int(any(joint))})
    if len(clocks) == 1:
        row.update(per_group[0])
        row.update({"task_index": clocks[0].task_index, "task": clocks[0].task})
        return row
    row["joint_groups"] = int(sum(joint))
    for key in per_group[0]:
        row[key] = float(np.mean([m[key] for m in per_group]))
    for g, (metrics, rets, clock) in enumerate(zip(per_group, returns, clocks, strict=True)):
        prefix = f"group{g}/"
        row.update({prefix + k: v for k, v in metrics.items()})
        row.update({prefix + "episode_return": _mean(rets), prefix + "task": clock.task,
                    prefix + "task_index": clock.task_index, prefix + "phase_joint": int(joint[g])})
    return row


def meta_train(cfg: DictConfig, run_dir: Path, group: str | None = None, progress: bool = True,
               resume: bool = False) -> dict[str, Any]:
    """Meta-train into ``run_dir``; with ``resume``, continue from its latest checkpoint (metrics after it are
    dropped, so none is lost or duplicated beyond the work since that checkpoint).

    ``schedule.n_groups`` task groups run side by side (``mlsh.groups``): every iteration each group collects
    ``schedule.rollout_steps`` primitive steps and its master trains on them; the sub-policies take one update from
    the groups then in their joint phase. A checkpoint is written whenever a task finishes; the run stops once
    ``schedule.n_tasks`` tasks have finished (tasks still running in other groups are dropped)."""
    validate(cfg)
    setup_torch(cfg)
    run_dir = Path(run_dir)
    sched = cfg.schedule
    n_groups = int(sched.get("n_groups", 1))
    venv = make_task_env(cfg, seed=cfg.seed * 1000)
    learner = make_learner(cfg, venv)
    rng = task_rng(cfg.seed, "train")
    per_task = sched.warmup_iters + sched.joint_iters
    # The baselines have no warmup: they update their policy every iteration.
    warmup = sched.warmup_iters if cfg.algo.name == "mlsh" else 0
    if cfg.get("init_from") and not resume:
        learner.load(checkpoint.resolve(cfg.init_from))
    if resume:
        pos = _restore(run_dir, learner, rng, per_task)
    else:
        kind = sched.get("stagger", "original")
        pos = {"clocks": [GroupClock(g, it=-stagger(g, sched.warmup_iters, sched.joint_iters, kind))
                          for g in range(n_groups)],
               "sampled": 0, "done": 0, "step": 0, "finals": [], "warmups": [], "minutes": 0.0}
    clocks: list[GroupClock] = pos["clocks"]
    sampled, done, step = pos["sampled"], pos["done"], pos["step"]
    finals, warmups, minutes_before = pos["finals"], pos["warmups"], pos["minutes"]

    def start_tasks() -> None:
        nonlocal sampled
        for c in clocks:
            if c.task_index < 0 or c.it >= per_task:  # no task yet (the first keeps its stagger), or finished
                c.task, c.task_index, c.warmup_return = sample_task(venv, rng), sampled, None
                c.it = 0 if c.it >= per_task else c.it
                sampled += 1
                learner.start_task(c.task, c.group)

    logger = RunLogger(run_dir, cfg, group=group, job_type=cfg.algo.name, name=run_dir.name, resume=resume)
    start, start_step = time.perf_counter(), step
    bar = tqdm(total=sched.n_tasks, initial=done, unit="task", disable=not progress, dynamic_ncols=True)
    exit_code = 1
    try:
        start_tasks()
        while done < sched.n_tasks:
            t0 = time.perf_counter()
            joint = [c.joint(warmup) for c in clocks]
            shared, per_group = learner.iterate(joint)
            returns = [venv.pop(sl) for sl in learner.slices]
            step += n_groups * sched.rollout_steps
            row = iteration_metrics(shared, per_group, returns, clocks, joint)
            row["steps_per_second"] = n_groups * sched.rollout_steps / (time.perf_counter() - t0)
            row["time_minutes"] = minutes_before + (time.perf_counter() - start) / 60
            logger.log(row, step)
            finished = []
            for c, rets in zip(clocks, returns, strict=True):
                if warmup > 0 and c.it == warmup - 1:
                    c.warmup_return = _mean(rets)
                c.it += 1
                if c.it == per_task:
                    finished.append((c, _mean(rets)))
            for c, final in finished:
                finals.append(final)
                if c.warmup_return is not None:
                    warmups.append(c.warmup_return)
                logger.log({"task/final_return": final, "task/warmup_return": c.warmup_return,
                            "task/index": c.task_index, "task/task": c.task, "task/group": c.group}, step)
                done += 1
            bar.update(len(finished))
            bar.set_postfix(steps=step, ret=f"{row['episode_return']:.1f}",
                            sps=f"{(step - start_step) / (time.perf_counter() - start):.0f}")
            if not finished:
                continue
            state = {"global_step": step, "algo": cfg.algo.name, "tasks_done": done, "tasks_sampled": sampled,
                     "groups": [c.state() for c in clocks], "task_rng": rng.bit_generator.state}
            checkpoint.save(learner, run_dir, done - 1, state, keep_last=cfg.checkpoint.get("keep_last"))
            if sched.get("max_minutes") and time.perf_counter() - start > 60 * sched.max_minutes:
                break
            # MLSH's early stop reads the return at the end of warmup: a fresh master over the current sub-policies
            target, window = sched.get("target_return"), sched.get("target_window", 20)
            stop_on = warmups if warmup > 0 else finals
            if target is not None and len(stop_on) >= window and np.mean(stop_on[-window:]) >= target:
                break
            if done < sched.n_tasks:
                start_tasks()
        exit_code = 0
    finally:
        bar.close()
        elapsed = time.perf_counter() - start
        summary = {
            "tasks_done": done,
            "global_step": step,
            "minutes": elapsed / 60,
            "steps_per_second": (step - start_step) / max(elapsed, 1e-9),
            "final_return_last10": float(np.mean(finals[-10:])) if finals else float("nan"),
            "warmup_return_last10": float(np.mean(warmups[-10:])) if warmups else float("nan"),
        }
        logger.summary(summary)
        logger.close(exit_code)
        venv.close()
    return summary
