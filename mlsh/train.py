"""The meta-training loop: task groups side by side, each sampling a task, W warmup iterations (master only), U joint
iterations (master and sub-policies), then the next task; checkpoint and log whenever a task finishes.

Collection and update live in the learners (``mlsh.learners``); this loop only schedules them, like SB3's
``OnPolicyAlgorithm.learn``. The global step is the number of primitive env steps taken so far.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.utils import set_random_seed
from tqdm import tqdm

from mlsh import checkpoint, distributed, faults, media, snapshot
from mlsh.config import env_spaces, validate
from mlsh.groups import GroupClock, stagger
from mlsh.learners import (
    load_obs_stats,
    make_learner,
    make_task_env,
    normalizer,
    sample_task,
    shuffled_task,
    task_rng,
    task_set,
)
from mlsh.runlog import RunLogger, read_metrics


def process_seed(seed: int, rank: int = 0) -> int:
    """The global random seed of process ``rank`` of a run (rank 0, and a single process: the run's seed)."""
    return int(seed) if rank == 0 else int(np.random.SeedSequence([int(seed), rank]).generate_state(1)[0])


def setup_torch(cfg: DictConfig, rank: int = 0) -> None:
    th.set_num_threads(int(cfg.get("torch_threads", 1)))
    set_random_seed(process_seed(cfg.seed, rank))


# values a resumed run may change: its budget and how it reports
RESUMABLE_CHANGES = ("schedule.n_tasks", "schedule.max_minutes", "progress_bar", "logger", "distributed", "media")


def rank_file(rank: int) -> str:
    """The resume state of process ``rank`` in a checkpoint (rank 0's is ``snapshot.FILE``)."""
    return snapshot.FILE if rank == 0 else f"resume_rank{rank}.pkl"


class _Silent:
    """The logger of processes other than rank 0 of a distributed run: rank 0 writes the run folder."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def commit(self) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def log_media(self, key: str, path: Path, step: int, video: bool = False) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        pass


def merge_shared(parts: list[dict[str, float]]) -> dict[str, float]:
    """The sub-policy update's metrics of every process as one row: step and group counts summed, the rest
    averaged over the processes that contributed, weighted by their joint groups (the shared policy: plain mean)."""
    if len(parts) == 1:
        return parts[0]
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        head, _, tail = key.partition("/")
        if tail in ("n_steps", "groups"):
            out[key] = float(sum(p.get(key, 0) for p in parts))
            continue
        weights = [(p[key], p.get(f"{head}/groups", 1)) for p in parts if key in p]
        total = sum(w for _, w in weights)
        out[key] = float(sum(v * w for v, w in weights) / total) if total else float(np.mean([v for v, _ in weights]))
    return out


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The config values that decide what a run computes (flattened), saved with each checkpoint."""
    flat = _flat(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if not any(k == c or k.startswith(c + ".") for c in RESUMABLE_CHANGES)}


def _check_same_config(cfg: DictConfig, state: dict[str, Any], ckpt: Path) -> None:
    saved = state.get("config")
    if saved is None:
        return  # checkpoints from before configs were saved with them
    now = run_config(cfg)
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differ[:5])
        raise ValueError(f"{ckpt.parent.parent} holds a run of another config ({shown}"
                         f"{', ...' if len(differ) > 5 else ''}): resume it with its own config "
                         f"(python -m mlsh.resume), or start the new run in another folder")


def _checkpointed(run_dir: Path) -> int:
    """How many checkpoints ``run_dir``'s metrics.jsonl shows were written, at least: the loop checkpoints the
    tasks that finish in an iteration before it goes on, so finished tasks at k different steps mean k - 1
    checkpoints complete (the last one's may have been cut short)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = set()
    with open(path) as f:
        for line in f:
            if '"task/index"' in line:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    steps.add(json.loads(line)["global_step"])
    return max(len(steps) - 1, 0)


def warmup_iters(cfg: DictConfig) -> int:
    """W as the loop runs it. The baselines have no warmup: they update their policy every iteration. Option-critic's
    warmup trains the task's critic and terminations over frozen intra-option policies, as MLSH's the master over
    frozen sub-policies."""
    return cfg.schedule.warmup_iters if cfg.algo.name in ("mlsh", "option_critic") else 0


def task_returns(rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The finished tasks' final and warmup returns in metrics rows, as the loop keeps them: a task whose last
    iteration ended no episode logged its final return as null (NaN); a task without warmup has no warmup return."""
    finals = [float("nan") if r["task/final_return"] is None else r["task/final_return"]
              for r in rows if "task/final_return" in r]
    warmups = [r["task/warmup_return"] for r in rows if r.get("task/warmup_return") is not None]
    return finals, warmups


def stop_reason(sched: DictConfig, minutes: float, finals: list[float], warmups: list[float],
                warmup: int) -> tuple[str, str] | None:
    """Whether the loop stops after a finished task, besides ``n_tasks``: ``(key, why)`` for the time budget or the
    target return, else None. MLSH's early stop reads the return at the end of warmup: a fresh master over the
    current sub-policies."""
    if sched.get("max_minutes") and minutes > sched.max_minutes:
        return "max_minutes", (f"has run {minutes:.1f} minutes, more than its schedule.max_minutes="
                               f"{sched.max_minutes:g}")
    target, window = sched.get("target_return"), sched.get("target_window", 20)
    stop_on = warmups if warmup > 0 else finals
    if target is not None and len(stop_on) >= window and np.mean(stop_on[-window:]) >= target:
        key = "task/warmup_return" if warmup > 0 else "task/final_return"
        return "target_return", (f"reached its schedule.target_return={target:g} (mean {key} of the last {window} "
                                 f"tasks {np.mean(stop_on[-window:]):.4g})")
    return None


def _restore(run_dir: Path, learner, rng: np.random.Generator, per_task: int) -> dict[str, Any] | None:
    """Load the latest good checkpoint into ``learner`` and ``rng``; drop the metrics logged after it.

    Returns the loop's position: the groups' clocks, tasks sampled and done, global step, the finished tasks'
    returns and the minutes so far; None when the run never wrote a checkpoint (it starts over). Groups that were
    mid-task get their task and master back; then ``mlsh.snapshot`` restores the random states, the env states and
    the models' live attributes, so that the run continues exactly as if never stopped. In a distributed run rank
    0 chooses the checkpoint and every process restores its own groups and state from it."""
    world = distributed.world()
    ckpt = None
    if world.main:
        if not checkpoint.list_checkpoints(run_dir):
            written = _checkpointed(run_dir)
            if written:
                raise FileNotFoundError(
                    f"{run_dir}'s metrics.jsonl shows at least {written} checkpoints written, but "
                    f"{run_dir / 'checkpoints'} holds none: were they moved or deleted? Nothing was changed; put "
                    f"them back, or start the run over in another folder")
            warnings.warn(f"{run_dir} has no checkpoint yet: starting the run over", stacklevel=3)
            (run_dir / "metrics.jsonl").write_text("")
        else:
            ckpt = checkpoint.latest(run_dir)
            checkpoint.set_aside_newer(run_dir, ckpt)
    ckpt = distributed.broadcast(None if ckpt is None else str(ckpt))
    if ckpt is None:
        return None
    ckpt = Path(ckpt)
    state = checkpoint.read_state(ckpt)
    _check_same_config(learner.cfg, state, ckpt)
    if int(state.get("processes", 1)) != world.size:
        raise ValueError(f"checkpoint {ckpt} is of a run over {state.get('processes', 1)} processes: resume it "
                         f"with as many (torchrun --nproc-per-node {state.get('processes', 1)} ...), not {world.size}")
    learner.load(ckpt)
    live = snapshot.load(ckpt, rank_file(world.rank))
    if world.main:
        rng.bit_generator.state = state["task_rng"]
    elif live is not None:
        rng.bit_generator.state = live["task_rng"]
    step = int(state["global_step"])
    if "groups" in state:
        clocks = [GroupClock(**c) for c in state["groups"]]
        sampled, done = int(state["tasks_sampled"]), int(state["tasks_done"])
    else:  # a checkpoint of one task group from before task groups existed
        clocks = [GroupClock(0, state.get("task"), int(state["task_index"]), per_task)]
        sampled = done = int(state["task_index"]) + 1
    if len(clocks) != learner.total_groups:
        raise ValueError(f"checkpoint {ckpt} holds {len(clocks)} task groups, the config asks for "
                         f"schedule.n_groups={learner.total_groups}")
    mid_task = [c.group for c in clocks if c.it < per_task and c.group in learner.group_ids]
    for g in mid_task:
        learner.start_task(clocks[g].task, g, clocks[g].task_index)
    learner.load_masters(ckpt, mid_task)
    if mid_task:  # their envs' resets in start_task fed the observation filter: back to the checkpoint's statistics
        load_obs_stats(learner.top_env, ckpt)
    if live is None:
        warnings.warn(f"checkpoint {ckpt} is from before exact resume: the run continues from its weights, but "
                      "random and env states start afresh", stacklevel=3)
    else:
        snapshot.restore(live, learner.live_models(mid_task), learner.top_env)
    rows = [r for r in read_metrics(run_dir) if r["global_step"] <= step]
    if world.main:
        tmp = run_dir / "metrics.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(run_dir / "metrics.jsonl")
    minutes = state.get("minutes")
    if minutes is None:
        minutes = max((r["time_minutes"] for r in rows if "time_minutes" in r), default=0.0)
    finals, warmups = task_returns(rows)
    return {
        "clocks": clocks, "sampled": sampled, "done": done, "step": step, "iteration": state.get("iteration"),
        "finals": finals, "warmups": warmups, "minutes": float(minutes),
    }


class _StopSignals:
    """SIGTERM, SIGINT and SIGUSR2 (SLURM's and submitit's preemption and timeout signal) ask the loop to
    checkpoint after the current iteration (``pending`` lists them). Then ``forward`` hands each to the Python
    handler that a launcher had installed for it, SIGUSR2 first (submitit requeues the job on SIGUSR2 and ignores
    SIGTERM), and training goes on if they all return; a signal without such a handler stops the run. In a run of
    several processes rank 0 alone hands the signals over and shares the outcome, so that all stop or go on
    together (submitit's handler requeues the job from rank 0 and exits there, and does nothing on the other
    ranks). A second SIGINT stops at once (``KeyboardInterrupt``). Signals that were ignored stay ignored. Main
    thread only."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR2") if hasattr(signal, name))

    def __init__(self) -> None:
        self.pending: list[str] = []
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:  # only flags: printing here can collide with tqdm's writes
        name = signal.Signals(signum).name
        if name == "SIGINT" and "SIGINT" in self.pending:
            raise KeyboardInterrupt
        if name not in self.pending:
            self.pending.append(name)

    def forward(self, names: list[str]) -> str | None:
        """After the checkpoint for the signals ``names`` (taken off ``pending``): the signal that stops the run,
        or None when the launchers' handlers let it go on."""
        self.pending = [n for n in self.pending if n not in names]
        world = distributed.world()
        if world.active and not world.main:
            decided, main_ends = distributed.broadcast(None)  # rank 0's decision
            if main_ends:  # wait for rank 0 to be done (its launcher's handler ends it): a torchrun agent would
                distributed.wait_for_main()  # otherwise stop rank 0 on this rank's exit, before its logger closed
            return decided
        for name in sorted(names, key=lambda n: n != "SIGUSR2"):
            previous = self._previous.get(signal.Signals[name])
            if not callable(previous) or previous is signal.default_int_handler:
                return distributed.broadcast((name, False))[0]
            print(f"{name}: checkpoint written; handing over to {getattr(previous, '__qualname__', previous)}",
                  file=sys.stderr, flush=True)
            try:
                previous(signal.Signals[name].value, None)  # submitit: requeue the job and exit
            except BaseException:  # the handler ends this process: the others stop with it
                with contextlib.suppress(distributed.PeerLost):
                    distributed.broadcast((name, True))
                raise
        return distributed.broadcast((None, False))[0]

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def draw_media(cfg: DictConfig, learner, clocks: list[GroupClock], run_dir: Path, logger, step: int,
               done: int, maps: bool = True, video: bool = False) -> None:
    """The sub-policy maps of the run as it is now (``<run>/maps/``, W&B ``maps/<kind>``), and with ``video`` an
    episode (``<run>/video.gif``, W&B ``video/episode``); MLSH runs only. Nothing here changes what the run computes
    (``mlsh.media``), and a failure is a warning: pictures never stop training."""
    if cfg.algo.name != "mlsh":
        return
    try:
        # the master that has trained longest on its task first: it drives the video
        order = sorted(range(learner.n_groups), key=lambda i: -clocks[learner.group_ids[i]].it)
        masters = [(learner.masters[i], clocks[learner.group_ids[i]].task, f"group {learner.group_ids[i]}")
                   for i in order if learner.masters[i] is not None]
        norm = normalizer(learner.top_env)
        h = media.Hierarchy(cfg, learner.subs, masters, norm.normalize_obs if norm is not None else media.identity)
        title = f"{cfg.env.name}, seed {cfg.seed}: step {step:,}, {done} tasks"
        for kind, path in (media.write_maps(h, run_dir / "maps", f"step{step:011d}", title) if maps else {}).items():
            logger.log_media(f"maps/{kind}", path, step)
        if video and masters:
            frames, _, _ = media.episode_video(h, int(cfg.media.video_size), cfg.media.get("video_steps"),
                                               every=int(cfg.media.get("video_every", 1)))
            path = media.write_gif(frames, run_dir / "video.gif")
            logger.log_media("video/episode", path, step, video=True)
    except Exception as err:  # noqa: BLE001 - a picture that fails must not end the run
        print(f"warning: the sub-policy {'maps and video' if video else 'maps'} at step {step} failed "
              f"({type(err).__name__}: {err}); training goes on", file=sys.stderr, flush=True)


def iteration_metrics(shared: dict[str, float], per_group: list[dict[str, float]], returns: list[list[float]],
                      clocks: list[GroupClock], joint: list[bool]) -> dict[str, Any]:
    """One iteration's row. One group: the learner's keys as they are. Several: every per-group value under
    ``group<g>/`` and, under the plain key, its mean over the groups (episode returns: over all episodes)."""
    row: dict[str, Any] = dict(shared)
    all_returns = [r for rets in returns for r in rets]
    row.update({"episode_return": _mean(all_returns), "episodes": len(all_returns), "phase_joint": int(any(joint))})
    if len(clocks) == 1:
        row.update(per_group[0])
        row.update({"task_index": clocks[0].task_index, "task": clocks[0].task})
        return row
    row["joint_groups"] = int(sum(joint))
    for key in per_group[0]:
        row[key] = float(np.mean([m[key] for m in per_group]))
    for g, (metrics, rets, clock) in enumerate(zip(per_group, returns, clocks, strict=True)):
        prefix = f"group{g}/"
        row.update({prefix + k: v for k, v in metrics.items()})
        row.update({prefix + "episode_return": _mean(rets), prefix + "task": clock.task,
                    prefix + "task_index": clock.task_index, prefix + "phase_joint": int(joint[g])})
    return row


def meta_train(cfg: DictConfig, run_dir: Path, group: str | None = None, progress: bool = True,
               resume: bool = False) -> dict[str, Any]:
    """Meta-train into ``run_dir``; with ``resume``, continue from its latest good checkpoint, exactly (metrics
    logged after the checkpoint are dropped and redone identically).

    ``schedule.n_groups`` task groups run side by side (``mlsh.groups``): every iteration each group collects
    ``schedule.rollout_steps`` primitive steps and its master trains on them; the sub-policies take one update from
    the groups then in their joint phase. A checkpoint is written whenever a task finishes, and when SIGTERM,
    SIGINT or SIGUSR2 arrives (after the current iteration; the summary's ``stopped_by`` names the signal that
    stopped the run, ``_StopSignals``); the run stops
    once ``schedule.n_tasks`` tasks have finished (tasks still running in other groups are dropped). A non-finite
    value anywhere raises ``NonFiniteError`` before anything is checkpointed.

    Started as several processes (``mlsh.distributed``), each runs this loop for its own task groups: every
    process keeps every group's clock, gathers the iteration's metrics, returns and signals of all, and so takes
    the same decisions; rank 0 alone logs and writes checkpoints, which hold every process's state."""
    world = distributed.world()
    validate(cfg, processes=world.size, started=resume)
    setup_torch(cfg, world.rank)
    run_dir = Path(run_dir)
    sched = cfg.schedule
    n_groups = int(sched.get("n_groups", 1))
    mine = world.groups(n_groups)
    venv = make_task_env(cfg, seed=cfg.seed * 1000 + mine[0] * sched.n_envs, n_groups=len(mine))
    learner = make_learner(cfg, venv, mine)
    rng = task_rng(cfg.seed, "train", world.rank)
    dealt_from = task_set(venv) if sched.get("task_order", "iid") == "shuffled" else None  # else drawn iid
    check_every = int(cfg.get("distributed", {}).get("check_every", 100))
    per_task = sched.warmup_iters + sched.joint_iters
    warmup = warmup_iters(cfg)
    pos = _restore(run_dir, learner, rng, per_task) if resume else None
    if world.main:  # past the config check: this start's config is the run's (run.py restores it on a refusal)
        checkpoint.keep_run_config(run_dir)
    if pos is None:
        if cfg.get("init_from"):
            learner.load(checkpoint.resolve(cfg.init_from))
        kind = sched.get("stagger", "original")
        pos = {"clocks": [GroupClock(g, it=-stagger(g, sched.warmup_iters, sched.joint_iters, kind))
                          for g in range(n_groups)],
               "sampled": 0, "done": 0, "step": 0, "iteration": 0, "finals": [], "warmups": [], "minutes": 0.0}
    clocks: list[GroupClock] = pos["clocks"]
    sampled, done, step = pos["sampled"], pos["done"], pos["step"]
    iteration = pos["iteration"] if pos["iteration"] is not None else step // (n_groups * sched.rollout_steps)
    finals, warmups, minutes_before = pos["finals"], pos["warmups"], pos["minutes"]

    def start_tasks() -> None:
        """Every finished group (and a group's first task, after its stagger) gets the next task number; this
        process draws the tasks of its own groups, and learns the others' with the next iteration's metrics."""
        nonlocal sampled
        for c in clocks:
            if c.task_index < 0 or c.it >= per_task:  # no task yet (the first keeps its stagger), or finished
                c.task_index, c.warmup_return = sampled, None
                if c.group not in mine:
                    c.task = None
                else:
                    c.task = (sample_task(venv, rng) if dealt_from is None
                              else shuffled_task(dealt_from, cfg.seed, sampled))
                c.it = 0 if c.it >= per_task else c.it
                sampled += 1
                if c.group in mine:
                    learner.start_task(c.task, c.group, c.task_index)

    def minutes() -> float:
        return minutes_before + (time.perf_counter() - start) / 60

    def save(folder: Path) -> Path:
        """Every process: its live state, gathered to rank 0, which writes the checkpoint; returns its folder."""
        mid_task = [c.group for c in clocks if c.it < per_task]
        live = snapshot.capture(learner.live_models([g for g in mid_task if g in mine]), learner.top_env)
        if not world.main:
            live["task_rng"] = rng.bit_generator.state
            with tempfile.TemporaryDirectory() as tmp:
                learner.save(Path(tmp))
                snapshot.save(live, Path(tmp), rank_file(world.rank))
                files = {f.name: f.read_bytes() for f in Path(tmp).iterdir()}
            distributed.gather_to_main(files)
            return Path(distributed.broadcast(None))
        others = distributed.gather_to_main({})[1:]
        state = {"task_index": done - 1, "global_step": step, "iteration": iteration, "minutes": minutes(),
                 "algo": cfg.algo.name, "tasks_done": done, "tasks_sampled": sampled,
                 "groups": [c.state() for c in clocks],
                 "task_rng": rng.bit_generator.state, "config": run_config(cfg),
                 "spaces": env_spaces(venv.observation_space, venv.action_space)}
        if world.active:
            state["processes"] = world.size

        def fill(tmp: Path) -> None:
            learner.save(tmp)
            snapshot.save(live, tmp)
            for files in others:  # the other processes' masters and states (their copies of what is shared skipped)
                for name, data in files.items():
                    if not (tmp / name).exists():
                        (tmp / name).write_bytes(data)

        folder = checkpoint.write(folder, fill, state)
        checkpoint.prune(run_dir, cfg.checkpoint.get("keep_last"))
        logger.commit()  # W&B gets the rows up to this checkpoint, never rows a resume would redo
        return Path(distributed.broadcast(str(folder)))

    def where() -> str:
        tasks = ", ".join(f"group {c.group}: task #{c.task_index} ({c.task}), iteration {c.it}" for c in clocks
                          if c.group in mine)
        return f"at global step {step}, iteration {iteration} ({tasks})" + \
            (f" in process {world.rank} of {world.size}" if world.active else "")

    logger = RunLogger(run_dir, cfg, group=group, job_type=cfg.algo.name, name=run_dir.name, resume=resume) \
        if world.main else _Silent()
    start, start_step = time.perf_counter(), step
    bar = tqdm(total=sched.n_tasks, initial=done, unit="task", disable=not (progress and world.main),
               dynamic_ncols=True)
    exit_code, stopped_by, last = 1, None, None
    maps_every, maps_at = int(cfg.get("media", {}).get("maps_every", 0)), None
    try:
        with _StopSignals() as signals:
            start_tasks()
            while done < sched.n_tasks:
                t0 = time.perf_counter()
                joint = [c.joint(warmup) for c in clocks]
                try:
                    shared, per_group = learner.iterate([joint[g] for g in mine], train_subs=any(joint))
                    faults.check_records(shared, "the sub-policy update")
                    for g, metrics in zip(mine, per_group, strict=True):
                        faults.check_records(metrics, f"group {g}'s update")
                    for name, model in learner.live_models(mine).items():
                        faults.check_model(model, name)
                except faults.NonFiniteError as err:
                    good = checkpoint.list_checkpoints(run_dir)
                    raise faults.NonFiniteError(
                        f"{err} {where()}; nothing was checkpointed after it"
                        + (f" (the latest checkpoint, {good[-1]}, is from before)" if good else "")) from None
                returns = [venv.pop(sl) for sl in learner.slices]
                now, stop_for = minutes(), list(signals.pending)
                if world.active:  # every process learns what every other saw, and takes the same decisions
                    # looked up each time: loading a checkpoint or init_from replaces the statistics object
                    distributed.sync_obs_stats(getattr(normalizer(venv), "obs_rms", None))
                    parts = distributed.gather({"shared": shared, "groups": per_group, "returns": returns,
                                                "tasks": {g: clocks[g].task for g in mine},
                                                "signals": stop_for, "minutes": now})
                    shared = merge_shared([part["shared"] for part in parts])
                    per_group = [m for part in parts for m in part["groups"]]
                    returns = [r for part in parts for r in part["returns"]]
                    for part in parts:
                        for g, task in part["tasks"].items():
                            clocks[g].task = task
                    stop_for = list(dict.fromkeys(n for part in parts for n in part["signals"]))  # one decision
                    now = parts[0]["minutes"]
                    if iteration % check_every == 0:
                        distributed.check_identical(learner.shared_modules())
                step += n_groups * sched.rollout_steps
                iteration += 1
                row = iteration_metrics(shared, per_group, returns, clocks, joint)
                row["steps_per_second"] = n_groups * sched.rollout_steps / (time.perf_counter() - t0)
                row["time_minutes"] = now
                logger.log(row, step)
                finished = []
                for c, rets in zip(clocks, returns, strict=True):
                    if warmup > 0 and c.it == warmup - 1:
                        c.warmup_return = _mean(rets)
                    c.it += 1
                    if c.it == per_task:
                        finished.append((c, _mean(rets)))
                for c, final in finished:
                    finals.append(final)
                    if c.warmup_return is not None:
                        warmups.append(c.warmup_return)
                    logger.log({"task/final_return": final, "task/warmup_return": c.warmup_return,
                                "task/index": c.task_index, "task/task": c.task, "task/group": c.group}, step)
                    done += 1
                bar.update(len(finished))
                bar.set_postfix(steps=step, ret=f"{row['episode_return']:.1f}",
                                sps=f"{(step - start_step) / (time.perf_counter() - start):.0f}")
                if finished:
                    distributed.check_identical(learner.shared_modules())
                    last = save(checkpoint.task_dir(run_dir, done - 1))
                    if world.main and maps_every and (maps_at is None or done - maps_at >= maps_every):
                        draw_media(cfg, learner, clocks, run_dir, logger, step, done)
                        maps_at = done
                if stop_for:  # a signal that arrives later is seen by the next iteration
                    if world.main:
                        print(f"\n{', '.join(stop_for)}: checkpointing", file=sys.stderr, flush=True)
                    if not finished:
                        last = save(checkpoint.stop_dir(run_dir, step))
                    stopped_by = signals.forward(stop_for)
                    if stopped_by is not None:
                        break
                if not finished:
                    continue
                if stop_reason(sched, now, finals, warmups, warmup) is not None:
                    break
                if done < sched.n_tasks:
                    start_tasks()
        # the last maps, unless the last checkpoint just drew them, and the video
        final_maps, video = bool(maps_every) and maps_at != done, bool(cfg.get("media", {}).get("video", False))
        if world.main and stopped_by is None and (final_maps or video):
            draw_media(cfg, learner, clocks, run_dir, logger, step, done, maps=final_maps, video=video)
        exit_code = 0
    finally:
        bar.close()
        elapsed = time.perf_counter() - start
        summary = {
            "tasks_done": done,
            "global_step": step,
            "minutes": elapsed / 60,
            "steps_per_second": (step - start_step) / max(elapsed, 1e-9),
            "final_return_last10": float(np.nanmean(finals[-10:])) if np.isfinite(finals[-10:]).any() else float("nan"),
            "warmup_return_last10": float(np.mean(warmups[-10:])) if warmups else float("nan"),
        }
        if world.active:
            summary["processes"] = world.size
        logger.summary(summary)
        logger.close(exit_code)
        venv.close()
    if stopped_by is not None:
        summary["stopped_by"] = stopped_by
        summary["checkpoint"] = str(last)
    return summary
