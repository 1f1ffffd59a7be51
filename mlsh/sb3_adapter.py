"""Every touch of stable-baselines3's private state lives here (SB3 pinned at 2.9.2; tests/test_sb3_adapter.py).

MLSH drives SB3's ``PPO`` from outside ``learn()``: the master collects with SB3's own ``collect_rollouts`` and
trains with ``train()``, and the sub-policies train with ``train()`` on a batch that the MLSH learner computed.
That needs a handful of private attributes, named once below.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.vec_env import VecEnv

from mlsh import ppo_update
from mlsh.inference import sample, to_tensor

# SB3 validates distribution arguments on every forward pass; the checks cost a noticeable share of inference.
th.distributions.Distribution.set_default_validate_args(False)


class VariableRolloutBuffer(RolloutBuffer):
    """A ``RolloutBuffer`` that ``PPO.train()`` can consume for a batch of any length, filled by ``load``.

    The batch may hold the data of several task groups (``group_sizes``, in order); every minibatch then holds
    samples of every group, and ``group_weighting`` says how the groups weigh in its gradient:

    - ``"groups"``: each group the same, whatever its size (the original's MPI-Adam, a mean over the workers that
      contribute). Every minibatch holds ``batch_size`` samples of each group, so its mean loss is the mean of the
      groups' mean losses and its gradient the mean of the groups' gradients. Each group's indices are a stream of
      fresh permutations of its samples as long as the largest group's (a small group's samples recur within an
      epoch); minibatch j takes positions ``j * batch_size ...`` of every stream, the last one shorter.
    - ``"samples"``: each group by its number of samples (the mean over all samples): an epoch has
      ``ceil(n / batch_size)`` minibatches and each group's permutation is split evenly over them.

    With one group both are SB3's own ``get``, draw for draw. With ``n_minibatches`` set, an epoch has that many
    minibatches (the original's 15) whatever the batch size: ``get`` sizes them to fit, in place of PPO's
    ``batch_size`` (per group with ``"groups"``).

    ``group_seeds`` (``"groups"`` only): each group's permutations come from its own generator, seeded by the
    caller from the group's identity, instead of numpy's global one; and ``longest`` sets the stream length (the
    number of minibatches) from a larger group held elsewhere. Then the minibatches of a group do not depend on
    which other groups share the batch, so that an update split over processes, each with some of the groups,
    draws the same minibatches as one process with all of them (``mlsh.distributed``).
    """

    group_sizes: list[int] | None = None
    group_weighting: str = "groups"
    n_minibatches: int | None = None
    group_rngs: list[np.random.Generator] | None = None
    longest: int | None = None

    def load(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        values: np.ndarray,
        log_probs: np.ndarray,
        advantages: np.ndarray,
        returns: np.ndarray,
        group_sizes: Sequence[int] | None = None,
        group_seeds: Sequence[Any] | None = None,
        longest: int | None = None,
    ) -> None:
        n = len(observations)
        if n == 0:
            raise ValueError("cannot train on an empty batch")
        if group_sizes is not None and (sum(group_sizes) != n or min(group_sizes) < 1):
            raise ValueError(f"group_sizes {list(group_sizes)} must be positive and sum to the batch size {n}")
        self.group_rngs, self.longest = None, None
        if group_seeds is not None:
            sizes = [n] if group_sizes is None else [int(g) for g in group_sizes]
            if len(group_seeds) != len(sizes) or self.group_weighting != "groups":
                raise ValueError(f"group_seeds needs group_weighting='groups' and one seed per group ({len(sizes)}),"
                                 f" got {len(group_seeds)}")
            self.group_rngs = [np.random.default_rng(seed) for seed in group_seeds]
            self.longest = max(sizes) if longest is None else int(longest)
            if self.longest < max(sizes):
                raise ValueError(f"longest ({self.longest}) is shorter than a group of the batch ({max(sizes)})")
            self.group_sizes = sizes
        else:
            self.group_sizes = None if group_sizes is None or len(group_sizes) == 1 else [int(g) for g in group_sizes]
        self.buffer_size, self.n_envs = n, 1
        self.observations = np.asarray(observations, dtype=self.observation_space.dtype).reshape(n, 1, *self.obs_shape)
        self.actions = np.asarray(actions, dtype=self.action_space.dtype).reshape(n, 1, self.action_dim)
        self.values = np.asarray(values, dtype=np.float32).reshape(n, 1)
        self.log_probs = np.asarray(log_probs, dtype=np.float32).reshape(n, 1)
        self.advantages = np.asarray(advantages, dtype=np.float32).reshape(n, 1)
        self.returns = np.asarray(returns, dtype=np.float32).reshape(n, 1)
        self.rewards = np.zeros((n, 1), dtype=np.float32)
        self.episode_starts = np.zeros((n, 1), dtype=np.float32)
        self.pos, self.full = n, True
        # Left True, get() would silently reuse the previously flattened arrays.
        self.generator_ready = False

    def get(self, batch_size: int | None = None) -> Generator[RolloutBufferSamples, None, None]:
        if self.n_minibatches:
            per_epoch = self.longest or (max(self.group_sizes) if self.group_sizes and self.group_weighting == "groups"
                                         else self.buffer_size)
            batch_size = -(-per_epoch // self.n_minibatches)
        if self.group_sizes is None:
            yield from super().get(batch_size)
            return
        if not self.generator_ready:
            for name in ("observations", "actions", "values", "log_probs", "advantages", "returns"):
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
            self.generator_ready = True
        offsets = np.cumsum([0, *self.group_sizes[:-1]])
        if self.group_weighting == "samples":
            n_batches = -(-self.buffer_size // (batch_size or self.buffer_size))
            chunks = [np.array_split(start + np.random.permutation(size), n_batches)
                      for start, size in zip(offsets, self.group_sizes, strict=True)]
            for j in range(n_batches):
                yield self._get_samples(np.concatenate([c[j] for c in chunks]))
            return
        longest = self.longest or max(self.group_sizes)
        streams = []
        for g, (start, size) in enumerate(zip(offsets, self.group_sizes, strict=True)):
            permutation = np.random.permutation if self.group_rngs is None else self.group_rngs[g].permutation
            perms = [permutation(size) for _ in range(-(-longest // size))]
            streams.append(start + np.concatenate(perms)[:longest])
        batch_size = batch_size or longest
        for pos in range(0, longest, batch_size):
            yield self._get_samples(np.concatenate([s[pos:pos + batch_size] for s in streams]))


class SeededRolloutBuffer(RolloutBuffer):
    """SB3's ``RolloutBuffer`` whose minibatch order comes from ``rng`` instead of numpy's global generator, when
    set (``seed_minibatches``): then a model's update does not depend on the process that runs it, nor on what
    else that process drew before (the masters, whose updates a distributed run moves between processes)."""

    rng: np.random.Generator | None = None

    def get(self, batch_size: int | None = None) -> Generator[RolloutBufferSamples, None, None]:
        if self.rng is None:
            yield from super().get(batch_size)
            return
        if not self.full:
            raise RuntimeError("the rollout buffer is not full")
        n = self.buffer_size * self.n_envs
        indices = self.rng.permutation(n)  # then SB3's own get, draw for draw
        if not self.generator_ready:
            for name in ("observations", "actions", "values", "log_probs", "advantages", "returns"):
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
            self.generator_ready = True
        batch_size = batch_size or n
        for start in range(0, n, batch_size):
            yield self._get_samples(indices[start:start + batch_size])


def seed_minibatches(model: PPO, key: Sequence[int]) -> None:
    """The minibatches of ``model``'s next update drawn from a generator seeded by ``key`` and its update counter
    (a ``SeededRolloutBuffer``)."""
    model.rollout_buffer.rng = np.random.default_rng([*key, int(model._n_updates)])


_BUFFER_ARRAYS = ("observations", "actions", "rewards", "returns", "episode_starts", "values", "log_probs",
                  "advantages")


def export_update(model: PPO) -> dict[str, Any]:
    """What another process needs to run ``model``'s next ``train()`` in a ``PPO`` of the same architecture
    (``import_update``): its weights, optimizer state, update counter and progress, and its filled rollout buffer
    with the generator of its minibatches."""
    buffer = model.rollout_buffer
    if not buffer.full or buffer.generator_ready:
        raise RuntimeError("export_update needs a freshly filled rollout buffer (after collection, before train)")
    return {**export_result(model), "progress": model._current_progress_remaining,
            "buffer": {name: getattr(buffer, name) for name in _BUFFER_ARRAYS},
            "rng": getattr(buffer, "rng", None)}


def import_update(model: PPO, state: dict[str, Any]) -> None:
    """``model`` becomes the one ``export_update`` described, ready for ``train()``."""
    import_result(model, state)
    model._current_progress_remaining = state["progress"]
    buffer = model.rollout_buffer
    buffer.reset()
    for name, value in state["buffer"].items():
        if getattr(buffer, name).shape != value.shape:
            raise ValueError(f"rollout buffer {name} of shape {value.shape} does not fit this model's "
                             f"{getattr(buffer, name).shape}")
        setattr(buffer, name, value)
    buffer.pos, buffer.full = buffer.buffer_size, True
    buffer.rng = state["rng"]


def export_result(model: PPO) -> dict[str, Any]:
    """``model``'s weights, optimizer state and update counter (``import_result``)."""
    return {"weights": model.policy.state_dict(), "optimizer": model.policy.optimizer.state_dict(),
            "n_updates": model._n_updates}


def import_result(model: PPO, state: dict[str, Any]) -> None:
    model.policy.load_state_dict(state["weights"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    model._n_updates = state["n_updates"]


class _NoCallback(BaseCallback):
    def _on_step(self) -> bool:
        return True


def capture_logger(model: PPO) -> None:
    """Give ``model`` a logger that writes nowhere; its records are read back with ``pop_records``.

    ``PPO.train()`` outside ``learn()`` fails without a logger (``AttributeError: _logger``).
    """
    model.set_logger(Logger(folder=None, output_formats=[]))


def pop_records(model: PPO) -> dict[str, Any]:
    """The values ``model`` recorded since the last call (``train/value_loss`` ...), then clears them."""
    records = dict(model.logger.name_to_value)
    model.logger.dump()
    return records


def begin_collection(model: PPO, first_obs: np.ndarray) -> None:
    """Prepare ``model`` to call ``collect_rollouts`` on its env, whose freshly reset observation is ``first_obs``."""
    model._last_obs = first_obs
    model._last_episode_starts = np.ones(model.env.num_envs, dtype=bool)
    model.ep_info_buffer = deque(maxlen=100)
    model.ep_success_buffer = deque(maxlen=100)


def collect(model: PPO, n_steps: int) -> None:
    """SB3's own ``collect_rollouts`` into the model's rollout buffer, ``n_steps`` per env."""
    callback = model._init_callback(_NoCallback())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)


def collect_groups(models: Sequence[PPO], env: VecEnv, slices: Sequence[slice], n_steps: int) -> None:
    """SB3's ``collect_rollouts`` for several models acting together on one ``VecEnv``: model i acts on the envs
    ``slices[i]`` (its ``_last_obs`` holds their observations) and its rollout buffer gets their transitions.

    One ``env.step`` per step serves every model, after each model's forward on its own envs. The operations of
    ``collect_rollouts`` (forward, action clipping, step, timeout bootstrap, ``add``, last values, GAE) happen in
    the same order, so one model on the whole env draws the same random numbers and fills the same buffer.
    """
    for model in models:
        if model._last_obs is None:
            raise RuntimeError("begin_collection() before collect_groups()")
        model.policy.set_training_mode(False)
        model.rollout_buffer.reset()
    for _ in range(n_steps):
        taken = []
        for model in models:
            with th.no_grad():
                actions, values, log_probs = sample(model.policy, to_tensor(model._last_obs, model.device))
            taken.append((actions.cpu().numpy(), values, log_probs))
        clipped = [np.clip(a, m.action_space.low, m.action_space.high) if isinstance(m.action_space, spaces.Box)
                   else a for m, (a, _, _) in zip(models, taken, strict=True)]
        new_obs, rewards, dones, infos = env.step(clipped[0] if len(models) == 1 else np.concatenate(clipped))
        for model, sl, (actions, values, log_probs) in zip(models, slices, taken, strict=True):
            rew, done, info = rewards[sl], dones[sl], infos[sl]
            model.num_timesteps += len(done)
            model._update_info_buffer(info, done)
            if isinstance(model.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            for i, d in enumerate(done):  # timeout bootstrap, as SB3 (GitHub issue #633)
                if d and info[i].get("terminal_observation") is not None and info[i].get("TimeLimit.truncated", False):
                    terminal_obs = to_tensor(info[i]["terminal_observation"][None], model.device)
                    with th.no_grad():
                        terminal_value = model.policy.predict_values(terminal_obs)[0]
                    rew[i] += model.gamma * terminal_value
            model.rollout_buffer.add(model._last_obs, actions, rew, model._last_episode_starts, values, log_probs)
            model._last_obs = new_obs[sl]
            model._last_episode_starts = done
    for model, sl in zip(models, slices, strict=True):
        with th.no_grad():
            values = model.policy.predict_values(to_tensor(new_obs[sl], model.device))
        model.rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones[sl])


def reset_some(model: PPO, indices: np.ndarray, obs: np.ndarray) -> None:
    """Some of ``model``'s envs were reset (a task group's new task): their first observations are ``obs``."""
    model._last_obs = np.array(model._last_obs)  # a copy: other arrays may share the old one
    model._last_obs[indices] = obs
    model._last_episode_starts = np.array(model._last_episode_starts, dtype=bool)
    model._last_episode_starts[indices] = True


def train(model: PPO) -> dict[str, Any]:
    """One ``PPO.train()`` (epochs of minibatch updates) on the model's current buffer, as ``mlsh.ppo_update``
    runs it; returns its records."""
    ppo_update.train(model)
    return pop_records(model)


def train_on_batch(model: PPO, batch: dict[str, Any], count: bool = True) -> dict[str, Any]:
    """Run ``PPO.train()`` on an externally computed batch (keys of ``VariableRolloutBuffer.load``); ``count``:
    add its steps to the model's step counter."""
    buffer = model.rollout_buffer
    if not isinstance(buffer, VariableRolloutBuffer):
        raise TypeError("the model must be built with rollout_buffer_class=VariableRolloutBuffer")
    buffer.load(**batch)
    if count:
        model.num_timesteps += len(batch["observations"])
    return train(model)


def n_updates(model: PPO) -> int:
    return int(model._n_updates)


def action_dim(space: spaces.Space) -> int:
    return 1 if isinstance(space, spaces.Discrete) else int(np.prod(space.shape))
