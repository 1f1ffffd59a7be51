"""Many envs of one MuJoCo task distribution stepped together in MuJoCo's C code, as one SB3 ``VecEnv``.

``MujocoBatchVecEnv(env_id, n_envs)`` holds the n simulations of an env in one ``mujoco.batch.Batch`` (mujoco 4.0):
one ``step`` call advances all of them by ``frame_skip`` substeps on ``nthread`` threads, and the task logic
(scenery, rewards, observations, resets, the obstacle course's monster) runs on rows of envs in numpy, through the
same methods of the env class that its per-env gymnasium ``step`` calls with one row (``envs/ant.py``,
``envs/humanoid.py``). It stands in for ``DummyVecEnv`` over ``gym.make`` envs wrapped in ``TimeLimit`` and
``Monitor`` and behaves as that stack, transition for transition: the same observations, float32 rewards, dones,
``TimeLimit.truncated``, ``terminal_observation``, ``episode`` ({r, l, t}) and env infos, the same reset noise from
one generator per env seeded like the env's ``np_random``, the same seeds (``seed + i``) and reset options, and
``reset_envs`` as ``mlsh.groups.TaskVecEnv`` (``tests/test_batch.py`` compares them for every MuJoCo env).

Why ``mujoco.batch``: it steps the n simulations' state rows in C, bit-identical to one ``MjData`` per env, and
exposes them (``qpos``, ``mocap_pos``, derived fields) as live ``(n, ...)`` arrays, so nothing between the simulator
and the policy loops over envs in Python. ``mujoco.rollout`` steps open-loop control sequences, not a policy in the
loop; ``mjbatch`` is not a registry package (``README.md``, "Speed", for what each costs here).

Env infos are built lazily (``BatchInfos``): per-env values are kept as arrays and a dict is made only for the envs
whose info is read (the finished ones, in this project's wrappers).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils import seeding
from mujoco import batch as mjbatch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv


class BatchInfos(Sequence):
    """The per-env info dicts of one step, each built on first access from per-env ``columns`` (arrays of length
    n) plus ``extra`` (dicts of the finished envs: ``terminal_observation`` and the like). A built dict is kept, so
    that writing into it (``VecNormalize`` normalises ``terminal_observation`` in place) lasts. Slicing gives a
    view that shares the dicts."""

    def __init__(self, columns: dict[str, np.ndarray], extra: dict[int, dict[str, Any]], n: int,
                 index: np.ndarray | None = None, built: dict[int, dict[str, Any]] | None = None):
        self._columns, self._extra, self._n = columns, extra, n
        self._index = np.arange(n) if index is None else index
        self._built = {} if built is None else built

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return BatchInfos(self._columns, self._extra, self._n, self._index[item], self._built)
        i = int(self._index[item])
        info = self._built.get(i)
        if info is None:
            info = {key: _scalar(values[i]) for key, values in self._columns.items()}
            info.update(self._extra.get(i, {}))
            self._built[i] = info
        return info

    def __repr__(self) -> str:
        return f"BatchInfos({list(self)!r})"


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) and not isinstance(value, np.floating) else value


class MujocoBatchVecEnv(VecEnv):
    """``n_envs`` envs of ``env_id`` (a MuJoCo env of ``envs/`` with batch methods) in one ``mujoco.batch.Batch``.

    The env class provides, on rows of envs: ``batch_outputs`` (derived fields its reward or observation reads),
    ``batch_vars(n)`` (its per-env bookkeeping arrays beyond ``task``), ``batch_reset(venv, ids)`` and
    ``batch_step(venv, actions)``; they read and write the live arrays ``venv.qpos``, ``venv.qvel``, ``venv.ctrl``,
    ``venv.mocap_pos``, ``venv.outputs[name]`` and ``venv.vars[name]``, step with ``venv.sim`` and draw from
    ``venv.rngs[i]``. One instance of the env (``template``, never stepped) holds the model and the parameters.
    """

    def __init__(self, env_id: str, n_envs: int, env_kwargs: dict[str, Any] | None = None, nthread: int = 1):
        spec = gym.spec(env_id)
        env_kwargs = dict(env_kwargs or {})
        self.env_id = env_id
        self.max_episode_steps = env_kwargs.pop("max_episode_steps", spec.max_episode_steps)
        self.template = gym.make(env_id, **env_kwargs).unwrapped
        if not hasattr(self.template, "batch_step"):
            raise ValueError(f"{env_id} has no batched implementation (env.batched=true needs a MuJoCo env of "
                             f"envs/ with batch_step); use env.batched=false")
        if int(nthread) < 1:
            raise ValueError(f"env.batch_threads must be >= 1, got {nthread}")
        self.sim = mjbatch.Batch(self.template.model, nsim=int(n_envs), nthread=int(nthread))
        self.qpos, self.qvel = self.sim.bind("qpos"), self.sim.bind("qvel")
        self.ctrl, self.mocap_pos = self.sim.bind("ctrl"), self.sim.bind("mocap_pos")
        self.outputs = {name: self.sim.bind(name) for name in self.template.batch_outputs}
        self.rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(n_envs)]
        n = int(n_envs)
        self.vars: dict[str, np.ndarray] = {"task": np.full(n, self.template.task, dtype=np.int64),
                                            "next_task": np.full(n, self.template.task, dtype=np.int64),
                                            **self.template.batch_vars(n)}
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._return = np.zeros(n, dtype=np.float64)
        self._start_time = time.time()
        self._obs = np.zeros((n, *self.template.observation_space.shape), dtype=self.template.observation_space.dtype)
        self._actions: np.ndarray | None = None
        super().__init__(n, self.template.observation_space, self.template.action_space)

    # -- task ---------------------------------------------------------------------------------------------------
    def _set_next_task(self, ids: Sequence[int], task: Any) -> None:
        """The task of the envs ``ids`` from their next reset on (validated by the env class)."""
        self.vars["next_task"][np.asarray(ids)] = self.template.check_task(task)

    # -- resets -------------------------------------------------------------------------------------------------
    def _reset(self, ids: np.ndarray, seeds: Sequence[int | None], options: Sequence[dict[str, Any]]) -> None:
        for i, seed, opts in zip(ids, seeds, options, strict=True):
            if seed is not None:
                self.rngs[i] = seeding.np_random(seed)[0]
            if opts and "task" in opts:
                self._set_next_task([i], opts["task"])
        self.sim.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        self._elapsed[ids] = 0
        self._return[ids] = 0.0
        obs, infos = self.template.batch_reset(self, ids)
        self._obs[ids] = obs
        for i, info in zip(ids, infos, strict=True):
            self.reset_infos[i] = info

    def reset(self) -> np.ndarray:
        ids = np.arange(self.num_envs)
        self._reset(ids, self._seeds, self._options)
        self._reset_seeds()
        self._reset_options()
        return self._obs.copy()

    def reset_envs(self, indices: Sequence[int], options: dict[str, Any] | None = None) -> np.ndarray:
        """Reset the envs ``indices`` (with ``options``, e.g. a new task); returns their first observations."""
        ids = np.asarray(indices, dtype=np.int64)
        self._reset(ids, [self._seeds[i] for i in ids], [options or {}] * len(ids))
        for i in ids:
            self._seeds[i], self._options[i] = None, {}
        return self._obs[ids].copy()

    # -- stepping -----------------------------------------------------------------------------------------------
    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs, *self.action_space.shape)

    def step_wait(self):
        obs, rewards, terminated, columns = self.template.batch_step(self, self._actions)
        self._elapsed += 1
        truncated = self._elapsed >= self.max_episode_steps if self.max_episode_steps else \
            np.zeros(self.num_envs, dtype=bool)
        self._return += rewards
        dones = terminated | truncated
        columns["TimeLimit.truncated"] = truncated & ~terminated
        extra: dict[int, dict[str, Any]] = {}
        finished = np.flatnonzero(dones)
        for i in finished:
            extra[int(i)] = {"episode": {"r": round(float(self._return[i]), 6), "l": int(self._elapsed[i]),
                                         "t": round(time.time() - self._start_time, 6)},
                             "terminal_observation": obs[i].copy()}
        self._obs[:] = obs
        if len(finished):
            self._reset(finished, [None] * len(finished), [{}] * len(finished))
        return self._obs.copy(), rewards.astype(np.float32), dones, BatchInfos(columns, extra, self.num_envs)

    # -- the rest of the VecEnv API ------------------------------------------------------------------------------
    def _ids(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [int(indices)] if isinstance(indices, int | np.integer) else [int(i) for i in indices]

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        """``task`` per env; other attributes are the env class's parameters, the same for every env (the
        template's). Per-env simulation state (``data``) is not an attribute here: ``sim.get_data(i)``."""
        ids = self._ids(indices)
        if attr_name == "task":
            return [int(self.vars["task"][i]) for i in ids]
        if attr_name in ("data", "np_random"):
            raise AttributeError(f"a batched env has no per-env {attr_name!r}: use sim.get_data(i) or rngs[i]")
        return [getattr(self.template, attr_name)] * len(ids)

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"a batched env cannot set {attr_name!r} per env; set env.kwargs instead")

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        ids = self._ids(indices)
        if method_name == "set_task":
            self._set_next_task(ids, *method_args, **method_kwargs)
            return [None] * len(ids)
        if method_name == "sample_task":
            return [self.template.sample_task(*method_args, **method_kwargs) for _ in ids]
        raise AttributeError(f"a batched env supports env_method('set_task' | 'sample_task'), not {method_name!r}")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._ids(indices))

    def get_images(self):
        raise NotImplementedError("a batched env does not render; render with gym.make (mlsh.gallery does)")

    def close(self) -> None:
        self.template.close()

    # -- exact resume (mlsh.snapshot) ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"sim": self.sim.state.copy(), "rngs": [g.bit_generator.state for g in self.rngs],
                "vars": {k: v.copy() for k, v in self.vars.items()}, "elapsed": self._elapsed.copy(),
                "return": self._return.copy(), "obs": self._obs.copy(), "seeds": list(self._seeds),
                "options": list(self._options), "reset_infos": list(self.reset_infos)}

    def set_state(self, state: dict[str, Any]) -> None:
        if state["sim"].shape != self.sim.state.shape:
            raise ValueError(f"resume state has simulation rows {state['sim'].shape}, this env "
                             f"{self.sim.state.shape}")
        self.sim.state[:] = state["sim"]
        for g, s in zip(self.rngs, state["rngs"], strict=True):
            g.bit_generator.state = s
        for key, value in state["vars"].items():
            self.vars[key][:] = value
        self._elapsed[:], self._return[:], self._obs[:] = state["elapsed"], state["return"], state["obs"]
        self._seeds, self._options = list(state["seeds"]), list(state["options"])
        self.reset_infos = list(state["reset_infos"])
