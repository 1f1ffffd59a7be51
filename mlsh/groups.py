"""Task groups: G groups side by side, each with its own task, its own master and its own ``n_envs`` envs.

All envs of all groups live in one ``VecEnv`` (group g owns envs ``g * n_envs ... (g + 1) * n_envs - 1``), so
that one env step and one forward per active sub-policy serve every group. A group's task switch resets only its
own envs (``reset_envs``), through every wrapper of the stack:

    TaskVecEnv (DummyVecEnv)  ->  TaskVecNormalize (optional)  ->  EpisodeStats  ->  SubPolicySelectionVecEnv

Each group runs W warmup then U joint iterations per task on its own clock; the first task of group g starts
``g * int(W + U / 10)`` iterations early in warmup, the original's stagger (REFERENCE.md 1.7), so that the groups'
joint phases are spread over time (``schedule.stagger=wrapped``: the same offset modulo W + U).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize

from mlsh.faults import check_array

STAGGERS = ("original", "wrapped")


def stagger(group: int, warmup_iters: int, joint_iters: int, kind: str = "original") -> int:
    """Extra warmup iterations of group ``group``'s first task.

    ``original``: the original's ``(rank % 10) * int(W + U / 10)`` with the group index in place of ``rank % 10``.
    ``wrapped``: the same modulo W + U: the same phases of every group's joint periods from the second task on,
    without the long first warmups (the original's group 9 waits 9 * 23 = 207 iterations on FourRooms' W=20, U=30
    before its first joint iteration; wrapped, at most 49)."""
    if kind not in STAGGERS:
        raise ValueError(f"stagger must be one of {list(STAGGERS)}, got {kind!r}")
    offset = group * int(warmup_iters + joint_iters / 10)
    return offset % (warmup_iters + joint_iters) if kind == "wrapped" else offset


@dataclass
class GroupClock:
    """Where one group stands: its task, and its position ``it`` in that task's W + U iterations (negative during
    the stagger of the first task)."""

    group: int
    task: Any = None
    task_index: int = -1
    it: int = 0
    warmup_return: float | None = None  # mean return of the last warmup iteration of the current task

    def joint(self, warmup_iters: int) -> bool:
        return self.it >= warmup_iters

    def state(self) -> dict[str, Any]:
        return {"group": self.group, "task": self.task, "task_index": self.task_index, "it": self.it,
                "warmup_return": self.warmup_return}


def group_slices(n_groups: int, n_envs: int) -> list[slice]:
    return [slice(g * n_envs, (g + 1) * n_envs) for g in range(n_groups)]


class TaskVecEnv(DummyVecEnv):
    """A ``DummyVecEnv`` that can reset some of its envs (a task group) with reset options, e.g. a new task."""

    def reset_envs(self, indices: Sequence[int], options: dict[str, Any] | None = None) -> np.ndarray:
        """Reset the envs ``indices`` (with ``options``); returns their first observations."""
        for i in indices:
            extra = {"options": options} if options else {}
            obs, self.reset_infos[i] = self.envs[i].reset(seed=self._seeds[i], **extra)
            self._save_obs(i, obs)
            self._seeds[i], self._options[i] = None, {}  # as in reset(): seeds and options are used once
        return self._obs_from_buf()[np.asarray(indices)]


def batch_moments(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.mean(arr, axis=0)`` and ``np.var(arr, axis=0)``, the same bits, in half the time (the mean once)."""
    mean = np.mean(arr, axis=0)
    dev = arr - mean
    dev *= dev
    return mean, np.mean(dev, axis=0)


class TrackedRMS(RunningMeanStd):
    """SB3's running mean/std that also keeps apart what it saw since the last ``merge`` (``fresh``): the part that
    a process of a distributed run contributes to the statistics of all (``mlsh.distributed.sync_obs_stats``).
    Only when ``track`` (several processes): one process pays nothing."""

    def __init__(self, epsilon: float = 1e-4, shape: tuple[int, ...] = (), track: bool = True):
        super().__init__(epsilon, shape)
        self.track = track
        self._mark()

    @classmethod
    def of(cls, rms: RunningMeanStd, track: bool) -> TrackedRMS:
        out = cls(shape=rms.mean.shape, track=track)
        out.mean, out.var, out.count = rms.mean.copy(), rms.var.copy(), float(rms.count)
        out._mark()
        return out

    def _mark(self) -> None:
        if self.track:
            self.base = (self.mean.copy(), self.var.copy(), float(self.count))
            self.fresh = RunningMeanStd(epsilon=0.0, shape=self.mean.shape)

    def update(self, arr: np.ndarray) -> None:
        """SB3's ``update``, bit for bit, with the batch's moments computed once for both statistics."""
        mean, var = batch_moments(arr)
        self.update_from_moments(mean, var, arr.shape[0])
        if self.track:
            self.fresh.update_from_moments(mean, var, arr.shape[0])

    def merge(self, parts: Sequence[tuple[np.ndarray, np.ndarray, float]]) -> None:
        """These statistics become those of the last merge combined with every ``(mean, var, count)`` of
        ``parts`` (each process's ``fresh``), in order."""
        self.mean, self.var, self.count = self.base[0].copy(), self.base[1].copy(), self.base[2]
        for mean, var, count in parts:
            if count > 0:
                self.update_from_moments(mean, var, count)
        self._mark()


class TaskVecNormalize(VecNormalize):
    """SB3's ``VecNormalize`` with ``reset_envs``: the reset observations update the shared filter as in ``reset``.
    Its observation statistics are a ``TrackedRMS`` (the same numbers as SB3's)."""

    def __init__(self, venv: VecEnv, track: bool = False, **kwargs):
        super().__init__(venv, **kwargs)
        if self.norm_obs:
            self.obs_rms = TrackedRMS(shape=self.obs_rms.mean.shape, track=track)

    def step_wait(self):
        """SB3's ``step_wait`` for array observations, visiting only the envs whose episode ended (SB3 loops over
        every env)."""
        obs, rewards, dones, infos = self.venv.step_wait()
        self.old_obs, self.old_reward = obs, rewards
        if self.training and self.norm_obs:
            self.obs_rms.update(obs)
        obs = self.normalize_obs(obs)
        if self.training:
            self._update_reward(rewards)
        rewards = self.normalize_reward(rewards)
        for i in np.flatnonzero(dones):
            if "terminal_observation" in infos[i]:
                infos[i]["terminal_observation"] = self.normalize_obs(infos[i]["terminal_observation"])
        self.returns[dones] = 0
        return obs, rewards, dones, infos

    def reset_envs(self, indices: Sequence[int], options: dict[str, Any] | None = None) -> np.ndarray:
        obs = self.venv.reset_envs(indices, options)
        idx = np.asarray(indices)
        if np.shape(self.__dict__.get("old_obs")) != (self.num_envs, *obs.shape[1:]):  # set by the first reset
            self.old_obs = np.zeros((self.num_envs, *obs.shape[1:]), dtype=obs.dtype)
        self.old_obs[idx] = obs
        self.returns[idx] = 0
        if self.training and self.norm_obs:
            self.obs_rms.update(obs)
        return self.normalize_obs(obs)


class EpisodeStats(VecEnvWrapper):
    """Records the return of every episode that finishes, per env; ``pop(indices)`` hands over those of some envs."""

    def __init__(self, venv: VecEnv):
        super().__init__(venv)
        self._running = np.zeros(self.num_envs)
        self._done: list[list[float]] = [[] for _ in range(self.num_envs)]

    def reset(self):
        self._running[:] = 0
        return self.venv.reset()

    def reset_envs(self, indices: Sequence[int], options: dict[str, Any] | None = None) -> np.ndarray:
        self._running[np.asarray(indices)] = 0
        return self.venv.reset_envs(indices, options)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        check_array(obs, "observation")
        check_array(rewards, "reward")
        self._running += rewards
        for i in np.flatnonzero(dones):
            self._done[i].append(float(self._running[i]))
            self._running[i] = 0
        return obs, rewards, dones, infos

    def pop(self, indices: Sequence[int] | slice | None = None) -> list[float]:
        """The returns of the episodes that finished since the last pop in the envs ``indices`` (default all),
        env by env; then forgets them."""
        chosen = range(self.num_envs)[indices] if isinstance(indices, slice) else \
            range(self.num_envs) if indices is None else indices
        out: list[float] = []
        for i in chosen:
            out.extend(self._done[i])
            self._done[i] = []
        return out


class GroupView(VecEnv):
    """The envs ``indices`` of ``venv`` (one group's) as a ``VecEnv`` that a model (a group's master) is built on.

    Attributes and methods of the envs are reached through ``venv``; stepping is refused: the steps are taken for
    all groups at once by ``sb3_adapter.collect_groups`` on the full env.
    """

    def __init__(self, venv: VecEnv, indices: Sequence[int]):
        self.venv, self.indices = venv, [int(i) for i in indices]
        super().__init__(len(self.indices), venv.observation_space, venv.action_space)

    def _map(self, indices) -> list[int]:
        if indices is None:
            return self.indices
        return [self.indices[i] for i in ([indices] if isinstance(indices, int) else indices)]

    def _refuse(self, *args, **kwargs):
        raise RuntimeError("a group's envs are stepped through sb3_adapter.collect_groups on the full VecEnv")

    reset = step_async = step_wait = _refuse

    def get_attr(self, attr_name, indices=None):
        return self.venv.get_attr(attr_name, self._map(indices))

    def set_attr(self, attr_name, value, indices=None):
        return self.venv.set_attr(attr_name, value, self._map(indices))

    def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
        return self.venv.env_method(method_name, *method_args, indices=self._map(indices), **method_kwargs)

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return self.venv.env_is_wrapped(wrapper_class, self._map(indices))

    def close(self) -> None:
        pass
