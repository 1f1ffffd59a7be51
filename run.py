"""Entry point: ``python run.py env=movement_bandits algo=mlsh`` (see conf/config.yaml for every option).

A run folder that already holds checkpoints of this config (a SLURM job requeued by the submitit launcher, or the
same ``hydra.run.dir`` given again) is resumed, exactly, instead of started over. A bad config value stops the run
before any work with a message naming it, and leaves no run folder behind; in a multirun only that job fails.
"""

import os
import shutil
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

os.environ.setdefault("MUJOCO_GL", "egl")


def _remove_hydra_files(run_dir, job_name: str) -> None:
    """Undo what Hydra wrote for a job that never started (its .hydra/ and log); the folder only if then empty."""
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / f"{job_name}.log").unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass  # it holds other files: leave them


def _fail(message: str, multirun: bool) -> float:
    if not multirun:
        raise SystemExit(message)
    print(message, file=sys.stderr, flush=True)  # this job fails alone; the sweep goes on
    return float("nan")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from pathlib import Path

    from mlsh import checkpoint
    from mlsh.config import ConfigError, validate
    from mlsh.faults import NonFiniteError
    from mlsh.runlog import write_provenance
    from mlsh.train import meta_train

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode.name == "MULTIRUN"
    name = f"job {hc.job.num} ({hc.job.override_dirname}): " if multirun else ""
    # a run was started here (a requeued job, or the same hydra.run.dir again): continue it
    resume = bool(checkpoint.list_checkpoints(run_dir)) or (run_dir / "metrics.jsonl").exists()
    try:
        validate(cfg)
    except ConfigError as err:
        if not resume:
            _remove_hydra_files(run_dir, hc.job.name)
        return _fail(f"{name}config error: {err}", multirun)
    if resume:
        print(f"{run_dir} holds a run: resuming it", file=sys.stderr, flush=True)
    else:
        write_provenance(run_dir)
    group = Path(hc.sweep.dir).name if multirun else None
    try:
        summary = meta_train(cfg, run_dir, group=group, progress=cfg.progress_bar, resume=resume)
    except (NonFiniteError, FileNotFoundError, ValueError) as err:
        return _fail(f"{name}error: {err}", multirun)
    print(f"run folder: {run_dir}\n" + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in summary.items()))
    if "stopped_by" in summary:
        print(f"stopped by {summary['stopped_by']}; checkpoint {summary['checkpoint']}; continue with: "
              f"python -m mlsh.resume {run_dir}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.Signals[summary["stopped_by"]].value)
    return summary["final_return_last10"]


if __name__ == "__main__":
    main()
