"""Sampling from an SB3 ``ActorCriticPolicy`` without building a ``torch.distributions`` object.

``policy(obs)`` spends about half its time constructing the distribution; in ``sb3_adapter.collect_groups``
(where the baselines' policies act at every primitive step) ``sample`` draws from the same distributions and returns
the same (actions, values, log_probs) for categorical and diagonal-Gaussian policies, and falls back to
``policy(obs)`` for anything else (state-dependent exploration, squashed outputs, other action spaces, a policy
with a ``forward`` of its own such as the master's random picks). The selection wrapper's per-step forward of the
sub-policies goes further, to numpy (``numpy_forward``, below).

For SB3's default MLP layout (flattened vector observations, ``nn.Sequential`` of ``Linear`` and elementwise
activations) the layers are called as the functions their modules call (``F.linear``, ``th.tanh``, ...), without
``nn.Module.__call__``'s dispatch: the same operations on the same tensors, hence the same numbers bit for bit, in
about 30% less time for the small batches of one primitive step (90 against 130 us for 20 MovementBandits
observations, 70 against 105 us for 4 ant observations, measured here).
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_ACTIVATIONS = {th.nn.Tanh: th.tanh, th.nn.ReLU: th.relu, th.nn.Identity: lambda x: x}


def _direct(module: th.nn.Module) -> list | None:
    """``module`` (a ``Linear``, an activation, or an ``nn.Sequential`` of them) as a list of layers to call
    directly: a ``Linear`` itself, an activation as its function; None for anything else."""
    layers = list(module) if type(module) is th.nn.Sequential else [module]
    out = []
    for layer in layers:
        if type(layer) is th.nn.Linear:
            out.append(layer)
        elif type(layer) in _ACTIVATIONS:
            out.append(_ACTIVATIONS[type(layer)])
        else:
            return None
    return out


def _run(layers: list, x: th.Tensor) -> th.Tensor:
    for layer in layers:
        x = F.linear(x, layer.weight, layer.bias) if type(layer) is th.nn.Linear else layer(x)
    return x


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # policy -> its plan (or None), found once


def _plan(policy) -> tuple | None:
    """(pi layers, vf layers, action_net, value_net) to call directly, or None when ``policy`` is not SB3's default
    MLP layout on vector observations."""
    if policy in _PLANS:
        return _PLANS[policy]
    mlp = policy.mlp_extractor
    plan = None
    if type(policy.features_extractor) is FlattenExtractor and policy.share_features_extractor \
            and isinstance(policy.observation_space, spaces.Box) and hasattr(mlp, "policy_net") \
            and hasattr(mlp, "value_net"):
        parts = [_direct(m) for m in (mlp.policy_net, mlp.value_net, policy.action_net, policy.value_net)]
        plan = None if any(p is None for p in parts) else tuple(parts)
    _PLANS[policy] = plan
    return plan


def _fast(policy, own: str = "forward") -> str | None:
    """"categorical" or "gaussian" where ``policy`` is a plain SB3 ``ActorCriticPolicy`` of that distribution whose
    method ``own`` is SB3's (the master's ``forward``, with its random picks, is not); else None."""
    if not isinstance(policy, ActorCriticPolicy) or policy.use_sde or policy.squash_output \
            or getattr(type(policy), own) is not getattr(ActorCriticPolicy, own):
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
    plan = _plan(policy)
    if plan is not None and obs.dim() == 2:  # flattening a (n, d) batch is the batch itself
        pi, vf, action_net, value_net = plan
        obs = obs.float()  # SB3's preprocessing of a Box observation
        values = _run(value_net, _run(vf, obs))
        out = _run(action_net, _run(pi, obs))
    else:
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


# -- numpy: the selection wrapper's per-step forward ---------------------------------------------------------------
# A torch call costs microseconds of dispatch whatever its size; numpy's are a fraction of that. For the few rows of
# one primitive step (a task group's envs) the same forward in numpy takes about a third of ``sample``'s time (40
# against 114 us for 20 MovementBandits observations, measured here), the per-step cost that every process pays
# whatever its number of envs. The numbers are the same to float32 rounding (not bit for bit: another matrix
# library); the random draws still come from torch's generator (saved with checkpoints), the Gaussian noise as
# ``sample`` draws it, a categorical action by inverting the distribution function at one uniform number.

_NP_ACTIVATIONS = {th.nn.Tanh: lambda x: np.tanh(x, out=x), th.nn.ReLU: lambda x: np.maximum(x, 0, out=x)}


def _np_chain(module: th.nn.Module) -> list | None:
    """``module``'s layers as (Linear or numpy activation) or None when one has no numpy form."""
    layers = list(module) if type(module) is th.nn.Sequential else [module]
    if any(type(layer) is not th.nn.Linear and type(layer) not in _NP_ACTIVATIONS for layer in layers):
        return None
    return [layer if type(layer) is th.nn.Linear else _NP_ACTIVATIONS[type(layer)] for layer in layers]


def _block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + b.shape[0], a.shape[1] + b.shape[1]), dtype=np.float32)
    out[:a.shape[0], :a.shape[1]], out[a.shape[0]:, a.shape[1]:] = a, b
    return out


class _NumpyForward:
    """A policy's actor and critic as one chain of numpy layers: the first ``Linear`` of both side by side (they
    read the same observation), every later pair block-diagonal, so one product per layer serves both; the output's
    last column is the value. ``refresh`` copies the weights of now (tens of microseconds; parameters' version
    counters cannot tell that they changed: a fused Adam step leaves them as they were)."""

    def __init__(self, policy: ActorCriticPolicy, kind: str, pi: list, vf: list, action_net: list, value_net: list):
        self.policy, self.kind = policy, kind
        self.pairs: list[tuple] = []  # (pi layer, vf layer) or (activation, None)
        for a, b in zip(pi, vf, strict=True):
            if type(a) is th.nn.Linear and type(b) is th.nn.Linear:
                self.pairs.append((a, b))
            elif a is b:  # the same numpy activation on both halves
                self.pairs.append((a, None))
            else:
                raise ValueError("actor and critic differ in structure")
        self.pairs.append((action_net[0], value_net[0]))

    def refresh(self) -> None:
        self.ops: list = []
        split = False  # whether the actor's and critic's activations are apart yet
        for a, b in self.pairs:
            if b is None:
                self.ops.append(a)
                continue
            wa, wb = (layer.weight.detach().numpy().T.astype(np.float32) for layer in (a, b))
            w = _block(wa, wb) if split else np.ascontiguousarray(np.concatenate([wa, wb], axis=1))
            bias = np.concatenate([a.bias.detach().numpy(), b.bias.detach().numpy()]).astype(np.float32)
            self.ops.append((w, bias))
            split = True
        if self.kind == "gaussian":
            self.log_std = self.policy.log_std.detach().numpy().astype(np.float32)
            self.std = np.exp(self.log_std)

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(obs, dtype=np.float32)
        for op in self.ops:
            if type(op) is tuple:
                x = x @ op[0]
                x += op[1]
            else:
                op(x)
        out, values = x[:, :-1], x[:, -1].copy()
        n = len(x)
        if self.kind == "categorical":
            z = out - out.max(axis=1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            cdf = np.cumsum(np.exp(log_p.astype(np.float64)), axis=1)
            u = th.rand(n, dtype=th.float64).numpy()
            actions = np.minimum((cdf <= u[:, None]).sum(axis=1), out.shape[1] - 1)
            return actions, values, log_p[np.arange(n), actions]
        noise = th.randn(out.shape).numpy()  # what ``sample``'s randn_like draws
        actions = out + noise * self.std
        log_prob = (-0.5 * noise * noise - self.log_std - np.float32(_LOG_SQRT_2PI)).sum(axis=1)
        return actions, values, log_prob.astype(np.float32)


_NUMPY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # policy -> its _NumpyForward (or None)


def numpy_forward(policy) -> _NumpyForward | None:
    """``policy``'s numpy forward with its weights of now (called on an (n, d) observation array: (actions, values
    of shape (n,), log-probabilities of shape (n,)), numpy arrays), or None where only ``sample`` serves (another
    layout). Get it again after the weights change (the selection wrapper does at every macro step)."""
    if policy not in _NUMPY:
        _NUMPY[policy] = _numpy_forward(policy)
    fwd = _NUMPY[policy]
    if fwd is not None:
        fwd.refresh()
    return fwd


def _numpy_forward(policy) -> _NumpyForward | None:
    kind = _fast(policy)
    plan = None if kind is None else _plan(policy)
    fwd = None
    if plan is not None and len(plan[2]) == 1 and len(plan[3]) == 1:
        mlp = policy.mlp_extractor
        chains = [_np_chain(m) for m in (mlp.policy_net, mlp.value_net)]
        if None not in chains and len(chains[0]) == len(chains[1]):
            try:
                fwd = _NumpyForward(policy, kind, chains[0], chains[1], plan[2], plan[3])
            except ValueError:
                fwd = None
    return fwd
