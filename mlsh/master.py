"""The master policy: SB3's ``ActorCriticPolicy`` over K sub-policy indices, with the original's random picks.

With probability ``random_pick_prob`` the sampled index is replaced by a uniform one (REFERENCE.md 1.3). The
replacement happens inside the policy so that the stored action and its log-probability are the ones taken.

The log-probability it returns (PPO's "old" log-probability) is clipped at -20, as the original's. A committed
master gives a random pick a log-probability of -100 or less; once an update makes that action likelier, PPO's
ratio exp(new - old) overflows to inf, and with a negative advantage the loss and every weight become NaN (seen
with task groups, whose staggered first tasks have long warmups). Clipped, the ratio stays below exp(20).
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

MIN_LOG_PROB = -20.0  # the original's clip of the old log-probability


class MasterPolicy(ActorCriticPolicy):
    def __init__(self, *args, random_pick_prob: float = 0.1, **kwargs):
        if not 0.0 <= random_pick_prob <= 1.0:
            raise ValueError(f"random_pick_prob must be in [0, 1], got {random_pick_prob}")
        self.random_pick_prob = float(random_pick_prob)
        super().__init__(*args, **kwargs)

    def _get_constructor_parameters(self) -> dict:
        return {**super()._get_constructor_parameters(), "random_pick_prob": self.random_pick_prob}

    def forward(self, obs: th.Tensor, deterministic: bool = False):
        features = self.extract_features(obs)
        latent_pi, latent_vf = self.mlp_extractor(features)
        values = self.value_net(latent_vf)
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        if self.random_pick_prob > 0 and not deterministic:
            pick = th.rand(actions.shape[0], device=actions.device) < self.random_pick_prob
            uniform = th.randint(0, int(self.action_space.n), actions.shape, device=actions.device)
            actions = th.where(pick, uniform, actions)
        return actions, values, distribution.log_prob(actions).clamp(min=MIN_LOG_PROB)
