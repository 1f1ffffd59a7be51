"""The transfer protocol on held-out tasks: ``python -m mlsh.evaluate <run dir>``.

For each of ``--tasks`` tasks drawn from the held-out stream (disjoint from training's), starting from the run's
latest checkpoint: MLSH keeps its sub-policies frozen and trains a fresh master; option-critic keeps its
intra-option policies frozen and trains a fresh critic and fresh termination functions; the shared policy is fine-tuned
(from the checkpoint, separately for each task); the scratch baseline trains a fresh policy. Every learner
collects ``schedule.rollout_steps`` primitive steps per update, like in training (over fewer envs where the run's
would not finish an episode each in a rollout: ``whole_episode_envs``). The mean episode return of the
rollout after u updates (u = 0 .. ``--updates``) is the curve; ``eval.json`` and ``eval.png`` go into the run
folder. ``algo.<key>=<value>`` arguments change the held-out learners' settings from the run's (``--name`` keeps
such an evaluation beside the default one). An existing ``<name>.json`` is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlsh import checkpoint
from mlsh.config import ConfigError, validate
from mlsh.learners import freeze_obs_stats, make_learner, make_task_env, sample_task, task_rng
from mlsh.train import setup_torch

EVAL_ENV_SEED_OFFSET = 1_000_000  # env seeds disjoint from training's (seed * 1000 + i)


def load_run_config(run_dir: Path) -> DictConfig:
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {path} is missing")
    try:
        cfg = OmegaConf.load(path)
        if not isinstance(cfg, DictConfig) or "env" not in cfg or "algo" not in cfg:
            raise ValueError("it holds no env and algo")
        validate(cfg, started=True)
    except ConfigError:
        raise
    except (ValueError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise ValueError(f"{path} is not a readable run config ({str(err).splitlines()[0]})") from None
    return cfg


def whole_episode_envs(cfg: DictConfig) -> int:
    """The envs of a held-out learner: the run's ``schedule.n_envs``, or the most below it that still let every env
    finish an episode in each rollout, so that no point of the curve lacks a return (a run with many envs per group
    can collect less than an episode per env an iteration; its masters bootstrap across iterations)."""
    n_envs, d, episode = cfg.schedule.n_envs, cfg.schedule.rollout_steps, cfg.env.get("episode_steps") or 0
    fits = (n for n in range(n_envs, 0, -1) if d % n == 0 and (d // n) % cfg.macro_duration == 0 and d // n >= episode)
    return next(fits, n_envs)


def transfer(cfg: DictConfig, ckpt: Path | None, n_tasks: int, n_updates: int, seed: int,
             progress: bool = False) -> dict[str, Any]:
    """Run the protocol; ``ckpt`` is None only for the scratch baseline, which needs no checkpoint."""
    cfg = cfg.copy()
    cfg.seed = seed
    OmegaConf.update(cfg, "schedule.n_groups", 1, force_add=True)  # one held-out task at a time
    cfg.schedule.n_envs = whole_episode_envs(cfg)
    setup_torch(cfg)
    venv = make_task_env(cfg, seed=EVAL_ENV_SEED_OFFSET + seed * 1000)
    learner = make_learner(cfg, venv)
    if ckpt is not None:
        learner.load(ckpt)
        freeze_obs_stats(venv)  # the loaded policies expect the training run's observation filter
    rng = task_rng(seed, "heldout")
    curves, tasks = [], []
    start = time.perf_counter()
    for i in range(n_tasks):
        task = sample_task(venv, rng)
        if ckpt is not None and cfg.algo.name == "shared":
            learner.load(ckpt)  # fine-tune from the meta-trained policy, independently for every task
        learner.start_task(task)
        curve = []
        # Point u: the mean return of rollout u, after u * rollout_steps primitive steps on the task. MLSH and PPO
        # collect it and then update (the return after u updates); option-critic learns within the rollout, so its
        # point u already includes that rollout's online learning. The x axis is equal primitive steps either way.
        for _ in range(n_updates + 1):
            learner.iterate(joint=False)
            returns = venv.pop()
            curve.append(float(np.mean(returns)) if returns else float("nan"))
        curves.append(curve)
        tasks.append(task)
        if progress:
            print(f"task {i + 1}/{n_tasks} ({task}): return {curve[0]:.1f} -> {curve[-1]:.1f}", flush=True)
    venv.close()
    arr = np.asarray(curves)
    return {
        "algo": cfg.algo.name,
        "checkpoint": None if ckpt is None else str(ckpt),
        "seed": seed,
        "n_tasks": n_tasks,
        "n_envs": cfg.schedule.n_envs,
        "rollout_steps": cfg.schedule.rollout_steps,
        "updates": list(range(n_updates + 1)),
        "mean_return": arr.mean(axis=0).tolist(),
        "std_return": arr.std(axis=0).tolist(),
        "final_return": float(arr[:, -1].mean()),
        "tasks": tasks,
        "per_task": curves,
        "minutes": (time.perf_counter() - start) / 60,
    }


def plot_eval(results: list[tuple[str, dict[str, Any]]], out: Path, title: str = "transfer to held-out tasks") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, res in results:
        x, mean, std = np.asarray(res["updates"]), np.asarray(res["mean_return"]), np.asarray(res["std_return"])
        ax.plot(x, mean, marker="o", ms=3, label=label)
        ax.fill_between(x, mean - std / np.sqrt(res["n_tasks"]), mean + std / np.sqrt(res["n_tasks"]), alpha=0.2)
    ax.set_xlabel("master updates (policy updates for the baselines)")
    ax.set_ylabel("mean episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


_ABSENT = object()


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``algo.<key>=<value>`` items: the held-out learners' settings changed from the run's (a master's learning rate,
    option-critic's target interval); only keys the run's config has, checked as a run's config is."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.startswith("algo.") or key == "algo.name":
            raise ValueError(f"override {item!r}: give algo.<key>=<value> (the held-out learners' settings)")
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise ValueError(f"override {item!r}: the run's config has no {key}")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
    if overrides:
        validate(cfg, started=True)
    return cfg


def evaluate_run(run_dir: Path, n_tasks: int = 20, n_updates: int = 10, seed: int | None = None,
                 checkpoint_dir: Path | None = None, progress: bool = False, overrides: list[str] = (),
                 name: str = "eval") -> dict[str, Any]:
    """The protocol on a run folder; writes ``<name>.json`` and ``<name>.png`` into it."""
    run_dir = Path(run_dir)
    cfg = apply_overrides(load_run_config(run_dir), list(overrides))
    ckpt = None
    if cfg.algo.name != "scratch":
        # verified against its manifest; the latest good one by default (a bad newer one is skipped with a warning)
        ckpt = checkpoint.resolve(checkpoint_dir) if checkpoint_dir else checkpoint.latest(run_dir)
    result = transfer(cfg, ckpt, n_tasks, n_updates, cfg.seed if seed is None else seed, progress)
    result["run_dir"] = str(run_dir)
    result["overrides"] = list(overrides)
    (run_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    label = f"{cfg.algo.name} ({run_dir.name}{', ' + ' '.join(overrides) if overrides else ''})"
    plot_eval([(label, result)], run_dir / f"{name}.png")
    return result


def _describe(path: Path) -> str:
    """What an earlier evaluation file holds, in a few words (or why it cannot be read)."""
    try:
        old = json.loads(path.read_text())
        overrides = " ".join(old.get("overrides") or []) or "none"
        return f"{len(old['per_task'])} tasks, {len(old['updates']) - 1} updates, overrides: {overrides}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable: {type(err).__name__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tasks", type=int, default=20, help="held-out tasks (default 20)")
    parser.add_argument("--updates", type=int, default=10, help="master updates per task (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="held-out stream seed (default: the run's seed)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a checkpoints/task_* folder (default latest)")
    parser.add_argument("--name", default="eval", help="files written: <name>.json and <name>.png (default eval)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing <name>.json and <name>.png (without it, an existing one stops "
                             "the command before it starts)")
    parser.add_argument("overrides", nargs="*",
                        help="algo.<key>=<value>: held-out learners' settings changed from the run's "
                             "(e.g. algo.target_every=50)")
    args = parser.parse_intermixed_args(argv)  # run_dir, options, then overrides
    if args.tasks < 1 or args.updates < 0:
        parser.error("--tasks must be >= 1 and --updates >= 0")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32 - 1], got {args.seed}")
    if not args.name or Path(args.name).name != args.name:
        parser.error(f"--name must be a file name without a folder, got {args.name!r}")
    if args.overrides and args.name == "eval":
        parser.error("with overrides, give --name NAME: eval.json keeps the evaluation with the run's own settings")
    existing = args.run_dir / f"{args.name}.json"
    if existing.exists() and not args.overwrite:
        parser.error(f"{existing} exists ({_describe(existing)}); give --name NEW to keep both, or --overwrite to "
                     f"replace it")
    os.environ.setdefault("WANDB_MODE", "disabled")
    try:
        result = evaluate_run(args.run_dir, args.tasks, args.updates, args.seed, args.checkpoint, progress=True,
                              overrides=args.overrides, name=args.name)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    curve = " ".join(f"{v:.1f}" for v in result["mean_return"])
    print(f"{result['algo']}: mean return after 0..{args.updates} updates: {curve}")
    print(f"wrote {args.run_dir / (args.name + '.json')} and {args.run_dir / (args.name + '.png')}")


if __name__ == "__main__":
    main()
