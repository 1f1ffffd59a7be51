"""Meta-training, baselines and the held-out transfer protocol for one env and one seed per call:

    python -m mlsh.benchmarks.transfer --env movement_bandits --seed 0     # one seed (run seeds in parallel)
    python -m mlsh.benchmarks.transfer --env movement_bandits              # the table of every seed done

Per seed: (1) MLSH meta-trains (``run.py``) for at most ``--minutes``, stopping early once the mean final return of
the last 20 training tasks reaches ``--target`` (if given); (2) each baseline in ``--baselines``: ``shared`` trains
one policy on the same task distribution for the same number of tasks, hence the same primitive steps; ``scratch``
needs no training; ``option_critic`` meta-trains for the same number of tasks, like ``shared``; (3) the transfer
protocol on ``--tasks`` held-out tasks with ``--updates`` updates: fresh master over frozen sub-policies (MLSH),
fine-tuning (shared), a fresh policy (scratch), a fresh critic and fresh terminations over the frozen intra-option
policies (option-critic); (4) where the env module has an ``oracle_action`` (a policy that knows the task), its
return on the same held-out tasks and env seeds.
Everything lands in ``<out>/seed<S>/``; ``summary.json`` holds the figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
from omegaconf import OmegaConf

from mlsh.benchmarks import cli_description
from mlsh.evaluate import EVAL_ENV_SEED_OFFSET, evaluate_run, load_run_config, plot_eval, transfer
from mlsh.learners import make_task_env, sample_task, task_rng

ROOT = Path(__file__).resolve().parents[2]


def train(env: str, algo: str, seed: int, run_dir: Path, *overrides: str) -> dict:
    if not (run_dir / "checkpoints").exists():
        cmd = [sys.executable, "run.py", f"env={env}", f"algo={algo}", f"seed={seed}",
               "logger.mode=offline", "progress_bar=false", f"hydra.run.dir={run_dir}", *overrides]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "WANDB_MODE": "offline"})
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    finals = [r for r in rows if "task/final_return" in r]
    minutes = max(r.get("time_minutes", 0) for r in rows)
    return {"tasks": len(finals), "steps": rows[-1]["global_step"], "minutes": minutes}


def oracle_return(cfg, seed: int, n_tasks: int) -> float | None:
    """Mean episode return of the env module's ``oracle_action`` on the held-out tasks and env seeds (None if the
    env has no oracle)."""
    module = importlib.import_module(gym.spec(cfg.env.id).entry_point.split(":")[0])
    oracle_action = getattr(module, "oracle_action", None)
    if oracle_action is None:
        return None
    venv = make_task_env(cfg, seed=EVAL_ENV_SEED_OFFSET + seed * 1000, n_groups=1)
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


def done_before(base: Path, n_tasks: int, n_updates: int) -> tuple[dict, dict]:
    """For ``--add``: the training figures and the evaluations of a seed that ran before, checked against the
    protocol asked now."""
    path = base / "summary.json"
    if not path.exists():
        raise SystemExit(f"--add: {path} does not exist; run the seed without --add first")
    summary = json.loads(path.read_text())
    if (summary["n_tasks"], summary["n_updates"]) != (n_tasks, n_updates):
        raise SystemExit(f"--add: {path} was evaluated on {summary['n_tasks']} tasks with {summary['n_updates']} "
                         f"updates, not --tasks {n_tasks} --updates {n_updates}")
    return summary["training"], {a: json.loads((base / a / "eval.json").read_text()) for a in summary["curves"]}


def run_seed(env: str, seed: int, out: Path, minutes: float, target: float | None, n_tasks: int, n_updates: int,
             baselines: list[str], overrides: list[str], add: bool = False) -> dict:
    """One seed; with ``add``, a seed done before keeps its runs and evaluations and only the baselines it lacks
    are trained and evaluated."""
    base = out / f"seed{seed}"
    if add:
        trained, results = done_before(base, n_tasks, n_updates)
        baselines = [b for b in baselines if b not in results]
    else:
        stop = [f"schedule.target_return={target}", "schedule.n_tasks=100000"] if target is not None else []
        trained = {"mlsh": train(env, "mlsh", seed, base / "mlsh", f"schedule.max_minutes={minutes}", *stop,
                                 *overrides)}
        results = {}
    for algo in ("shared", "option_critic"):
        if algo in baselines:
            trained[algo] = train(env, algo, seed, base / algo, f"schedule.n_tasks={trained['mlsh']['tasks']}",
                                  *[o for o in overrides if not o.startswith(("schedule.n_tasks", "algo."))])
    for algo in trained:
        if algo not in results:
            print(f"evaluating {algo} (seed {seed})", flush=True)
            results[algo] = evaluate_run(base / algo, n_tasks, n_updates)
    cfg = load_run_config(base / "mlsh")
    if "scratch" in baselines:
        scratch_cfg = cfg.copy()
        scratch_cfg.algo = OmegaConf.load(ROOT / "conf" / "algo" / "scratch.yaml")
        print(f"evaluating scratch (seed {seed})", flush=True)
        results["scratch"] = transfer(scratch_cfg, None, n_tasks, n_updates, seed)
        (base / "scratch").mkdir(parents=True, exist_ok=True)
        (base / "scratch" / "eval.json").write_text(json.dumps(results["scratch"], indent=2))
    oracle = oracle_return(cfg, seed, n_tasks)
    title = f"{env} held-out transfer, seed {seed}" + (f" (oracle {oracle:.1f})" if oracle is not None else "")
    plot_eval(list(results.items()), base / "transfer.png", title=title)
    summary = {
        "env": env,
        "seed": seed,
        "training": trained,
        "oracle": oracle,
        "curves": {k: v["mean_return"] for k, v in results.items()},
        "final": {k: v["mean_return"][-1] for k, v in results.items()},
        "n_tasks": n_tasks,
        "n_updates": n_updates,
        "rollout_steps": results["mlsh"]["rollout_steps"],
    }
    (base / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_extra(row: dict, extra: str) -> None:
    """``ALGO/NAME``: the evaluation ``python -m mlsh.evaluate <seed dir>/ALGO --name NAME algo.<key>=<value>``
    wrote, as one more curve of the seed, labelled with its overrides."""
    algo, sep, name = extra.partition("/")
    path = row["_dir"] / algo / f"{name}.json"
    if not sep or not name:
        raise SystemExit(f"--extra {extra!r}: give ALGO/NAME, e.g. option_critic/eval_t50")
    if not path.exists():
        return  # not (yet) on this seed: '-' in the table, as a baseline added part way through the seeds
    result = json.loads(path.read_text())
    label = f"{algo}[{','.join(result.get('overrides') or [name])}]"
    row["curves"][label] = result["mean_return"]
    row["final"][label] = result["mean_return"][-1]


def report(out: Path, extras: list[str] = ()) -> None:
    rows = [json.loads(p.read_text()) | {"_dir": p.parent} for p in sorted(out.glob("seed*/summary.json"))]
    if not rows:
        raise SystemExit(f"no seed*/summary.json under {out}")
    for row in rows:
        for extra in extras:
            add_extra(row, extra)
    algos = list(dict.fromkeys(a for r in rows for a in r["final"]))  # a seed may lack one (--add part way)
    print(f"{rows[0]['env']} transfer: mean episode return on {rows[0]['n_tasks']} held-out tasks after "
          f"{rows[0]['n_updates']} updates (each update on one rollout of the training size)")
    head = f"{'seed':>4} " + " ".join(f"{a:>8}" for a in algos) + f" {'oracle':>7} "
    head += " ".join(f"{a + '/or':>10}" for a in algos) + f" {'MLSH min':>9} {'tasks':>6} {'M steps':>8}"
    print(head)
    for r in rows:
        t, oracle = r["training"]["mlsh"], r["oracle"]
        final = r["final"]
        line = f"{r['seed']:>4} " + " ".join(f"{final[a]:>8.1f}" if a in final else f"{'-':>8}" for a in algos)
        line += f" {oracle:>7.1f} " + " ".join(f"{final[a] / oracle:>10.2f}" if a in final else f"{'-':>10}"
                                               for a in algos) if oracle else \
            f" {'-':>7} " + " ".join(f"{'-':>10}" for _ in algos)
        line += f" {t['minutes']:>9.1f} {t['tasks']:>6} {t['steps'] / 1e6:>8.2f}"
        print(line)
    for r in rows:
        print(f"seed {r['seed']} meta-training: " + "; ".join(
            f"{a} {t['steps'] / 1e6:.2f} M steps, {t['tasks']} tasks, {t['minutes']:.1f} min"
            for a, t in r["training"].items()))
    for r in rows:
        for a in (a for a in algos if a in r["curves"]):
            print(f"seed {r['seed']} {a:>7} curve (0..{r['n_updates']} updates): "
                  + " ".join(f"{v:.1f}" for v in r["curves"][a]))
    print(f"wrote {plot_seeds(rows, out / 'transfer_seeds.png')}")


def rollout_steps(row: dict) -> int | None:
    """Primitive steps per held-out update: in the summary, or (summaries written before it was) in MLSH's
    evaluation beside it."""
    if "rollout_steps" in row:
        return row["rollout_steps"]
    path = row.get("_dir", Path()) / "mlsh" / "eval.json"
    return json.loads(path.read_text()).get("rollout_steps") if path.exists() else None


def plot_seeds(rows: list[dict], out: Path) -> Path:
    """Each algorithm's held-out curve: the mean over seeds, a band from the lowest to the highest seed, and every
    seed as a thin line; the oracle's mean as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, algo in enumerate(dict.fromkeys(a for r in rows for a in r["curves"])):
        curves = np.array([r["curves"][algo] for r in rows if algo in r["curves"]], dtype=float)
        x = np.arange(curves.shape[1])
        color = f"C{i}"
        ax.plot(x, curves.mean(axis=0), marker="o", ms=3, color=color, label=f"{algo} (mean of {len(curves)} seeds)")
        ax.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=color, alpha=0.2)
        for c in curves:
            ax.plot(x, c, color=color, lw=0.6, alpha=0.5)
    oracles = [r["oracle"] for r in rows if r["oracle"] is not None]
    if oracles:
        ax.axhline(np.mean(oracles), color="k", ls="--", lw=1, label=f"oracle ({np.mean(oracles):.1f})")
    ax.set_xlabel("updates on the held-out task (master updates for MLSH)")
    rollout = rollout_steps(rows[0])
    if rollout:  # the same x as primitive steps: point u is the rollout after u * rollout primitive steps
        top = ax.secondary_xaxis("top", functions=(lambda u: u * rollout / 1e3, lambda k: k * 1e3 / rollout))
        top.set_xlabel(f"primitive steps on the task before the rollout, thousands ({rollout:,} per update)",
                       fontsize=8)
    ax.set_ylabel("mean episode return")
    ax.set_title(f"{rows[0]['env']}: transfer to {rows[0]['n_tasks']} held-out tasks, seeds "
                 + ",".join(str(r["seed"]) for r in rows) + " (band: min-max over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.transfer",
                                     description=cli_description(__doc__))
    parser.add_argument("--env", default="movement_bandits", help="a conf/env name")
    parser.add_argument("--seed", type=int, action="append", help="seed(s) to run; none: print the table")
    parser.add_argument("--out", type=Path, default=None, help="default outputs/bench/<env>_transfer")
    parser.add_argument("--minutes", type=float, default=30.0, help="meta-training wall-clock cap per seed")
    parser.add_argument("--target", type=float, default=None, help="early stop: mean final return, last 20 tasks")
    parser.add_argument("--tasks", type=int, default=20, help="held-out tasks")
    parser.add_argument("--updates", type=int, default=10, help="master updates on each held-out task")
    parser.add_argument("--baselines", default="shared,scratch", help="comma-separated: shared, scratch, option_critic")
    parser.add_argument("--add", action="store_true",
                        help="with --seed: keep each seed's runs and evaluations, add the baselines it lacks")
    parser.add_argument("--extra", action="append", default=[],
                        help="ALGO/NAME: also report each seed's ALGO/NAME.json, an evaluation by "
                             "python -m mlsh.evaluate <seed dir>/ALGO --name NAME with changed held-out settings")
    parser.add_argument("overrides", nargs="*", help="extra run.py overrides for MLSH and shared training")
    args = parser.parse_args()
    out = args.out or ROOT / "outputs" / "bench" / f"{args.env}_transfer"
    os.environ.setdefault("WANDB_MODE", "offline")
    baselines = [b for b in args.baselines.split(",") if b]
    for seed in args.seed or []:
        run_seed(args.env, seed, out, args.minutes, args.target, args.tasks, args.updates, baselines, args.overrides,
                 args.add)
    report(out, args.extra)


if __name__ == "__main__":
    main()
