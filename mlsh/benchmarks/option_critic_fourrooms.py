"""Option-critic alone on FourRooms with a fixed goal (issue 13's first target):

    python -m mlsh.benchmarks.option_critic_fourrooms --seeds 0 1 2 3 4 --start fixed
    python -m mlsh.benchmarks.option_critic_fourrooms --seeds 0 1 2 3 4 --start random

The env is this project's FourRooms with one goal (``--goal``, default 103) and episodes that end on reaching it
(``terminate_at_goal``, the option-critic paper's episodic task), from cell 62 (``--start fixed``) or a uniform
free cell (``--start random``), as in the option-critic paper. ``algo=option_critic`` with ``n_subpolicies=4``
trains for ``--steps`` primitive steps (one task, all parts learning). Then ``--episodes`` evaluation episodes
on envs with their own seeds, in two modes:

- *learned*: options chosen greedily over Q, actions drawn from the intra-option policies (what was learned);
- *greedy*: options and actions both greedy (the reference implementation's greedy play failed 91-97%).

Printed per seed and mode: the mean number of steps to first reach the goal (an episode that does not reach it
within the env's 100 steps counts 100: a lower bound), its ratio to the optimum, and the share of episodes that
reach the goal. The optimum is the expected first-passage time of the optimal policy, by value iteration on the
env's own transition model, averaged over the same start cells.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from envs.four_rooms import N_CELLS, FourRoomsEnv  # noqa: E402
from mlsh.benchmarks import cli_description
from mlsh.benchmarks.four_rooms_primitives import transition_matrices  # noqa: E402
from mlsh.learners import make_learner, make_task_env  # noqa: E402
from mlsh.train import setup_torch  # noqa: E402

CONF = Path(__file__).resolve().parents[2] / "conf"
LIMIT = 100  # FourRooms' max_episode_steps


def optimal_steps(goal: int, slip_prob: float = 1.0 / 3.0, tol: float = 1e-10) -> np.ndarray:
    """``T[s]``: the least expected number of steps from cell s to first reach ``goal`` (value iteration on the
    standard transition rule: T(goal) = 0, T(s) = 1 + min_a sum_s' P(s' | s, a) T(s'))."""
    P = transition_matrices(slip_prob)
    T = np.zeros(N_CELLS)
    for _ in range(100_000):
        new = 1 + (P @ T).min(axis=0)
        new[goal] = 0.0
        if np.abs(new - T).max() < tol:
            return new
        T = new
    raise RuntimeError("value iteration did not converge")


def config(seed: int, goal: int, start: str, steps: int, overrides: list[str]):
    n_envs = 16
    per_env = 100
    iters = max(1, steps // (n_envs * per_env))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "env=four_rooms", "algo=option_critic", "n_subpolicies=4", f"seed={seed}", "logger.mode=disabled",
            f"+env.kwargs.goals=[{goal}]", "+env.kwargs.terminate_at_goal=true",
            f"+env.kwargs.start={62 if start == 'fixed' else 'null'}",
            "schedule.n_groups=1", f"schedule.n_envs={n_envs}", f"schedule.rollout_steps={n_envs * per_env}",
            "macro_duration=1", "schedule.warmup_iters=0", f"schedule.joint_iters={iters}", "schedule.n_tasks=1",
            *overrides]), iters


def evaluate(learner, goal: int, start: str, episodes: int, seed: int, greedy: bool) -> np.ndarray:
    """Steps to first reach the goal in each of ``episodes`` episodes (LIMIT when it is not reached)."""
    out = []
    for ep in range(episodes):
        env = FourRoomsEnv(goals=[goal], start=62 if start == "fixed" else None, terminate_at_goal=True)
        obs, _ = env.reset(seed=10_000_000 + seed * 10_000 + ep)
        option, steps = np.array([-1]), LIMIT
        for t in range(1, LIMIT + 1):
            action, option = learner.act(obs[None], option, epsilon=0.0, greedy_actions=greedy)
            obs, _, terminated, _, _ = env.step(int(action[0]))
            if terminated:
                steps = t
                break
            if learner.terminate(obs[None], option)[0]:
                option = np.array([-1])
        out.append(steps)
    return np.asarray(out)


def run_seed(seed: int, goal: int, start: str, steps: int, episodes: int, overrides: list[str]) -> dict:
    cfg, iters = config(seed, goal, start, steps, overrides)
    setup_torch(cfg)
    venv = make_task_env(cfg, seed=seed * 1000)
    learner = make_learner(cfg, venv)
    learner.start_task(goal)
    t0 = time.perf_counter()
    curve = []
    for _ in range(iters):
        learner.iterate(joint=True)
        rets = venv.pop()
        curve.append(float(np.mean(rets)) if rets else float("nan"))
    minutes = (time.perf_counter() - t0) / 60
    T = optimal_steps(goal)
    starts = [62] if start == "fixed" else [c for c in range(N_CELLS) if c != goal]
    optimum = float(np.mean(T[starts]))
    res = {"seed": seed, "start": start, "goal": goal, "steps": iters * cfg.schedule.rollout_steps,
           "minutes": minutes, "optimal_steps": optimum, "train_success_curve": curve}
    for mode in ("learned", "greedy"):
        s = evaluate(learner, goal, start, episodes, seed, greedy=mode == "greedy")
        res[mode] = {"mean_steps": float(s.mean()), "ratio": float(s.mean() / optimum),
                     "success": float((s < LIMIT).mean())}
    venv.close()
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.option_critic_fourrooms",
                                     description=cli_description(__doc__))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--start", choices=("fixed", "random"), default="fixed")
    parser.add_argument("--goal", type=int, default=103)
    parser.add_argument("--steps", type=int, default=600_000, help="primitive steps of training per seed")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/option_critic_fourrooms"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. algo.policy_lr=0.05")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{'seed':>4} {'start':>6} {'steps':>8} {'min':>5} {'optimal':>7} | {'learned':>7} {'ratio':>5} "
          f"{'reach':>5} | {'greedy':>7} {'ratio':>5} {'reach':>5}")
    results = []
    for seed in args.seeds:
        r = run_seed(seed, args.goal, args.start, args.steps, args.episodes, args.overrides)
        results.append(r)
        a, b = r["learned"], r["greedy"]
        print(f"{seed:>4} {args.start:>6} {r['steps']:>8} {r['minutes']:>5.1f} {r['optimal_steps']:>7.2f} | "
              f"{a['mean_steps']:>7.2f} {a['ratio']:>5.2f} {a['success']:>5.2f} | {b['mean_steps']:>7.2f} "
              f"{b['ratio']:>5.2f} {b['success']:>5.2f}", flush=True)
        (args.out / f"{args.start}_seed{seed}.json").write_text(json.dumps(r, indent=2))
    ok = all(r["learned"]["ratio"] <= 1.5 and r["greedy"]["success"] >= 0.9 for r in results)
    print(f"target (learned within 1.5x of optimal, greedy reaches >= 90%) on every seed: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
