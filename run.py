"""Entry point: ``python run.py env=movement_bandits algo=mlsh`` (see conf/config.yaml for every option).

A run folder that already holds checkpoints of this config (a SLURM job requeued by the submitit launcher, or the
same ``hydra.run.dir`` given again) is resumed, exactly, instead of started over. A bad config value stops the run
before any work with a message naming it, and leaves no run folder behind; in a multirun only that job fails.

Several processes: ``torchrun --nproc-per-node P run.py env=... schedule.n_groups=G`` spreads the G task groups
over P processes (``mlsh.distributed``); rank 0 chooses the run folder and alone writes it.
"""

import atexit
import os
import shutil
import signal
import sys
import tempfile

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


class JobFailed(Exception):
    """A job of a multirun that failed: Hydra records it and runs the sweep's other jobs, then exits non-zero."""


def _fail(message: str, multirun: bool) -> float:
    if not multirun:
        raise SystemExit(message)
    print(message, file=sys.stderr, flush=True)
    raise JobFailed(message) from None  # not SystemExit, which would end the whole sweep here


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from pathlib import Path

    from mlsh import checkpoint, distributed
    from mlsh.config import ConfigError, distributed_timeout, validate
    from mlsh.faults import NonFiniteError
    from mlsh.runlog import write_provenance
    from mlsh.train import meta_train

    world = distributed.init(distributed_timeout(cfg))
    hc = HydraConfig.get()
    run_dir = Path(distributed.broadcast(hc.runtime.output_dir))  # rank 0's: the other ranks' Hydra writes nowhere
    multirun = hc.mode.name == "MULTIRUN"
    name = f"job {hc.job.num} ({hc.job.override_dirname}): " if multirun else ""
    if world.active:
        name = f"{name}process {world.rank} of {world.size}: "
    # a run was started here (a requeued job, or the same hydra.run.dir again): continue it
    resume = distributed.broadcast(bool(checkpoint.list_checkpoints(run_dir)) or (run_dir / "metrics.jsonl").exists())
    try:
        validate(cfg, processes=world.size, started=resume)
    except BaseException as err:  # a ConfigError, or a check that itself failed: nothing of this start stays
        if world.main and not resume:  # what Hydra wrote for this refused start goes
            _remove_hydra_files(run_dir, hc.job.name)
        elif world.main:  # the run's own config back in .hydra, which Hydra rewrote for this start
            checkpoint.restore_run_config(run_dir)
        if not isinstance(err, ConfigError):
            raise
        return _fail(f"{name}config error: {err}", multirun)
    if world.main:
        if resume:
            print(f"{run_dir} holds a run: resuming it", file=sys.stderr, flush=True)
        else:
            write_provenance(run_dir)
    group = distributed.broadcast(Path(hc.sweep.dir).name) if multirun else None
    try:
        summary = meta_train(cfg, run_dir, group=group, progress=cfg.progress_bar, resume=resume)
    except BaseException as err:
        # e.g. refused as another config than the run's: Hydra rewrote .hydra for this start. (Once meta_train has
        # accepted a start it keeps that config, so putting the kept one back changes nothing then.)
        if resume and world.main:
            checkpoint.restore_run_config(run_dir)
        if isinstance(err, distributed.PeerLost):
            raise SystemExit(f"{name}error: {err}") from None
        if not isinstance(err, NonFiniteError | FileNotFoundError | ValueError):
            raise
        if world.active:  # the other processes cannot go on without this one
            raise SystemExit(f"{name}error: {err}") from None
        return _fail(f"{name}error: {err}", multirun)
    if not world.main:
        if "stopped_by" in summary:
            raise SystemExit(128 + signal.Signals[summary["stopped_by"]].value)
        return summary["final_return_last10"]
    print(f"run folder: {run_dir}\n" + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in summary.items()))
    if "stopped_by" in summary:
        print(f"stopped by {summary['stopped_by']}; checkpoint {summary['checkpoint']}; continue with: "
              f"python -m mlsh.resume {run_dir}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.Signals[summary["stopped_by"]].value)
    return summary["final_return_last10"]


def _quiet_other_ranks(argv: list[str]) -> list[str]:
    """Processes other than rank 0 of a torchrun launch: Hydra's output folders go to a temporary folder (removed
    at exit) and Hydra logs nothing, so that only rank 0's run folder exists (each process would otherwise resolve
    ``${now:...}`` on its own)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0:
        return argv
    scratch = tempfile.mkdtemp(prefix=f"mlsh-rank{os.environ['RANK']}-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    kept = [a for a in argv if not a.startswith(("hydra.run.dir=", "hydra.sweep.dir=", "hydra.sweep.subdir="))]
    return [*kept, f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.sweep.subdir=${hydra.job.num}",
            "hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


if __name__ == "__main__":
    sys.argv = _quiet_other_ranks(sys.argv)
    main()
