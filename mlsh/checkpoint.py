"""Checkpoints: one folder per finished task, ``checkpoints/task_00042/``, and one per interruption (SIGTERM,
SIGINT), ``checkpoints/stop_<global step>/``.

A folder holds the learner's SB3 zips (weights and optimizer states), ``state.json`` (the loop's position: global
step, tasks, the groups' clocks, the task stream), ``resume.pkl`` (``mlsh.snapshot``: random states, env states,
the models' live attributes) and ``manifest.json`` (size and SHA-256 of every other file). A folder is written as
``<name>.tmp`` and renamed when complete, so a kill never leaves a partial checkpoint under a real name; the
manifest catches what breaks later (a truncated or edited file). ``latest`` skips a checkpoint that fails its
manifest, with a warning that names the file, and returns the newest good one; a resume renames the skipped ones
``<name>.bad``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, incomplete or corrupt."""


def task_dir(run_dir: Path, task_index: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"task_{task_index:05d}"


def stop_dir(run_dir: Path, global_step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"stop_{global_step:012d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write(folder: Path, fill: Callable[[Path], None], state: dict[str, Any]) -> Path:
    """Write a checkpoint atomically: ``fill(tmp)`` writes the model files, then state.json and the manifest."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    files = sorted(p for p in tmp.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if folder.exists():  # a folder of that name from a run that fell back past it: replace it
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old)
    else:
        tmp.rename(folder)
    return folder


KEPT_CONFIG = ".hydra.kept"  # a run's own .hydra files, as of its last start that passed the config check


def keep_run_config(run_dir: Path) -> None:
    """Copy ``run_dir/.hydra`` (the config the run goes on with) to ``.hydra.kept``: Hydra rewrites .hydra at
    every start in the folder, also for a command whose config is then refused."""
    src, dst = Path(run_dir) / ".hydra", Path(run_dir) / KEPT_CONFIG
    if not src.is_dir():
        return
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def restore_run_config(run_dir: Path) -> bool:
    """Put the kept .hydra files back (after a start whose config was refused); False when none were kept."""
    kept = Path(run_dir) / KEPT_CONFIG
    if not kept.is_dir():
        return False
    for f in kept.iterdir():
        shutil.copy2(f, Path(run_dir) / ".hydra" / f.name)
    return True


def prune(run_dir: Path, keep_last: int | None) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (None: keep all), and leftovers of interrupted writes."""
    root = Path(run_dir) / "checkpoints"
    for leftover in [*root.glob("*.tmp"), *root.glob("*.old")]:
        shutil.rmtree(leftover, ignore_errors=True)
    if keep_last is not None:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            gone = old.with_name(old.name + ".old")  # renamed first: a kill mid-delete leaves no half checkpoint
            old.rename(gone)
            shutil.rmtree(gone)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first (by global step). A folder whose state.json is missing or unreadable
    counts as the newest (a checkpoint is written whole and renamed into place, so such a folder was damaged
    after): ``latest`` then skips it with a warning naming it, and a resume sets it aside as ``<name>.bad``."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.endswith((".tmp", ".old", ".bad"))]

    def key(p: Path) -> tuple[int, str]:
        try:
            return int(json.loads((p / "state.json").read_text())["global_step"]), p.name
        except (OSError, ValueError, KeyError, TypeError):
            return sys.maxsize, p.name

    return sorted(found, key=key)


def verify(folder: Path) -> None:
    """Raise ``CheckpointError`` naming the first file that is missing or differs from the manifest."""
    folder = Path(folder)
    state = read_state(folder)
    path = folder / MANIFEST
    if not path.exists():
        if "config" in state:  # written since manifests were (the same change saved the config with the state)
            raise CheckpointError(f"{path} is missing: without it the checkpoint's files cannot be checked")
        return  # a checkpoint from before manifests: complete by construction (atomic rename)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err
    for name, entry in manifest.items():
        f = folder / name
        if not f.exists():
            raise CheckpointError(f"{f} is missing (listed in {MANIFEST})")
        if f.stat().st_size != entry["bytes"] or _sha256(f) != entry["sha256"]:
            raise CheckpointError(f"{f} is corrupt: it does not match its checksum in {MANIFEST}")


def latest(run_dir: Path) -> Path:
    """The newest checkpoint that passes ``verify``; each newer bad one is skipped with a warning naming it."""
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint under {Path(run_dir) / 'checkpoints'}: did the run finish a task?")
    for folder in reversed(found):
        try:
            verify(folder)
        except CheckpointError as err:
            warnings.warn(f"skipping checkpoint {folder.name}: {err}", stacklevel=2)
            continue
        return folder
    raise CheckpointError(f"every checkpoint under {Path(run_dir) / 'checkpoints'} is corrupt (see the warnings)")


def set_aside_newer(run_dir: Path, good: Path) -> list[Path]:
    """Rename the checkpoints newer than ``good`` (those ``latest`` skipped as corrupt) to ``<name>.bad``, so
    that a resumed run neither prunes ``good`` in their favour nor falls back to them again; they are kept."""
    found = list_checkpoints(run_dir)
    moved = []
    for folder in found[found.index(good) + 1:]:
        bad = folder.with_name(folder.name + ".bad")
        shutil.rmtree(bad, ignore_errors=True)
        folder.rename(bad)
        moved.append(bad)
    return moved


def read_state(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint state {path} is missing or corrupt: {err}") from err


def group_task(state: dict[str, Any], group: int = 0) -> Any:
    """The task that task group ``group`` held at a checkpoint (checkpoints from before task groups: ``task``)."""
    return state["groups"][group]["task"] if "groups" in state else state.get("task")


def resolve(path: str | Path) -> Path:
    """A verified checkpoint folder, given either itself or a run folder (then its latest good checkpoint)."""
    path = Path(path)
    if (path / "state.json").exists():
        verify(path)
        return path
    if not path.exists():
        raise FileNotFoundError(f"no run folder or checkpoint at {path}")
    return latest(path)
