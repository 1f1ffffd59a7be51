"""The sub-policy learner: K SB3 ``PPO`` models trained by their own ``PPO.train()`` on their share of the steps.

Advantages come from GAE over the whole primitive trajectory, each step using the value of the sub-policy that
acted (so a step just before a switch bootstraps from the next sub-policy's value, as in the original; REFERENCE.md
1.5); then the steps are split by the sub-policy that was active and each model trains on its share.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3 import PPO

from mlsh import sb3_adapter
from mlsh.selection import Trajectory

GROUP_WEIGHTINGS = ("groups", "samples")  # how the joint groups weigh in a sub-policy update (VariableRolloutBuffer)


def full_trajectory_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    last_dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE over time-major (T, n_envs) arrays; returns (advantages, returns). Same convention as SB3's buffer."""
    T = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float32)
    last_gae = np.zeros(rewards.shape[1:], dtype=np.float32)
    for t in reversed(range(T)):
        if t == T - 1:
            next_non_terminal = 1.0 - np.asarray(last_dones, dtype=np.float32)
            next_values = last_values
        else:
            next_non_terminal = 1.0 - episode_starts[t + 1].astype(np.float32)
            next_values = values[t + 1]
        delta = rewards[t] + gamma * next_values * next_non_terminal - values[t]
        last_gae = delta + gamma * gae_lambda * next_non_terminal * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def split_by_subpolicy(choices: np.ndarray, n_subpolicies: int) -> list[np.ndarray]:
    """Flat indices (into arrays reshaped to (T * n_envs,)) of the steps each sub-policy took."""
    flat = choices.reshape(-1)
    return [np.flatnonzero(flat == k) for k in range(n_subpolicies)]


class SubPolicyLearner:
    """Trains each of K PPO models on the primitive steps it took in a trajectory."""

    def __init__(self, models: list[PPO], gamma: float, gae_lambda: float, advantage_norm: str = "share",
                 group_weighting: str = "groups", minibatches: int | None = None):
        if advantage_norm not in ("share", "minibatch"):
            raise ValueError(f"advantage_norm must be 'share' or 'minibatch', got {advantage_norm!r}")
        if group_weighting not in GROUP_WEIGHTINGS:
            raise ValueError(f"group_weighting must be one of {list(GROUP_WEIGHTINGS)}, got {group_weighting!r}")
        self.models = models
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.advantage_norm = advantage_norm
        for model in models:
            model.rollout_buffer.group_weighting = group_weighting
            model.rollout_buffer.n_minibatches = minibatches
            # "share": normalise over each sub-policy's whole share, as the original; "minibatch": SB3's default.
            model.normalize_advantage = advantage_norm == "minibatch"

    @property
    def policies(self):
        return [m.policy for m in self.models]

    def batches(self, traj: Trajectory, groups: list[np.ndarray] | None = None) -> list[dict | None]:
        """Each sub-policy's training batch (None where it took no step in any of ``groups``).

        ``groups`` are the env indices of the task groups whose data trains the sub-policies (default: one group of
        every env). Advantages are normalised over each group's share of each sub-policy (the original normalised
        per worker and sub-policy); the batch lists the groups' steps group by group, with ``group_sizes``.
        """
        advantages, returns = full_trajectory_gae(traj.rewards, traj.values, traj.episode_starts,
                                                  traj.last_values, traj.last_dones, self.gamma, self.gae_lambda)

        def flat(a: np.ndarray) -> np.ndarray:
            return a.reshape(-1, *a.shape[2:])

        obs, actions, values, log_probs = map(flat, (traj.observations, traj.actions, traj.values, traj.log_probs))
        advantages, returns = flat(advantages), flat(returns)
        n_steps, n_envs = traj.choices.shape
        if groups is None:
            in_group = [None]
        else:
            env_flat = np.tile(np.arange(n_envs), n_steps)
            in_group = [np.isin(env_flat, g) for g in groups]
        out: list[dict | None] = []
        for idx_k in split_by_subpolicy(traj.choices, len(self.models)):
            parts, adv_parts = [], []
            for mask in in_group:
                idx = idx_k if mask is None else idx_k[mask[idx_k]]
                if len(idx) == 0:
                    continue  # this group does not contribute to sub-policy k
                adv = advantages[idx]
                if self.advantage_norm == "share" and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                parts.append(idx)
                adv_parts.append(adv)
            if not parts:
                out.append(None)
                continue
            idx = np.concatenate(parts)
            out.append(dict(observations=obs[idx], actions=actions[idx], values=values[idx],
                            log_probs=log_probs[idx], advantages=np.concatenate(adv_parts), returns=returns[idx],
                            group_sizes=[len(p) for p in parts]))
        return out

    def train(self, traj: Trajectory, groups: list[np.ndarray] | None = None) -> dict[str, float]:
        """One update of every sub-policy that acted in ``groups``: the mean of the groups' gradients per step."""
        metrics: dict[str, float] = {}
        for k, (model, batch) in enumerate(zip(self.models, self.batches(traj, groups), strict=True)):
            metrics[f"sub{k}/n_steps"] = 0 if batch is None else len(batch["observations"])
            metrics[f"sub{k}/groups"] = 0 if batch is None else len(batch["group_sizes"])
            if batch is None:
                continue
            for key, value in sb3_adapter.train_on_batch(model, batch).items():
                metrics[f"sub{k}/{key.removeprefix('train/')}"] = value
        return metrics
