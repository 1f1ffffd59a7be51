"""The learning target of the core issue, on MovementBandits, for one seed per call (run seeds in parallel):

    python -m mlsh.benchmarks.bandits_transfer --seed 0          # meta-train, baselines, transfer, oracle
    python -m mlsh.benchmarks.bandits_transfer                   # the side-by-side table of every seed done

Per seed: (1) MLSH meta-trains (``run.py``) for at most ``--minutes``, stopping early once the mean final return of
the last 20 training tasks reaches ``--target``; (2) the shared-policy baseline trains on the same task
distribution for the same number of tasks, hence the same primitive steps; (3) the transfer protocol on
``--tasks`` held-out tasks with ``--updates`` updates: fresh master over frozen sub-policies (MLSH), fine-tuning
(shared), a fresh policy (scratch); (4) an oracle that walks straight to the correct goal, on the same held-out
tasks and env seeds. Everything lands in ``<out>/seed<S>/``; ``summary.json`` holds the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from envs.movement_bandits import oracle_action
from mlsh.evaluate import EVAL_ENV_SEED_OFFSET, evaluate_run, load_run_config, plot_eval, transfer
from mlsh.learners import make_task_env, sample_task, task_rng

ROOT = Path(__file__).resolve().parents[2]


def train(algo: str, seed: int, run_dir: Path, *overrides: str) -> dict:
    if not (run_dir / "checkpoints").exists():
        cmd = [sys.executable, "run.py", "env=movement_bandits", f"algo={algo}", f"seed={seed}",
               "logger.mode=offline", "progress_bar=false", f"hydra.run.dir={run_dir}", *overrides]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "WANDB_MODE": "offline"})
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    finals = [r for r in rows if "task/final_return" in r]
    minutes = max(r.get("time_minutes", 0) for r in rows)
    return {"tasks": len(finals), "steps": rows[-1]["global_step"], "minutes": minutes}


def oracle_return(cfg, seed: int, n_tasks: int) -> float:
    """Mean episode return of the walk-to-the-correct-goal policy on the held-out tasks and env seeds."""
    venv = make_task_env(cfg, seed=EVAL_ENV_SEED_OFFSET + seed * 1000)
    rng = task_rng(seed, "heldout")
    envs_ = [venv.get_attr("unwrapped", indices=[i])[0] for i in range(venv.num_envs)]
    per_env = cfg.schedule.rollout_steps // venv.num_envs
    means = []
    for _ in range(n_tasks):
        venv.set_options({"task": sample_task(venv, rng)})
        venv.reset()
        for _ in range(per_env):
            venv.step(np.array([oracle_action(e) for e in envs_]))
        means.append(np.mean(venv.pop()))
    venv.close()
    return float(np.mean(means))


def run_seed(seed: int, out: Path, minutes: float, target: float, n_tasks: int, n_updates: int) -> dict:
    base = out / f"seed{seed}"
    mlsh = train("mlsh", seed, base / "mlsh", f"schedule.max_minutes={minutes}", f"schedule.target_return={target}",
                 "schedule.n_tasks=100000")
    shared = train("shared", seed, base / "shared", f"schedule.n_tasks={mlsh['tasks']}")
    results = {}
    for algo in ("mlsh", "shared"):
        print(f"evaluating {algo} (seed {seed})", flush=True)
        results[algo] = evaluate_run(base / algo, n_tasks, n_updates)
    cfg = load_run_config(base / "mlsh")
    scratch_cfg = cfg.copy()
    scratch_cfg.algo = OmegaConf.load(ROOT / "conf" / "algo" / "scratch.yaml")
    print(f"evaluating scratch (seed {seed})", flush=True)
    results["scratch"] = transfer(scratch_cfg, None, n_tasks, n_updates, seed)
    (base / "scratch").mkdir(parents=True, exist_ok=True)
    (base / "scratch" / "eval.json").write_text(json.dumps(results["scratch"], indent=2))
    oracle = oracle_return(cfg, seed, n_tasks)
    plot_eval([(k, v) for k, v in results.items()], base / "transfer.png",
              title=f"MovementBandits held-out transfer, seed {seed} (oracle {oracle:.1f})")
    summary = {
        "seed": seed,
        "mlsh_training": mlsh,
        "shared_training": shared,
        "oracle": oracle,
        **{f"{k}_curve": v["mean_return"] for k, v in results.items()},
        **{f"{k}_final": v["mean_return"][-1] for k, v in results.items()},
        "mlsh_best": max(results["mlsh"]["mean_return"]),
        "n_tasks": n_tasks,
        "n_updates": n_updates,
    }
    (base / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def report(out: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("seed*/summary.json"))]
    if not rows:
        raise SystemExit(f"no seed*/summary.json under {out}")
    print(f"MovementBandits transfer: mean episode return on {rows[0]['n_tasks']} held-out tasks after "
          f"{rows[0]['n_updates']} updates (rollout = one update's data)")
    print(f"{'seed':>4} {'MLSH':>6} {'shared':>7} {'scratch':>8} {'oracle':>7} {'MLSH/or':>8} {'shared/or':>9} "
          f"{'meta-train min':>15} {'tasks':>6} {'M steps':>8}")
    for r in rows:
        t = r["mlsh_training"]
        print(f"{r['seed']:>4} {r['mlsh_final']:>6.1f} {r['shared_final']:>7.1f} {r['scratch_final']:>8.1f} "
              f"{r['oracle']:>7.1f} {r['mlsh_final'] / r['oracle']:>8.2f} {r['shared_final'] / r['oracle']:>9.2f} "
              f"{t['minutes']:>15.1f} {t['tasks']:>6} {t['steps'] / 1e6:>8.2f}")
    for r in rows:
        print(f"seed {r['seed']} MLSH curve (0..{r['n_updates']} updates): "
              + " ".join(f"{v:.1f}" for v in r["mlsh_curve"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, action="append", help="seed(s) to run")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "bandits_transfer")
    parser.add_argument("--minutes", type=float, default=30.0, help="meta-training wall-clock cap per seed")
    parser.add_argument("--target", type=float, default=38.0, help="early stop: mean final return, last 20 tasks")
    parser.add_argument("--tasks", type=int, default=20, help="held-out tasks")
    parser.add_argument("--updates", type=int, default=10, help="master updates on each held-out task")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    for seed in args.seed or []:
        run_seed(seed, args.out, args.minutes, args.target, args.tasks, args.updates)
    report(args.out)


if __name__ == "__main__":
    main()
