"""Continue an interrupted run from its latest checkpoint: ``python -m mlsh.resume <run dir> [--n-tasks N]
[--max-minutes M]``.

The run's own config (``.hydra/config.yaml``) is used. The run continues exactly as if it had never stopped
(``mlsh.snapshot``): metrics logged after the checkpoint are dropped and redone identically, so ``metrics.jsonl``
has neither gaps nor duplicates; the W&B run is resumed by its id and keeps its group. A checkpoint that fails its
manifest is skipped, with a warning naming the bad file, for the newest good one. A run over several processes
resumes with as many: ``torchrun --nproc-per-node P -m mlsh.resume <run dir>``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from mlsh import checkpoint, distributed
from mlsh.config import distributed_timeout, validate
from mlsh.evaluate import load_run_config
from mlsh.faults import NonFiniteError
from mlsh.runlog import read_metrics, write_provenance
from mlsh.train import meta_train, stop_reason, task_returns, warmup_iters


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.resume", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--n-tasks", type=int, default=None, help="raise the run's schedule.n_tasks")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="raise the run's schedule.max_minutes (counted over the whole run, resumes included)")
    args = parser.parse_args(argv)
    try:
        cfg = load_run_config(args.run_dir)
        if args.n_tasks is not None:
            cfg.schedule.n_tasks = args.n_tasks
        if args.max_minutes is not None:
            cfg.schedule.max_minutes = args.max_minutes
        validate(cfg, started=True)  # the raised values too
        ended = _ended(args.run_dir, cfg)
        if ended is not None:
            raise ValueError(f"{args.run_dir} {ended}")
        world = distributed.init(distributed_timeout(cfg))
        if world.main and not (args.run_dir / "provenance.json").exists():  # killed before run.py wrote it
            write_provenance(args.run_dir)
        summary = meta_train(cfg, args.run_dir, progress=cfg.progress_bar, resume=True)
    except (FileNotFoundError, ValueError, NonFiniteError, distributed.PeerLost) as err:
        where = distributed.world()
        raise SystemExit(f"{f'process {where.rank} of {where.size}: ' if where.active else ''}error: {err}") from None
    if not world.main:
        if "stopped_by" in summary:
            raise SystemExit(128 + signal.Signals[summary["stopped_by"]].value)
        return
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    if "stopped_by" in summary:
        raised = "".join(f" --{flag} {value}" for flag, value in (("n-tasks", args.n_tasks),
                                                                   ("max-minutes", args.max_minutes))
                         if value is not None)  # not saved with the run: given again
        print(f"stopped by {summary['stopped_by']}; checkpoint {summary['checkpoint']}; continue with: "
              f"python -m mlsh.resume {args.run_dir}{raised}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.Signals[summary["stopped_by"]].value)


def _ended(run_dir: Path, cfg) -> str | None:
    """Why the run ended at its newest checkpoint, if it did there: the tests ``meta_train`` makes after a finished
    task (tasks done, minutes, target return), on the run's config with the raised values. None when it did not,
    or without a readable checkpoint (``meta_train`` says why)."""
    found = checkpoint.list_checkpoints(run_dir)
    if not found or found[-1].name.startswith("stop_"):  # stopped by a signal within a task: that task goes on
        return None
    try:
        state = checkpoint.read_state(found[-1])
        done, step = int(state["tasks_done"]), int(state["global_step"])
    except (checkpoint.CheckpointError, KeyError, TypeError, ValueError):
        return None
    sched = cfg.schedule
    if done >= sched.n_tasks:
        return (f"has done {done} tasks, its schedule.n_tasks is {sched.n_tasks}: nothing to resume "
                f"(--n-tasks N, more than {done}, extends it)")
    rows = [r for r in read_metrics(run_dir) if r["global_step"] <= step]
    now = [r["time_minutes"] for r in rows if r["global_step"] == step and "time_minutes" in r]
    minutes = now[-1] if now else 0.0  # without the checkpoint's row the time test cannot be made
    stop = stop_reason(sched, minutes, *task_returns(rows), warmup_iters(cfg))
    if stop is None:
        return None
    key, why = stop
    extend = f" (--max-minutes M, more than {minutes:.1f}, extends it)" if key == "max_minutes" else ""
    return f"{why}: nothing to resume{extend}"


if __name__ == "__main__":
    main()
