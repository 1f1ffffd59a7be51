"""The meta-training loop: sample a task, W warmup iterations (master only), U joint iterations, checkpoint, log.

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
from mlsh.learners import make_learner, make_task_env, sample_task, task_rng
from mlsh.runlog import RunLogger, read_metrics


def setup_torch(cfg: DictConfig) -> None:
    th.set_num_threads(int(cfg.get("torch_threads", 1)))
    set_random_seed(cfg.seed)


def _restore(run_dir: Path, learner, rng: np.random.Generator) -> tuple[int, int, list[float], float]:
    """Load the latest checkpoint; drop the metrics logged after it.

    Returns (next task, global step, final returns so far, minutes so far)."""
    ckpt = checkpoint.latest(run_dir)
    state = checkpoint.read_state(ckpt)
    learner.load(ckpt)
    rng.bit_generator.state = state["task_rng"]
    step = int(state["global_step"])
    rows = [r for r in read_metrics(run_dir) if r["global_step"] <= step]
    tmp = run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(run_dir / "metrics.jsonl")
    finals = [r["task/final_return"] for r in rows if "task/final_return" in r]
    minutes = max((r["time_minutes"] for r in rows if "time_minutes" in r), default=0.0)
    return int(state["task_index"]) + 1, step, finals, minutes


def meta_train(cfg: DictConfig, run_dir: Path, group: str | None = None, progress: bool = True,
               resume: bool = False) -> dict[str, Any]:
    """Meta-train into ``run_dir``; with ``resume``, continue from its latest checkpoint (metrics after it are
    dropped, so none is lost or duplicated beyond the unfinished task)."""
    validate(cfg)
    setup_torch(cfg)
    run_dir = Path(run_dir)
    venv = make_task_env(cfg, seed=cfg.seed * 1000)
    learner = make_learner(cfg, venv)
    rng = task_rng(cfg.seed, "train")
    sched = cfg.schedule
    iters_per_task = sched.warmup_iters + sched.joint_iters
    # The baselines have no warmup: they update their one policy every iteration.
    warmup = sched.warmup_iters if cfg.algo.name == "mlsh" else 0
    if cfg.get("init_from") and not resume:
        learner.load(checkpoint.resolve(cfg.init_from))
    first_task, step, final_returns, minutes_before = _restore(run_dir, learner, rng) if resume else (0, 0, [], 0.0)
    logger = RunLogger(run_dir, cfg, group=group, job_type=cfg.algo.name, name=run_dir.name, resume=resume)
    start, start_step = time.perf_counter(), step
    bar = tqdm(total=sched.n_tasks * iters_per_task, initial=first_task * iters_per_task, unit="it",
               disable=not progress, dynamic_ncols=True)
    exit_code = 1
    try:
        for task_index in range(first_task, sched.n_tasks):
            task = sample_task(venv, rng)
            learner.start_task(task)
            for it in range(iters_per_task):
                t0 = time.perf_counter()
                metrics = learner.iterate(joint=it >= warmup)
                returns = venv.pop()
                step += sched.rollout_steps
                mean_return = float(np.mean(returns)) if returns else float("nan")
                metrics.update({
                    "episode_return": mean_return,
                    "episodes": len(returns),
                    "task_index": task_index,
                    "task": task,
                    "phase_joint": int(it >= warmup),
                    "steps_per_second": sched.rollout_steps / (time.perf_counter() - t0),
                    "time_minutes": minutes_before + (time.perf_counter() - start) / 60,
                })
                logger.log(metrics, step)
                bar.update(1)
                bar.set_postfix(task=task_index, steps=step, ret=f"{mean_return:.1f}",
                                sps=f"{(step - start_step) / (time.perf_counter() - start):.0f}")
            final_returns.append(mean_return)
            logger.log({"task/final_return": mean_return, "task/index": task_index, "task/task": task}, step)
            state = {"global_step": step, "algo": cfg.algo.name, "task": task, "task_rng": rng.bit_generator.state}
            checkpoint.save(learner, run_dir, task_index, state,
                            keep_last=cfg.checkpoint.get("keep_last"))
            if sched.get("max_minutes") and time.perf_counter() - start > 60 * sched.max_minutes:
                break
            target, window = sched.get("target_return"), sched.get("target_window", 20)
            if target is not None and len(final_returns) >= window and np.mean(final_returns[-window:]) >= target:
                break
        exit_code = 0
    finally:
        bar.close()
        elapsed = time.perf_counter() - start
        summary = {
            "tasks_done": len(final_returns),
            "global_step": step,
            "minutes": elapsed / 60,
            "steps_per_second": (step - start_step) / max(elapsed, 1e-9),
            "final_return_last10": float(np.mean(final_returns[-10:])) if final_returns else float("nan"),
        }
        logger.summary(summary)
        logger.close(exit_code)
        venv.close()
    return summary
