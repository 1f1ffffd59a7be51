"""One place for run records: the run folder's provenance, ``metrics.jsonl`` (the source of truth) and W&B."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PACKAGES = ("mlsh", "torch", "stable-baselines3", "gymnasium", "mujoco", "hydra-core", "omegaconf", "wandb", "numpy")


def git_commit(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": None}


def write_provenance(run_dir: Path) -> dict[str, Any]:
    """The command line, git commit and package versions, as ``provenance.json`` in the run folder."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "git": git_commit(Path(__file__).resolve().parent.parent),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (run_dir / "provenance.json").write_text(json.dumps(info, indent=2))
    return info


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    """Appends one JSON line per ``log`` call to ``metrics.jsonl`` and mirrors it to W&B (unless disabled)."""

    def __init__(self, run_dir: Path, cfg: DictConfig, group: str | None = None, job_type: str = "train",
                 name: str | None = None, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self.wandb = None
        if cfg.logger.mode != "disabled":
            import wandb

            id_file = self.run_dir / "wandb_run_id"
            run_id = id_file.read_text().strip() if resume and id_file.exists() else None
            self.wandb = wandb.init(
                id=run_id, resume="allow" if run_id else None,
                project=cfg.logger.project, entity=cfg.logger.get("entity"), mode=cfg.logger.mode,
                dir=str(self.run_dir), group=group, job_type=job_type, name=name,
                tags=list(cfg.logger.get("tags") or []),
                config=OmegaConf.to_container(cfg, resolve=True),
            )
            id_file.write_text(self.wandb.id)
            self.wandb.define_metric("global_step")
            self.wandb.define_metric("*", step_metric="global_step")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"global_step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log(row)

    def summary(self, values: dict[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.summary.update({k: _clean(v) for k, v in values.items()})

    def log_image(self, key: str, path: Path, step: int) -> None:
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Image(str(path)), "global_step": int(step)})

    def close(self, exit_code: int = 0) -> None:
        self._file.close()
        if self.wandb is not None:
            self.wandb.finish(exit_code=exit_code)
            self.wandb = None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: is it a run folder?")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n} is not valid JSON ({err})") from err
    return rows
