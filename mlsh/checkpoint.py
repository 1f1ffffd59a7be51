"""Checkpoints: one folder per finished task, ``checkpoints/task_00042/`` with the learner's SB3 zips and
``state.json`` (task index, global step)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def task_dir(run_dir: Path, task_index: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"task_{task_index:05d}"


def save(learner, run_dir: Path, task_index: int, state: dict[str, Any], keep_last: int | None = None) -> Path:
    folder = task_dir(run_dir, task_index)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    learner.save(tmp)
    (tmp / "state.json").write_text(json.dumps({"task_index": task_index, **state}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # a folder without state.json is never mistaken for a finished checkpoint
    if keep_last is not None:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old)
    return folder


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("task_[0-9]*") if p.is_dir() and (p / "state.json").exists()
                  and not p.name.endswith(".tmp"))


def latest(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint under {Path(run_dir) / 'checkpoints'}: did the run finish a task?")
    return found[-1]


def read_state(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint state {path} is missing or corrupt: {err}") from err


def group_task(state: dict[str, Any], group: int = 0) -> Any:
    """The task that task group ``group`` held at a checkpoint (checkpoints from before task groups: ``task``)."""
    return state["groups"][group]["task"] if "groups" in state else state.get("task")


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, given either itself or a run folder (then its latest checkpoint)."""
    path = Path(path)
    if (path / "state.json").exists():
        return path
    if not path.exists():
        raise FileNotFoundError(f"no run folder or checkpoint at {path}")
    return latest(path)
