"""Numerical faults: a non-finite observation, reward, value, loss, gradient or weight stops the run where it
appears, before any checkpoint holds it.

- observations and rewards: ``check_array`` on every primitive step (``mlsh.groups.EpisodeStats``);
- gradients: ``watch`` adds a pre-step hook to a model's optimizer, so a non-finite gradient never reaches the
  weights;
- values, losses and weights: ``check_model`` and ``check_records`` after every iteration's updates.

Each raises ``NonFiniteError``; the training loop adds the task, iteration and global step to its message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO


class NonFiniteError(FloatingPointError):
    """A NaN or infinity in training; the message names the quantity and where it appeared."""


def check_array(values: np.ndarray, what: str) -> None:
    values = np.asarray(values)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values.reshape(len(values), -1)))
        envs = sorted({int(i) for i in bad[:, 0]})
        raise NonFiniteError(f"non-finite {what} in env(s) {envs[:10]} ({len(bad)} values)")


def _grad_hook(name: str):
    def hook(optimizer: th.optim.Optimizer, args, kwargs) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or th.isfinite(th.cat([g.reshape(-1) for g in grads])).all():  # one check for all
            return
        shape = next(tuple(g.shape) for g in grads if not th.isfinite(g).all())
        raise NonFiniteError(f"non-finite gradient in {name} (a parameter of shape {shape})")
    return hook


def watch(model: PPO, name: str) -> None:
    """Stop the run on a non-finite gradient in ``model``'s update, before the optimizer applies it."""
    watch_optimizer(model.policy.optimizer, name)


def watch_optimizer(optimizer: th.optim.Optimizer, name: str) -> None:
    """Stop the run on a non-finite gradient before ``optimizer`` applies it."""
    optimizer.register_step_pre_hook(_grad_hook(name))


def check_model(model: PPO, name: str) -> None:
    """Every weight of ``model``'s policy and every value in its last rollout must be finite."""
    module = model.policy if isinstance(model, PPO) else model  # option-critic's parts are modules themselves
    for pname, p in module.named_parameters():
        if not th.isfinite(p).all():
            raise NonFiniteError(f"non-finite weights in {name} ({pname}, {int((~th.isfinite(p)).sum())} values)")
    values = getattr(getattr(model, "rollout_buffer", None), "values", None)
    if values is not None and not np.isfinite(values).all():
        raise NonFiniteError(f"non-finite values in {name}'s last rollout")


CHECKED = ("loss", "entropy", "approx_kl")  # explained_variance is NaN by design when the returns do not vary


def check_records(records: Mapping[str, Any], where: str) -> None:
    """The losses, entropies and KL divergences that an update logged must be finite."""
    bad = sorted(k for k, v in records.items() if any(c in k for c in CHECKED)
                 and isinstance(v, float | np.floating) and not np.isfinite(v))
    if bad:
        raise NonFiniteError(f"non-finite {', '.join(bad)} in {where}")
