"""Sampling from an SB3 ``ActorCriticPolicy`` without building a ``torch.distributions`` object.

``policy(obs)`` spends about half its time constructing the distribution; in the selection wrapper's hot loop
(one call per active sub-policy per primitive step) this path samples the same distributions and returns the
same (actions, values, log_probs) for categorical and diagonal-Gaussian policies, and falls back to
``policy(obs)`` for anything else (state-dependent exploration, squashed outputs, other action spaces).
"""

from __future__ import annotations

import math

import numpy as np
import torch as th
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _fast(policy) -> str | None:
    if not isinstance(policy, ActorCriticPolicy) or policy.use_sde or policy.squash_output:
        return None
    if type(policy.action_dist) is CategoricalDistribution:
        return "categorical"
    if type(policy.action_dist) is DiagGaussianDistribution:
        return "gaussian"
    return None


def to_tensor(obs: np.ndarray, device: th.device | str = "cpu") -> th.Tensor:
    """Observations for a forward pass, copied into torch's own memory (always 64-byte aligned).

    The CPU matrix products give results that depend, in the last bits, on the alignment of their input: a forward
    on a view into a numpy array (one task group's rows of the envs' observations, an array unpickled on resume)
    can differ from the same forward on the same numbers elsewhere in memory, and a resumed run would drift from
    the run that was never stopped. SB3's ``obs_as_tensor`` shares the numpy memory; this copies it."""
    return th.tensor(np.asarray(obs), device=device)


@th.no_grad()
def sample(policy, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """(actions, values of shape (n, 1), log-probabilities of shape (n,)), like ``ActorCriticPolicy.forward``."""
    kind = _fast(policy)
    if kind is None:
        return policy(obs)
    latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))
    values = policy.value_net(latent_vf)
    out = policy.action_net(latent_pi)
    if kind == "categorical":
        log_p = th.log_softmax(out, dim=-1)
        actions = th.multinomial(log_p.exp(), 1).squeeze(1)
        return actions, values, log_p.gather(1, actions[:, None]).squeeze(1)
    log_std = policy.log_std.expand_as(out)
    noise = th.randn_like(out)
    actions = out + noise * log_std.exp()
    log_prob = (-0.5 * noise.pow(2) - log_std - _LOG_SQRT_2PI).sum(dim=-1)
    return actions, values, log_prob
