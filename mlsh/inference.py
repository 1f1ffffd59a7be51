"""Sampling from an SB3 ``ActorCriticPolicy`` without building a ``torch.distributions`` object.

``policy(obs)`` spends about half its time constructing the distribution; in the selection wrapper's hot loop
(one call per active sub-policy per primitive step) this path samples the same distributions and returns the
same (actions, values, log_probs) for categorical and diagonal-Gaussian policies, and falls back to
``policy(obs)`` for anything else (state-dependent exploration, squashed outputs, other action spaces).
"""

from __future__ import annotations

import math

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


class StackedSampler:
    """``sample`` for K sub-policies of one architecture in one forward: their weights stacked into (K, in, out)
    tensors, every layer one batched matrix product for all envs, each env's outputs then taken from the
    sub-policy it runs. The random draws are ``sample``'s, one per active sub-policy in ascending order, so the
    actions follow the same stream; the numbers agree with one forward per sub-policy to float rounding (a batched
    matrix product sums in another order). The stacks are rebuilt whenever a parameter changed (its version
    counter moved: an optimizer step, a load, a broadcast).

    ``supports(policies)``: SB3 ``ActorCriticPolicy`` with the flatten extractor, shared features, categorical or
    diagonal-Gaussian actions, MLP extractors of linear layers and one activation, the same shapes."""

    def __init__(self, policies: list[ActorCriticPolicy]):
        self.policies = policies
        self.kind = _fast(policies[0])
        self._params = [p for policy in policies for p in policy.parameters()]
        self._versions: tuple[int, ...] | None = None
        self._members: list[int] = []

    @staticmethod
    def supports(policies) -> bool:
        from stable_baselines3.common.torch_layers import FlattenExtractor

        if len(policies) < 2 or len({_fast(p) for p in policies}) != 1 or _fast(policies[0]) is None:
            return False
        shapes = set()
        for p in policies:
            if not isinstance(p.features_extractor, FlattenExtractor) or not p.share_features_extractor:
                return False
            layers = [*p.mlp_extractor.policy_net, None, *p.mlp_extractor.value_net, None, p.action_net, p.value_net]
            acts = {type(m) for m in layers if m is not None and not isinstance(m, th.nn.Linear)}
            if len(acts) > 1:
                return False
            shapes.add(tuple(None if m is None else tuple(m.weight.shape) if isinstance(m, th.nn.Linear)
                             else type(m).__name__ for m in layers))
        return len(shapes) == 1

    def _refresh(self) -> None:
        members = [id(p) for p in self.policies]
        versions = tuple(p._version for p in self._params)
        if versions == self._versions and members == self._members:
            return
        if members != self._members:
            self._params = [p for policy in self.policies for p in policy.parameters()]
            versions = tuple(p._version for p in self._params)

        def stack(modules):
            return th.stack([m.weight.T for m in modules]), th.stack([m.bias[None] for m in modules])

        def branch(nets):
            layers = list(zip(*[list(net) for net in nets], strict=True))
            return [stack(ms) if isinstance(ms[0], th.nn.Linear) else ms[0] for ms in layers]

        with th.no_grad():
            self._pi = branch([p.mlp_extractor.policy_net for p in self.policies])
            self._vf = branch([p.mlp_extractor.value_net for p in self.policies])
            self._action = stack([p.action_net for p in self.policies])
            self._value = stack([p.value_net for p in self.policies])
            if self.kind == "gaussian":
                self._log_std = th.stack([p.log_std for p in self.policies]).detach().clone()
        self._versions, self._members = versions, members

    @staticmethod
    def _run(layers, x: th.Tensor) -> th.Tensor:
        for layer in layers:
            x = th.baddbmm(layer[1], x, layer[0]) if isinstance(layer, tuple) else layer(x)
        return x

    @th.no_grad()
    def sample(self, obs: th.Tensor, choices, groups) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """(actions, values (n, 1), log-probabilities (n,)) of env i under sub-policy ``choices[i]``; ``groups``:
        (sub-policy, env indices) of each active sub-policy, ascending."""
        self._refresh()
        x = obs.float().flatten(1)
        n, k = len(x), len(self.policies)
        x = x.expand(k, *x.shape)
        out = th.baddbmm(self._action[1], self._run(self._pi, x), self._action[0])
        values = th.baddbmm(self._value[1], self._run(self._vf, x), self._value[0])
        rows, envs = th.as_tensor(choices), th.arange(n)
        out, values = out[rows, envs], values[rows, envs]
        if self.kind == "categorical":
            log_p = th.log_softmax(out, dim=-1)
            actions = th.empty(n, dtype=th.int64)
            for _, idx in groups:
                actions[idx] = th.multinomial(log_p[idx].exp(), 1).squeeze(1)
            return actions, values, log_p.gather(1, actions[:, None]).squeeze(1)
        log_std = self._log_std[rows]
        noise = th.empty_like(out)
        for _, idx in groups:
            noise[idx] = th.randn_like(out[idx])
        actions = out + noise * log_std.exp()
        log_prob = (-0.5 * noise.pow(2) - log_std - _LOG_SQRT_2PI).sum(dim=-1)
        return actions, values, log_prob
