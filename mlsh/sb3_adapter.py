"""Every touch of stable-baselines3's private state lives here (SB3 pinned at 2.9.2; tests/test_sb3_adapter.py).

MLSH drives SB3's ``PPO`` from outside ``learn()``: the master collects with SB3's own ``collect_rollouts`` and
trains with ``train()``, and the sub-policies train with ``train()`` on a batch that the MLSH learner computed.
That needs a handful of private attributes, named once below.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

# SB3 validates distribution arguments on every forward pass; the checks cost a noticeable share of inference.
th.distributions.Distribution.set_default_validate_args(False)


class VariableRolloutBuffer(RolloutBuffer):
    """A ``RolloutBuffer`` that ``PPO.train()`` can consume for a batch of any length, filled by ``load``."""

    def load(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        values: np.ndarray,
        log_probs: np.ndarray,
        advantages: np.ndarray,
        returns: np.ndarray,
    ) -> None:
        n = len(observations)
        if n == 0:
            raise ValueError("cannot train on an empty batch")
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


def train(model: PPO) -> dict[str, Any]:
    """One ``PPO.train()`` call (epochs of minibatch updates) on the model's current buffer; returns its records."""
    model.train()
    return pop_records(model)


def train_on_batch(model: PPO, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Run ``PPO.train()`` on an externally computed batch (keys of ``VariableRolloutBuffer.load``)."""
    buffer = model.rollout_buffer
    if not isinstance(buffer, VariableRolloutBuffer):
        raise TypeError("the model must be built with rollout_buffer_class=VariableRolloutBuffer")
    buffer.load(**batch)
    model.num_timesteps += len(batch["observations"])
    return train(model)


def n_updates(model: PPO) -> int:
    return int(model._n_updates)


def action_dim(space: spaces.Space) -> int:
    return 1 if isinstance(space, spaces.Discrete) else int(np.prod(space.shape))
