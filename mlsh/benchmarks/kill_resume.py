"""Kill-and-resume trials: is a run killed at a random moment and resumed identical to one never killed?

    python -m mlsh.benchmarks.kill_resume --trials 10 [--out DIR] [run.py overrides ...]

One uninterrupted run, then ``--trials`` runs each killed (SIGKILL; every ``--sigterm-every``-th trial SIGTERM)
after a random number of logged rows plus a random delay of up to 0.3 s, so that kills land inside tasks, between
them and during checkpoint writes, then resumed with ``python -m mlsh.resume``. A trial is identical when every
metrics row (timing columns aside) and every weight of every model in the last checkpoint match the uninterrupted
run, and the W&B run (offline) holds every row once. Prints one line per trial and the count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3 import PPO

from mlsh import checkpoint
from mlsh.benchmarks import cli_description
from mlsh.runlog import read_metrics, wandb_local_history

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("steps_per_second", "time_minutes")
DEFAULT = ("env=movement_bandits", "schedule.n_tasks=8", "schedule.n_envs=20", "schedule.rollout_steps=1000")


def start(run_dir: Path, overrides: list[str]) -> subprocess.Popen:
    """run.py into ``run_dir``; its output goes to ``<run_dir>.log`` beside it."""
    with open(run_dir.with_name(run_dir.name + ".log"), "w") as log:
        return subprocess.Popen([sys.executable, "run.py", *overrides, "logger.mode=offline", "progress_bar=false",
                                 f"hydra.run.dir={run_dir}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "WANDB_MODE": "offline"})


def differences(a: Path, b: Path) -> list[str]:
    ra = [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(a)]
    rb = [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(b)]
    found = []
    if ra != rb:
        first = next((i for i, (x, y) in enumerate(zip(ra, rb, strict=False)) if x != y), min(len(ra), len(rb)))
        found.append(f"metrics differ from row {first} ({len(ra)} vs {len(rb)} rows)")
    ca, cb = checkpoint.latest(a), checkpoint.latest(b)
    if ca.name != cb.name:
        found.append(f"last checkpoint {ca.name} vs {cb.name}")
    for f in sorted(ca.glob("*.zip")):
        pa, pb = PPO.load(f, device="cpu").policy.state_dict(), PPO.load(cb / f.name, device="cpu").policy.state_dict()
        if any(not th.equal(pa[k], pb[k]) for k in pa):
            found.append(f"weights of {f.name} differ")
    if [r["global_step"] for r in wandb_local_history(b)] != [r["global_step"] for r in read_metrics(b)]:
        found.append("W&B rows differ from metrics.jsonl")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.kill_resume",
                                     description=cli_description(__doc__))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--sigterm-every", type=int, default=4, help="every n-th trial sends SIGTERM (0: never)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help=f"run.py overrides (default {' '.join(DEFAULT)})")
    args = parser.parse_args()
    overrides = args.overrides or list(DEFAULT)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    root = args.out or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    shutil.rmtree(root / "reference", ignore_errors=True)
    t0 = time.time()
    if start(root / "reference", overrides).wait() != 0:
        tail = (root / "reference.log").read_text().strip().splitlines()[-5:]
        raise SystemExit("the uninterrupted run failed (" + str(root / "reference.log") + "):\n" + "\n".join(tail))
    total = len(read_metrics(root / "reference"))
    print(f"reference: {total} rows in {time.time() - t0:.0f} s ({' '.join(overrides)})", flush=True)
    rng = np.random.default_rng(args.seed)
    same = 0
    for trial in range(args.trials):
        run_dir = root / f"trial{trial}"
        shutil.rmtree(run_dir, ignore_errors=True)
        sig = signal.SIGTERM if args.sigterm_every and trial % args.sigterm_every == args.sigterm_every - 1 \
            else signal.SIGKILL
        after, delay = int(rng.integers(1, total)), float(rng.uniform(0, 0.3))
        proc = start(run_dir, overrides)
        metrics = run_dir / "metrics.jsonl"
        while proc.poll() is None and (not metrics.exists() or len(metrics.read_text().splitlines()) < after):
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(sig)
        code = proc.wait()
        kept = len(read_metrics(run_dir)) if metrics.exists() else 0
        resumed = subprocess.run([sys.executable, "-m", "mlsh.resume", str(run_dir)], cwd=ROOT,
                                 capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
        problems = [f"resume failed: {resumed.stderr.strip().splitlines()[-1]}"] if resumed.returncode else \
            differences(root / "reference", run_dir)
        same += not problems
        print(f"trial {trial}: {signal.Signals(sig).name} after {after} rows + {delay:.2f} s (exit {code}, "
              f"{kept} rows kept): {'identical' if not problems else '; '.join(problems)}", flush=True)
    if args.out is None and same == args.trials:  # a temporary folder whose runs are all as they should be
        shutil.rmtree(root, ignore_errors=True)
        root = "removed"
    print(f"{same} of {args.trials} resumed runs identical to the uninterrupted run ({root})")


if __name__ == "__main__":
    main()
