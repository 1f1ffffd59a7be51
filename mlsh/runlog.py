"""One place for run records: the run folder's provenance, ``metrics.jsonl`` (the source of truth) and W&B."""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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


WANDB_RUN = "wandb_run.json"  # the W&B run's id and group, and how many metrics rows it has received
CONNECT_TIMEOUT_S = 3.0


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def wandb_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether the W&B server (``WANDB_BASE_URL``, default api.wandb.ai) accepts a TCP connection in time."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def wandb_local_history(run_dir: Path, run_id: str | None = None, media: bool = False) -> list[dict[str, Any]]:
    """The history rows that W&B's service wrote to the run folder's ``.wandb`` logs (every run, or run
    ``run_id``; offline and online runs keep this log), in order; the rows of images and videos
    (``RunLogger.log_media``) only with ``media``. A minimal reader of that record log: a 7-byte
    header, then 32 KiB blocks of records with a 7-byte header (CRC, little-endian length, type 1 full, 2 first,
    3 middle, 4 last). A torn last record is ignored."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows: list[dict[str, Any]] = []
    pattern = f"wandb/*run-*-{run_id}/run-{run_id}.wandb" if run_id else "wandb/*run-*/run-*.wandb"
    for path in sorted(Path(run_dir).glob(pattern), key=lambda p: p.parent.name.split("run-", 1)[1]):
        data, pos, block, chunks = path.read_bytes(), 7, 32768, []
        while pos + 7 <= len(data):
            left = block - pos % block
            if left < 7:  # block trailer
                pos += left
                continue
            length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
            if (kind == 0 and length == 0) or pos + 7 + length > len(data):
                break
            chunks.append(data[pos + 7:pos + 7 + length])
            pos += 7 + length
            if kind in (1, 4):
                record = pb.Record()
                record.ParseFromString(b"".join(chunks))
                chunks = []
                if record.WhichOneof("record_type") == "history":
                    row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
                    # a logged image or video is stored as its fields: <key>/_type, <key>/path, ...
                    if media or not any(k == "_type" or k.endswith("/_type") for k in row):
                        rows.append(row)
    return rows


class RunLogger:
    """Appends one JSON line per ``log`` call to ``metrics.jsonl`` (the source of truth) and mirrors the rows to W&B.

    W&B receives rows when ``commit`` is called, right after each checkpoint: a run that crashes and resumes from
    its last checkpoint redoes (and re-logs) exactly the rows after it, so W&B holds every row of the final
    ``metrics.jsonl`` once. ``wandb_run.json`` records the W&B run's id, group and the rows sent; a resumed run
    continues that W&B run, keeps its group and first sends the committed rows that W&B's local log lacks.

    W&B never stops training: no network (checked within a few seconds), no API key or an error at start switch
    to offline mode, and if that fails too, or W&B fails mid-run, a one-line warning and the metrics file alone.
    """

    def __init__(self, run_dir: Path, cfg: DictConfig, group: str | None = None, job_type: str = "train",
                 name: str | None = None, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._rows = len(read_metrics(self.run_dir)) if resume and (self.run_dir / "metrics.jsonl").exists() else 0
        self._file = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self._pending: list[dict[str, Any]] = []
        self._sent = self._skip = 0
        self.wandb = None
        if cfg.logger.mode != "disabled":
            info = self._read_info() if resume else {}
            self._group = group or info.get("group")
            in_wandb = self._rows_in_wandb(info)
            self._sent = min(in_wandb, self._rows)
            # W&B already holds rows beyond the checkpoint resumed from (a fallback past a corrupt one): the
            # resumed run logs them again, identically; they are not sent twice
            self._skip = max(0, in_wandb - self._rows)
            self.wandb = self._start(cfg, info.get("id"), job_type, name)
            if self.wandb is not None and self._sent < self._rows:  # committed rows the crashed run had not sent
                self._pending = read_metrics(self.run_dir)[self._sent:]
                self.commit()

    def _read_info(self) -> dict[str, Any]:
        path = self.run_dir / WANDB_RUN
        try:
            return json.loads(path.read_text()) if path.exists() else \
                {"id": (self.run_dir / "wandb_run_id").read_text().strip()}  # run folders of earlier versions
        except (OSError, ValueError):
            return {}

    def _rows_in_wandb(self, info: dict[str, Any]) -> int:
        """How many metrics rows the W&B run holds: the rows its service wrote to the local log (rows handed to
        W&B just before a kill may never have been written), else the count this logger sent."""
        if not info.get("id"):
            return 0
        try:
            return len(wandb_local_history(self.run_dir, info["id"]))
        except Exception as err:  # noqa: BLE001 - an unreadable log: trust the count sent
            _warn(f"W&B's local log is unreadable ({_first_line(err)}); assuming it holds the rows sent")
            return int(info.get("rows_sent", self._rows))

    def _write_info(self) -> None:
        tmp = self.run_dir / (WANDB_RUN + ".tmp")
        tmp.write_text(json.dumps({"id": self.wandb.id, "group": self._group, "rows_sent": self._sent}))
        tmp.replace(self.run_dir / WANDB_RUN)

    def _start(self, cfg: DictConfig, run_id: str | None, job_type: str, name: str | None):
        import wandb

        mode = cfg.logger.mode
        if mode == "online" and not wandb_reachable():
            _warn("W&B: no connection to its server; logging offline instead (`wandb sync` the run folder later)")
            mode = "offline"
        kwargs = dict(id=run_id, resume="allow" if run_id else None, project=cfg.logger.project,
                      entity=cfg.logger.get("entity"), dir=str(self.run_dir), group=self._group,
                      job_type=job_type, name=name, tags=list(cfg.logger.get("tags") or []),
                      config=OmegaConf.to_container(cfg, resolve=True))
        for attempt in ([mode, "offline"] if mode == "online" else [mode]):
            try:
                run = wandb.init(mode=attempt, settings=wandb.Settings(init_timeout=30), **kwargs)
                run.define_metric("global_step")
                run.define_metric("*", step_metric="global_step")
            except Exception as err:  # noqa: BLE001 - any W&B failure: warn and go on
                _warn(f"W&B could not start in {attempt} mode ({_first_line(err)})")
                continue
            self.wandb = run
            self._write_info()
            return run
        _warn(f"W&B is off for this run; metrics go to {self.run_dir / 'metrics.jsonl'} only")
        return None

    def _wandb_failed(self, err: BaseException) -> None:
        _warn(f"W&B failed ({_first_line(err)}); training goes on, metrics go to metrics.jsonl only")
        self.wandb = None
        self._pending = []
        try:  # release W&B's service connection now, or its exit hook prints a traceback when Python exits
            import wandb
            from wandb.sdk import wandb_setup

            setup = getattr(wandb_setup, "_singleton", None)
            wandb.teardown()
        except Exception:  # noqa: BLE001 - the service is gone
            # W&B's teardown then raises before it joins its event-loop thread, and a thread left running when
            # Python exits aborts the process ("terminate called without an active exception"): join it here
            try:
                setup._asyncer.join()
            except Exception:  # noqa: BLE001, S110 - nothing left to release
                pass
        # W&B leaves its service's address in the environment, where child processes (a sweep's jobs, torchrun
        # workers) would find a service that is gone: they start their own instead
        os.environ.pop("WANDB_SERVICE", None)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"global_step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._rows += 1
        if self.wandb is not None:
            self._pending.append(row)

    def commit(self) -> None:
        """Send the rows logged since the last commit to W&B (call after a checkpoint)."""
        if self.wandb is None:
            return
        try:
            skip = min(self._skip, len(self._pending))
            for row in self._pending[skip:]:
                self.wandb.log(row)
            self._skip -= skip
            self._sent += len(self._pending)
            self._pending = []
            self._write_info()
        except Exception as err:  # noqa: BLE001
            self._wandb_failed(err)

    def summary(self, values: dict[str, Any]) -> None:
        if self.wandb is not None:
            try:
                self.wandb.summary.update({k: _clean(v) for k, v in values.items()})
            except Exception as err:  # noqa: BLE001
                self._wandb_failed(err)

    def log_media(self, key: str, path: Path, step: int, video: bool = False) -> None:
        """An image (PNG) or a video (GIF) file to W&B at ``step`` of the global step axis; the run folder keeps the
        file. Media rows are not metrics rows: resume's count of the rows W&B holds skips them."""
        if self.wandb is not None:
            import wandb

            try:
                item = wandb.Video(str(path)) if video else wandb.Image(str(path))
                self.wandb.log({key: item, "global_step": int(step)})
            except Exception as err:  # noqa: BLE001
                self._wandb_failed(err)

    def close(self, exit_code: int = 0) -> None:
        """Close the metrics file and finish the W&B run; rows not committed are not sent (a resume redoes them)."""
        self._file.close()
        if self.wandb is not None:
            try:
                self.wandb.finish(exit_code=exit_code)
            except Exception as err:  # noqa: BLE001
                _warn(f"W&B did not finish cleanly ({_first_line(err)})")
            self.wandb = None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``. A torn last line (a kill in the middle of a write) is dropped with a warning;
    a bad line elsewhere is an error."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: is it a run folder?")
    lines = path.read_text().splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if n == len(lines):
                warnings.warn(f"{path}:{n}: dropping a torn last line ({err})", stacklevel=2)
                break
            raise ValueError(f"{path}:{n} is not valid JSON ({err})") from err
    return rows
