"""SB3's ``PPO.train()``, the same update with less work per minibatch.

A minibatch step of ``PPO.train()`` for the small MLPs of MLSH costs far more than its arithmetic: six numpy
arrays copied into new tensors, a ``torch.distributions`` object built, four ``.item()`` calls and a numpy
conversion for the logs, and the dispatch around ``zero_grad`` and ``clip_grad_norm_`` (a torch call costs about
8-10 us here whatever its size). ``train`` takes the same steps on the same minibatches:

- the rollout buffer's arrays become tensors once per update, and each minibatch indexes them (the indices are
  the buffer's own ``get``'s, drawn from the same generator in the same order, for SB3's buffers and for
  ``VariableRolloutBuffer``'s task groups alike);
- for categorical and diagonal-Gaussian policies in SB3's default MLP layout, log-probabilities and entropies
  come straight from the network's outputs (``log_softmax``; the Gaussian's closed form), through the layers
  called as functions (``mlsh.inference``); any other policy goes through its own ``evaluate_actions``;
- the logged means are kept as tensors and read once at the end;
- the gradients are cleared by setting them to None (``zero_grad``'s default) and clipped by
  ``clip_grad_norm_``'s own operations, called directly; with ``ent_coef=0`` the entropy gets no gradient.

Loss, gradient and optimizer step are SB3's: ``loss.backward()`` and ``optimizer.step()``, so every hook on them
(the cross-process gradient mean of ``mlsh.distributed``, the finiteness check of ``mlsh.faults``) runs as
before. The update is SB3's to float rounding (``log_softmax`` against ``logits - logsumexp``), and the records
are the same keys and values (to float rounding). ``target_kl`` stops the epochs as SB3 does: at the first
minibatch whose approximate KL exceeds 1.5 ``target_kl``, before its step (one ``.item()`` per minibatch).
``clip_range_vf`` falls back to ``PPO.train()`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.utils import explained_variance

from mlsh.inference import _LOG_SQRT_2PI, _fast, _plan, _run


def supported(model: PPO) -> bool:
    """Whether ``train`` runs its own loop for ``model`` (else it calls ``model.train()``)."""
    return model.clip_range_vf is None and type(model).train is PPO.train \
        and isinstance(model.rollout_buffer.observations, np.ndarray)  # not a DictRolloutBuffer


def _evaluator(policy, entropy_grad: bool = True):
    """A function (obs, actions) -> (values (n,), log_prob (n,), entropy (n,)) equal to ``evaluate_actions``;
    without ``entropy_grad`` the entropy is a number only (a loss with ``ent_coef=0`` has no gradient from it)."""
    kind = _fast(policy, own="evaluate_actions")
    plan = None if kind is None else _plan(policy)
    if plan is None:
        def evaluate(obs, actions):
            values, log_prob, entropy = policy.evaluate_actions(obs, actions)
            return values.flatten(), log_prob, entropy
        return evaluate
    pi, vf, action_net, value_net = plan

    def outputs(obs):
        obs = obs.float().flatten(1)  # SB3's preprocessing of a Box observation and its FlattenExtractor
        return _run(value_net, _run(vf, obs)).flatten(), _run(action_net, _run(pi, obs))

    if kind == "categorical":
        def evaluate(obs, actions):
            values, logits = outputs(obs)
            log_p = th.log_softmax(logits, dim=-1)
            with th.set_grad_enabled(entropy_grad):
                entropy = -(log_p.exp() * log_p).sum(-1)
            return values, log_p.gather(1, actions[:, None]).squeeze(1), entropy
        return evaluate

    def evaluate(obs, actions):
        values, mean = outputs(obs)
        log_std = policy.log_std.expand_as(mean)
        z = (actions - mean) * th.exp(-log_std)
        log_prob = (-0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
        with th.set_grad_enabled(entropy_grad):
            entropy = (0.5 + _LOG_SQRT_2PI + log_std).sum(-1)
        return values, log_prob, entropy
    return evaluate


def _indices(buffer, batch_size: int | None) -> Iterator[np.ndarray]:
    """The index arrays of the minibatches that ``buffer.get(batch_size)`` yields, drawn as it draws them."""
    buffer._get_samples = lambda indices, env=None: indices  # an instance attribute over the class's method
    try:
        yield from buffer.get(batch_size)
    finally:
        del buffer._get_samples


def _clip_grad_norm(params: list[th.Tensor], max_norm: float) -> None:
    """``th.nn.utils.clip_grad_norm_`` for CPU tensors of one dtype: its operations, without its dispatch."""
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        total = th.linalg.vector_norm(th.stack(th._foreach_norm(grads, 2.0)), 2.0)
        th._foreach_mul_(grads, th.clamp(max_norm / (total + 1e-6), max=1.0))


def train(model: PPO) -> None:
    """``model.train()``: its epochs of minibatch updates on its rollout buffer, with SB3's records."""
    if not supported(model):
        model.train()
        return
    policy, buffer = model.policy, model.rollout_buffer
    policy.set_training_mode(True)
    model._update_learning_rate(policy.optimizer)
    clip_range = model.clip_range(model._current_progress_remaining)
    evaluate = _evaluator(policy, entropy_grad=model.ent_coef != 0)
    discrete = isinstance(model.action_space, spaces.Discrete)
    params = list(policy.parameters())
    data = None
    losses: list[th.Tensor] = []  # per minibatch: policy, value and entropy loss
    log_ratios: list[th.Tensor] = []  # per minibatch: log new/old probability of each sample
    max_kl = None if model.target_kl is None else 1.5 * model.target_kl
    last_epoch, stop = 0, False  # where the last epoch's minibatches start in log_ratios; whether KL stopped it
    for _ in range(model.n_epochs):
        last_epoch = len(log_ratios)
        with closing(_indices(buffer, model.batch_size)) as minibatches:
            for idx in minibatches:
                if data is None:  # the buffer's arrays, flattened by its first get()
                    n = len(buffer.observations)
                    data = [th.tensor(buffer.observations), th.tensor(buffer.actions.reshape(n, -1))]
                    data[1] = data[1].long().flatten() if discrete else data[1]
                    data += [th.tensor(getattr(buffer, name).reshape(n))
                             for name in ("log_probs", "advantages", "returns")]
                at = th.from_numpy(idx)
                obs, actions, old_log_prob, advantages, returns = (d[at] for d in data)
                values, log_prob, entropy = evaluate(obs, actions)
                if model.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                log_ratio = log_prob - old_log_prob
                ratio = th.exp(log_ratio)
                clipped = th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(advantages * ratio, advantages * clipped).mean()
                value_loss = F.mse_loss(returns, values)
                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                if model.ent_coef:
                    loss = policy_loss + model.ent_coef * entropy_loss + model.vf_coef * value_loss
                else:  # SB3's loss adds 0 * entropy_loss: the same loss and gradients, to the bit
                    loss = policy_loss + model.vf_coef * value_loss
                with th.no_grad():  # for the records, read once at the end
                    losses.append(th.stack([policy_loss, value_loss, entropy_loss]))
                    log_ratios.append(log_ratio.detach())
                    # SB3's early stop: this minibatch's approximate KL, before its step
                    stop = max_kl is not None and float(th.mean((ratio - 1) - log_ratio)) > max_kl
                if stop:
                    break
                for p in params:  # the optimizer's zero_grad(), without its profiler scope
                    p.grad = None
                loss.backward()
                _clip_grad_norm(params, model.max_grad_norm)
                policy.optimizer.step()
        model._n_updates += 1
        if stop:
            break
    # SB3 records the mean of the minibatches' values (its approx_kl over the last epoch only)
    pg, value, entropy_l = th.stack(losses).numpy().astype(np.float64).mean(axis=0)
    sizes = np.array([len(r) for r in log_ratios])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    log_ratio = th.cat(log_ratios).numpy()
    ratio = np.exp(log_ratio)
    clip_fractions = np.add.reduceat((np.abs(ratio - 1) > clip_range).astype(np.float32), starts) / sizes
    approx_kl = np.add.reduceat((ratio - 1) - log_ratio, starts) / sizes
    model.logger.record("train/entropy_loss", float(entropy_l))
    model.logger.record("train/policy_gradient_loss", float(pg))
    model.logger.record("train/value_loss", float(value))
    model.logger.record("train/approx_kl", float(np.mean(approx_kl[last_epoch:])))
    model.logger.record("train/clip_fraction", float(np.mean(clip_fractions)))
    model.logger.record("train/loss", loss.item())
    model.logger.record("train/explained_variance",
                        explained_variance(buffer.values.flatten(), buffer.returns.flatten()))
    if hasattr(policy, "log_std"):
        model.logger.record("train/std", th.exp(policy.log_std).mean().item())
    model.logger.record("train/n_updates", model._n_updates, exclude="tensorboard")
    model.logger.record("train/clip_range", clip_range)
