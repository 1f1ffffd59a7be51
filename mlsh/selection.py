"""The master's environment: a ``VecEnvWrapper`` whose action picks one of K sub-policies for N primitive steps.

One master step runs the chosen sub-policy of every env for ``macro_duration`` primitive steps on the whole batch
(one forward pass per active sub-policy per primitive step), returns the sum of the N rewards, and records every
primitive transition for the sub-policy learner (``pop_trajectory``).

Episodes that end inside a macro step: the wrapped ``VecEnv`` resets that env at once (SB3 semantics); the master
sees ``done`` at the end of the macro step with the reward summed up to the episode's end and the primitive
``terminal_observation``; primitive steps after the reset belong to the next episode and to the sub-policy data
only. Keep episode lengths a multiple of N (the config checks it for fixed-horizon tasks) and this never happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from mlsh.inference import numpy_forward, sample, to_tensor
from mlsh.sb3_adapter import action_dim


@dataclass
class Trajectory:
    """Primitive transitions of one rollout, time-major: arrays are (T, n_envs, ...)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray  # raw reward, plus gamma * V(terminal obs) on truncation (SB3's timeout bootstrap)
    episode_starts: np.ndarray  # 1 where the observation is the first of an episode
    values: np.ndarray  # value of the observation under the sub-policy that acted
    log_probs: np.ndarray
    choices: np.ndarray  # index of the sub-policy that acted
    last_values: np.ndarray  # (n_envs,) value of the observation after the last step
    last_dones: np.ndarray  # (n_envs,) whether the last step ended an episode
    # (T, n_envs) value of the observation after each step under the sub-policy that acted in it, at the last step
    # of every macro step (NaN elsewhere); recorded only by a wrapper built with ``segment_values=True``
    end_values: np.ndarray | None = None

    def __len__(self) -> int:
        return self.rewards.shape[0] * self.rewards.shape[1]


class SubPolicySelectionVecEnv(VecEnvWrapper):
    def __init__(
        self,
        venv: VecEnv,
        subpolicies: list[ActorCriticPolicy],
        macro_duration: int,
        gamma: float = 0.99,
        record: bool = True,
        segment_values: bool = False,
    ):
        if macro_duration < 1:
            raise ValueError(f"macro_duration must be >= 1, got {macro_duration}")
        if not subpolicies:
            raise ValueError("need at least one sub-policy")
        super().__init__(venv, observation_space=venv.observation_space, action_space=spaces.Discrete(len(subpolicies)))
        self.subpolicies = subpolicies
        self.macro_duration = int(macro_duration)
        self.gamma = float(gamma)
        self.record = record
        self.segment_values = segment_values  # record ``Trajectory.end_values`` (one value pass per macro step)
        self._box = isinstance(venv.action_space, spaces.Box)
        self._adim = action_dim(venv.action_space)
        self._obs: np.ndarray | None = None
        self._episode_starts = np.ones(self.num_envs, dtype=bool)
        self._choices = np.zeros(self.num_envs, dtype=np.int64)
        self._buffers: dict[str, list[np.ndarray]] = {}
        # macro steps per env and sub-policy (``choice_counts[indices].sum(0)``: a group's counts)
        self.choice_counts = np.zeros((self.num_envs, len(subpolicies)), dtype=np.int64)
        self._clear()

    @property
    def n_subpolicies(self) -> int:
        return len(self.subpolicies)

    # -- VecEnv API -----------------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        self._obs = self.venv.reset()
        self._episode_starts = np.ones(self.num_envs, dtype=bool)
        self._clear()
        return self._obs

    def reset_envs(self, indices, options=None) -> np.ndarray:
        """Reset the envs ``indices`` only (a task group's new task); the others keep their episodes."""
        obs = self.venv.reset_envs(indices, options)
        self._obs = np.zeros((self.num_envs, *obs.shape[1:]), dtype=obs.dtype) if self._obs is None \
            else self._obs.copy()  # a copy: the masters hold views of the old array
        self._obs[np.asarray(indices)] = obs
        self._episode_starts = self._episode_starts.copy()
        self._episode_starts[np.asarray(indices)] = True
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._choices = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self):
        if self._obs is None:
            raise RuntimeError("reset() must be called before step()")
        choices = self._choices
        self.choice_counts[np.arange(self.num_envs), choices] += 1
        macro_reward = np.zeros(self.num_envs, dtype=np.float32)
        macro_done = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        active = self._active(choices)  # the choices and weights hold for the whole macro step
        for _ in range(self.macro_duration):
            obs = self._obs
            actions, values, log_probs = self._act(obs, choices, active)
            env_actions = np.clip(actions, self.venv.action_space.low, self.venv.action_space.high) if self._box \
                else actions.reshape(self.num_envs)
            new_obs, rewards, dones, step_infos = self.venv.step(env_actions)
            macro_reward += np.where(macro_done, 0.0, rewards)
            if self.record:
                bootstrapped = rewards.astype(np.float32)
                self._bootstrap_truncations(bootstrapped, dones, step_infos, choices)
                for key, value in (("observations", obs), ("actions", actions), ("rewards", bootstrapped),
                                   ("episode_starts", self._episode_starts), ("values", values),
                                   ("log_probs", log_probs), ("choices", choices)):
                    self._buffers[key].append(value)
            for i in np.flatnonzero(dones & ~macro_done):
                infos[i] = dict(step_infos[i])
            macro_done |= dones
            self._episode_starts = dones
            self._obs = new_obs
        if self.record and self.segment_values:
            ends = np.full((self.macro_duration, self.num_envs), np.nan, dtype=np.float32)
            ends[-1] = self._values(self._obs, choices)  # the reset observation where an episode ended: cut anyway
            self._buffers["end_values"].extend(ends)
        return self._obs, macro_reward, macro_done, infos

    # -- sub-policy data --------------------------------------------------------------------------------------
    def pop_trajectory(self) -> Trajectory:
        """The primitive transitions recorded since the last call, then forgets them."""
        if not self._buffers["rewards"]:
            raise RuntimeError("no primitive steps recorded since the last pop_trajectory()")
        last_values = self._values(self._obs, self._choices)
        data = {key: np.stack(value) if value else None for key, value in self._buffers.items()}
        self._clear()
        return Trajectory(**data, last_values=last_values, last_dones=self._episode_starts.copy())

    def _clear(self) -> None:
        self._buffers = {key: [] for key in ("observations", "actions", "rewards", "episode_starts", "values",
                                             "log_probs", "choices", "end_values")}

    def _groups(self, choices: np.ndarray):
        """(sub-policy index, env indices) for each sub-policy that is active in ``choices``."""
        first = choices[0]
        if (choices == first).all():
            yield int(first), slice(None)
            return
        for k in np.unique(choices):
            yield int(k), np.flatnonzero(choices == k)

    def _active(self, choices: np.ndarray) -> list[tuple]:
        """(sub-policy index, env indices, its numpy forward or None) for each sub-policy active in ``choices``."""
        return [(k, idx, numpy_forward(self.subpolicies[k])) for k, idx in self._groups(choices)]

    @th.no_grad()
    def _act(self, obs: np.ndarray, choices: np.ndarray, active: list | None = None):
        """Every env's action under its chosen sub-policy (``active``: ``_active(choices)``, if known)."""
        obs_t = None
        actions = np.empty((self.num_envs, self._adim), dtype=np.float32 if self._box else np.int64)
        values = np.empty(self.num_envs, dtype=np.float32)
        log_probs = np.empty(self.num_envs, dtype=np.float32)
        for k, idx, forward in self._active(choices) if active is None else active:
            if forward is not None:  # SB3's MLP layout: the numpy forward (mlsh.inference)
                a, v, lp = forward(obs[idx])
            else:
                obs_t = to_tensor(obs) if obs_t is None else obs_t
                a, v, lp = (t.numpy() for t in sample(self.subpolicies[k], obs_t[idx]))
            actions[idx] = a.reshape(-1, self._adim)
            values[idx] = v.reshape(-1)
            log_probs[idx] = lp.reshape(-1)
        return actions, values, log_probs

    @th.no_grad()
    def _values(self, obs: np.ndarray, choices: np.ndarray) -> np.ndarray:
        values = np.empty(len(obs), dtype=np.float32)
        obs_t = to_tensor(obs)
        for k, idx in self._groups(choices):
            values[idx] = self.subpolicies[k].predict_values(obs_t[idx]).numpy().reshape(-1)
        return values

    def _bootstrap_truncations(self, rewards, dones, infos, choices) -> None:
        idx = [i for i in np.flatnonzero(dones)
               if infos[i].get("TimeLimit.truncated", False) and infos[i].get("terminal_observation") is not None]
        if idx:
            terminal = np.stack([infos[i]["terminal_observation"] for i in idx])
            rewards[idx] += self.gamma * self._values(terminal, choices[idx])
