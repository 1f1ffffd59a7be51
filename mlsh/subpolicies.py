"""The sub-policy learner: K SB3 ``PPO`` models trained by their own ``PPO.train()`` on their share of the steps.

Advantages come from GAE over the whole primitive trajectory, each step using the value of the sub-policy that
acted. At the end of a macro step, ``switch_bootstrap`` decides: ``next`` (the original, REFERENCE.md 1.5 and its
issue #7) bootstraps from the next sub-policy's value and lets the GAE trace run on into the next sub-policy's
steps; ``own`` bootstraps from the value, at the same observation, of the sub-policy that acted, and stops the trace
there, so that each sub-policy's advantages come from its own rewards and its own value alone. Then the steps are
split by the sub-policy that was active and each model trains on its share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3 import PPO

from mlsh import distributed, sb3_adapter
from mlsh.selection import Trajectory

GROUP_WEIGHTINGS = ("groups", "samples")  # how the joint groups weigh in a sub-policy update (VariableRolloutBuffer)
SWITCH_BOOTSTRAPS = ("next", "own")  # the value a macro step's last primitive step bootstraps from (module docstring)
UPDATES = ("auto", "gather", "allreduce")  # how several processes update a sub-policy (SubPolicyLearner.train)


def full_trajectory_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    last_dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
    end_values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE over time-major (T, n_envs) arrays; returns (advantages, returns). Same convention as SB3's buffer.

    ``end_values`` (T, n_envs), finite at the last step of each segment and NaN elsewhere: there the step bootstraps
    from that value instead of the next step's, and the trace stops (``switch_bootstrap=own``)."""
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
        trace = next_non_terminal
        if end_values is not None:
            end = ~np.isnan(end_values[t])
            next_values = np.where(end, end_values[t], next_values)
            trace = np.where(end, 0.0, next_non_terminal)
        delta = rewards[t] + gamma * next_values * next_non_terminal - values[t]
        last_gae = delta + gamma * gae_lambda * trace * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def split_by_subpolicy(choices: np.ndarray, n_subpolicies: int) -> list[np.ndarray]:
    """Flat indices (into arrays reshaped to (T * n_envs,)) of the steps each sub-policy took."""
    flat = choices.reshape(-1)
    return [np.flatnonzero(flat == k) for k in range(n_subpolicies)]


class SubPolicyLearner:
    """Trains each of K PPO models on the primitive steps it took in a trajectory."""

    def __init__(self, models: list[PPO], gamma: float, gae_lambda: float, advantage_norm: str = "share",
                 group_weighting: str = "groups", minibatches: int | None = None, seed: int = 0,
                 n_groups: int = 1, switch_bootstrap: str = "next", min_share: float = 0.0,
                 update: str = "auto"):
        if advantage_norm not in ("share", "minibatch"):
            raise ValueError(f"advantage_norm must be 'share' or 'minibatch', got {advantage_norm!r}")
        if group_weighting not in GROUP_WEIGHTINGS:
            raise ValueError(f"group_weighting must be one of {list(GROUP_WEIGHTINGS)}, got {group_weighting!r}")
        if switch_bootstrap not in SWITCH_BOOTSTRAPS:
            raise ValueError(f"switch_bootstrap must be one of {list(SWITCH_BOOTSTRAPS)}, got {switch_bootstrap!r}")
        if not 0.0 <= min_share <= 1.0:
            raise ValueError(f"min_share must be in [0, 1], got {min_share!r}")
        if update not in UPDATES:
            raise ValueError(f"update must be one of {list(UPDATES)}, got {update!r}")
        self.world = distributed.world()
        # auto: gather while every process can train a sub-policy of its own, allreduce beyond
        self.update = update if update != "auto" else "gather" if self.world.size <= len(models) else "allreduce"
        self.switch_bootstrap, self.min_share = switch_bootstrap, float(min_share)
        self.models = models
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.advantage_norm = advantage_norm
        # With several task groups (in this process or over several), each group's minibatch order comes from its
        # own generator, seeded by (seed, sub-policy, update, group): the same however the groups are spread.
        self.seed, self.per_group_order = int(seed), n_groups > 1 and group_weighting == "groups"
        self.means = [distributed.GradientMean(m.policy, f"sub-policy {k}") if self.world.active else None
                      for k, m in enumerate(models)]
        for model, mean in zip(models, self.means, strict=True):
            if mean is not None:
                model.policy.optimizer.register_step_pre_hook(mean.pre_step)
        for model in models:
            model.rollout_buffer.group_weighting = group_weighting
            model.rollout_buffer.n_minibatches = minibatches
            # "share": normalise over each sub-policy's whole share, as the original; "minibatch": SB3's default.
            model.normalize_advantage = advantage_norm == "minibatch"

    @property
    def policies(self):
        return [m.policy for m in self.models]

    def batches(self, traj: Trajectory, groups: list[np.ndarray] | None = None,
                group_ids: list[int] | None = None) -> list[dict | None]:
        """Each sub-policy's training batch (None where it took no step in any of ``groups``).

        ``groups`` are the env indices of the task groups whose data trains the sub-policies (default: one group of
        every env); ``group_ids`` their numbers in the run (default 0, 1, ...). Advantages are normalised over each
        group's share of each sub-policy (the original normalised per worker and sub-policy); the batch lists the
        groups' steps group by group, with ``group_sizes`` and ``group_ids``.

        ``min_share``: a sub-policy trains on a group's steps only if it took at least this share of them, or more
        of them than any other sub-policy. 0 (the original): every sub-policy trains on the steps it took. Above
        the share of the master's random picks, a sub-policy that another task needs is not retrained by the
        random picks of tasks it does not serve, while a contender of an undecided master still learns; 1: only
        the most picked sub-policy of each group trains.
        """
        if self.switch_bootstrap == "own" and traj.end_values is None:
            raise ValueError("switch_bootstrap='own' needs the trajectory's end_values: build the selection wrapper "
                             "with segment_values=True")
        end_values = traj.end_values if self.switch_bootstrap == "own" else None
        advantages, returns = full_trajectory_gae(traj.rewards, traj.values, traj.episode_starts, traj.last_values,
                                                  traj.last_dones, self.gamma, self.gae_lambda, end_values)

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
        ids = list(range(len(in_group))) if group_ids is None else [int(g) for g in group_ids]
        if len(ids) != len(in_group):
            raise ValueError(f"{len(ids)} group_ids for {len(in_group)} groups")
        n_subs = len(self.models)
        choices = traj.choices.reshape(-1)
        counts = [np.bincount(choices if mask is None else choices[mask], minlength=n_subs) for mask in in_group]
        trains = [(c >= self.min_share * c.sum()) | (c == c.max()) for c in counts]  # [group][k]
        out: list[dict | None] = []
        for k, idx_k in enumerate(split_by_subpolicy(traj.choices, n_subs)):
            parts, adv_parts, part_ids = [], [], []
            for mask, gid, trained in zip(in_group, ids, trains, strict=True):
                idx = idx_k if mask is None else idx_k[mask[idx_k]]
                if len(idx) == 0 or not trained[k]:
                    continue  # this group does not contribute to sub-policy k
                adv = advantages[idx]
                if self.advantage_norm == "share" and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                parts.append(idx)
                adv_parts.append(adv)
                part_ids.append(gid)
            if not parts:
                out.append(None)
                continue
            idx = np.concatenate(parts)
            out.append(dict(observations=obs[idx], actions=actions[idx], values=values[idx],
                            log_probs=log_probs[idx], advantages=np.concatenate(adv_parts), returns=returns[idx],
                            group_sizes=[len(p) for p in parts], group_ids=part_ids))
        return out

    def train(self, traj: Trajectory, groups: list[np.ndarray] | None = None,
              group_ids: list[int] | None = None) -> dict[str, float]:
        """One update of every sub-policy that acted in ``groups``: the mean of the groups' gradients per step.

        In a distributed run, over the joint groups of every process: each process calls this every time any
        process has a joint group (``groups`` may be empty). ``update`` says how (``"auto"``: ``"gather"`` with at
        most K processes, ``"allreduce"`` with more):

        - ``"gather"``: each sub-policy with data anywhere is trained by one process (the j-th such sub-policy by
          process j mod P), on every process's data for it, sent there; then its weights, optimizer state and
          update counter go to the others. The processes train different sub-policies at the same time, and each
          sub-policy's update is the one a single process with every group computes, bit for bit.
        - ``"allreduce"``: a sub-policy with data in several processes trains on all of them, its gradients
          averaged over the processes at every minibatch (a process without data takes the same steps with weight
          0, as the original's MPI-Adam); one with data in a single process is trained there alone, as one
          process holding every group would, and then sent to the others.
        """
        if self.world.active and self.update == "gather":
            plan = self.gather_data(traj, groups, group_ids)
            metrics = self.train_gathered(plan)
            self.share_gathered(plan)
            return metrics
        batches = self.batches(traj, groups, group_ids)
        counts, longest = _counts(batches)
        everyone = distributed.gather((counts, longest)) if self.world.active else [(counts, longest)]
        metrics = _size_metrics(batches, counts)
        for k, (model, batch) in enumerate(zip(self.models, batches, strict=True)):
            holders = [r for r, (c, _) in enumerate(everyone) if c[k] > 0]
            if not holders:
                continue
            alone = len(holders) == 1
            if alone and holders[0] != self.world.rank:
                distributed.receive_training_state(model, holders[0])
                continue
            weight = counts[k]
            if batch is None:  # other processes have data for it: take the same steps, contributing nothing
                batch = self._stand_in(traj)
            batch["longest"] = int(max(lg[k] for _, lg in everyone))
            mean = None if alone else self.means[k]
            if mean is not None:
                mean.weight = float(weight)
            try:
                records = self._train_one(k, batch, count=weight > 0)
            finally:
                if mean is not None:
                    mean.weight = None
            if alone and self.world.active:
                distributed.send_training_state(model)
            if weight > 0:
                metrics.update(records)
        return metrics

    def _train_one(self, k: int, batch: dict, count: bool) -> dict[str, float]:
        """Sub-policy ``k``'s update on ``batch`` (with ``group_ids``; ``longest``: its groups' stream length)."""
        model = self.models[k]
        ids = batch.pop("group_ids")
        longest = batch.pop("longest", None)
        if self.per_group_order:
            batch["group_seeds"] = [[self.seed, k, sb3_adapter.n_updates(model), g] for g in ids]
            batch["longest"] = longest
        records = sb3_adapter.train_on_batch(model, batch, count=count)
        return {f"sub{k}/{key.removeprefix('train/')}": v for key, v in records.items()}

    def gather_data(self, traj: Trajectory, groups: list[np.ndarray] | None = None,
                    group_ids: list[int] | None = None, info: Any = None) -> GatherPlan:
        """``update="gather"``, first part: which process trains which sub-policy, and each sub-policy's data of
        every process sent to its trainer. ``info``: anything this process tells the others (every process's
        comes back in the plan, in rank order), in the same message as the sizes of its data.

        Then ``train_gathered`` (no collective: the processes train side by side) and ``share_gathered``; every
        process calls the three in this order (their collectives meet), doing what it likes in between."""
        rank, size = self.world.rank, self.world.size
        batches = self.batches(traj, groups, group_ids)
        counts, longest = _counts(batches)
        everyone = distributed.gather((counts, longest, info))
        held = [k for k in range(len(self.models)) if any(c[k] > 0 for c, _, _ in everyone)]
        trainer = {k: j % size for j, k in enumerate(held)}
        mine: dict[int, dict] = {}
        for k in held:
            holders = [r for r, (c, _, _) in enumerate(everyone) if c[k] > 0]
            if holders == [trainer[k]]:  # the trainer holds all the data: nothing to send
                parts = [batches[k]] if rank == trainer[k] else None
            else:
                parts = distributed.gather_to(batches[k], trainer[k])
            if rank == trainer[k]:
                mine[k] = _concatenate([p for p in parts if p is not None])  # in rank order: the groups' order
            if batches[k] is not None:  # each process counts the steps it collected, as with "allreduce"
                self.models[k].num_timesteps += len(batches[k]["observations"])
        steps = {k: self.optimizer_steps(k, max(lg[k] for _, lg, _ in everyone)) for k in held}
        return GatherPlan(held, trainer, mine, steps, [i for _, _, i in everyone], _size_metrics(batches, counts))

    def optimizer_steps(self, k: int, longest: int) -> int:
        """The optimizer steps of sub-policy ``k``'s update on groups whose largest share is ``longest`` steps
        (``group_weighting="groups"``, as every distributed run)."""
        model = self.models[k]
        per_epoch = model.rollout_buffer.n_minibatches or -(-longest // model.batch_size)
        return model.n_epochs * per_epoch

    def train_gathered(self, plan: GatherPlan) -> dict[str, float]:
        """``update="gather"``, second part: this process trains the sub-policies it was given (no collective);
        ``plan.seconds_per_step`` gets how long one optimizer step took (None when it trained none)."""
        metrics = dict(plan.metrics)
        start, steps = time.perf_counter(), 0
        for k, batch in plan.mine.items():
            metrics.update(self._train_one(k, batch, count=False))
            steps += plan.steps[k]
        plan.seconds_per_step = (time.perf_counter() - start) / steps if steps else None
        return metrics

    def share_gathered(self, plan: GatherPlan) -> None:
        """``update="gather"``, last part: every trained sub-policy's state from its trainer to the others."""
        for k in plan.held:
            if self.world.rank == plan.trainer[k]:
                distributed.send_training_state(self.models[k])
            else:
                distributed.receive_training_state(self.models[k], plan.trainer[k])

    @staticmethod
    def _stand_in(traj: Trajectory) -> dict:
        """A one-step batch (the trajectory's first step, any sub-policy's) whose gradient counts with weight 0."""
        one = {name: getattr(traj, name)[:1, 0] for name in ("observations", "actions", "values", "log_probs")}
        return dict(**one, advantages=np.zeros(1, np.float32), returns=np.asarray(one["values"], np.float32),
                    group_sizes=[1], group_ids=[0])  # its one index needs no generator of its own


@dataclass
class GatherPlan:
    """A ``gather`` update under way (``SubPolicyLearner.gather_data``): the sub-policies with data somewhere
    (``held``), the process that trains each (``trainer``), the batches this process trains (``mine``), each
    update's optimizer steps, what every process said (``infos``) and the sizes to report."""

    held: list[int]
    trainer: dict[int, int]
    mine: dict[int, dict]
    steps: dict[int, int]
    infos: list[Any]
    metrics: dict[str, float]
    seconds_per_step: float | None = None


def _counts(batches: list[dict | None]) -> tuple[list[int], list[int]]:
    """Per sub-policy: how many task groups' data ``batches`` hold, and the largest group's number of steps."""
    return ([0 if b is None else len(b["group_sizes"]) for b in batches],
            [0 if b is None else max(b["group_sizes"]) for b in batches])


def _size_metrics(batches: list[dict | None], counts: list[int]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for k, batch in enumerate(batches):
        metrics[f"sub{k}/n_steps"] = 0 if batch is None else len(batch["observations"])
        metrics[f"sub{k}/groups"] = counts[k]
    return metrics


def _concatenate(parts: list[dict]) -> dict:
    """One batch of several processes' batches of a sub-policy, their groups in order."""
    out = {key: np.concatenate([p[key] for p in parts]) for key in
           ("observations", "actions", "values", "log_probs", "advantages", "returns")}
    out["group_sizes"] = [n for p in parts for n in p["group_sizes"]]
    out["group_ids"] = [g for p in parts for g in p["group_ids"]]
    return out
