"""Option-critic (Bacon, Harb and Precup, AAAI 2017): the paper's other hierarchy, as a learner of this framework.

K options, each an intra-option policy pi_w(a | s) (a softmax) and a termination function beta_w(s) (a sigmoid);
the policy over options is epsilon-greedy over the option values Q(s, w). At every primitive step of every env,
with the option w that is running, the action a, the reward r and the next state s':

- the target g = r + gamma (1 - terminated) [(1 - beta_w(s')) Q'(s', w) + beta_w(s') max_v Q'(s', v)], with Q' the
  target network (copied from Q every ``target_every`` critic updates);
- the intra-option policy gradient: -log pi_w(a | s) (g - Q(s, w)) - ``entropy_reg`` H(pi_w(. | s));
- the termination gradient with its margin xi (``termination_reg``): beta_w(s') (Q(s', w) - max_v Q(s', v) + xi),
  except after a terminal state;
- the critic learns from experience replay: every ``update_every`` steps a minibatch of ``batch_size`` transitions
  of the group's replay (``replay_size``), 0.5 (Q(s, w) - g)^2 with g as above;
- after the step, the option ends with probability beta_w(s') (or with the episode) and the next is chosen.

How it fits MLSH's meta-learning protocol: the intra-option policies are what every task shares (the
sub-policies' role); the critic, its target, its replay and the termination functions belong to the task (the
master's role) and start afresh with every task of a group, since where to switch and which option to run depend on
the goal, which the observations do not show. Warmup iterations train the critic and the terminations with the
intra-option policies frozen; joint iterations train all three. On held-out tasks (``mlsh.evaluate``) the
intra-option policies are kept and frozen, and a fresh critic and fresh terminations learn the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from omegaconf import DictConfig
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from mlsh import distributed, faults
from mlsh.inference import to_tensor
from mlsh.learners import _Groups, _joint_flags, load_obs_stats, save_obs_stats

OPTIONS_FILE = "options.pt"
OPTIMIZERS = {"rmsprop": th.optim.RMSprop, "adam": th.optim.Adam, "sgd": th.optim.SGD}


def optimizer(name: str, params, lr: float) -> th.optim.Optimizer:
    """SGD (the default, as the option-critic paper's tabular agent), RMSProp (its deep agent's) or Adam. On one-hot
    inputs Adam's momentum keeps moving the weights of cells that are not visited, which SGD does not."""
    return OPTIMIZERS[name](params, lr=lr)


def mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    """tanh MLP. Without hidden layers, a linear map without bias, initialised at zero: on FourRooms' one-hot
    cells, a table (a bias would be one entry shared by every cell, and with the table's learning rates it learned
    a global action preference that served some rooms and trapped the agent in others)."""
    if not hidden:
        layer = nn.Linear(n_in, n_out, bias=False)
        nn.init.zeros_(layer.weight)
        return nn.Sequential(layer)
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.Tanh()]
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def targets(rewards: th.Tensor, terminated: th.Tensor, beta_next: th.Tensor, q_next_target: th.Tensor,
            options: th.Tensor, gamma: float) -> th.Tensor:
    """g = r + gamma (1 - terminated) [(1 - beta_w(s')) Q'(s', w) + beta_w(s') max_v Q'(s', v)] (no gradient)."""
    q_w = q_next_target.gather(1, options[:, None]).squeeze(1)
    return rewards + gamma * (1 - terminated) * ((1 - beta_next) * q_w + beta_next * q_next_target.max(1).values)


def policy_loss(logits: th.Tensor, actions: th.Tensor, advantage: th.Tensor, entropy_reg: float,
                weight: th.Tensor | None = None) -> tuple[th.Tensor, th.Tensor]:
    """The intra-option policy gradient's loss, -log pi_w(a | s) (g - Q(s, w)) - entropy_reg H(pi_w(. | s)), as a
    mean over the batch (weighted by ``weight``: 0 for envs whose group is in warmup), and the mean entropy."""
    log_p = th.log_softmax(logits, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    chosen = log_p.gather(1, actions[:, None]).squeeze(1)
    per_sample = -chosen * advantage.detach() - entropy_reg * entropy
    if weight is None:
        return per_sample.mean(), entropy.mean().detach()
    return (per_sample * weight).sum() / weight.sum().clamp(min=1.0), entropy.mean().detach()


def termination_loss(beta_next: th.Tensor, q_next: th.Tensor, options: th.Tensor, terminated: th.Tensor,
                     margin: float) -> th.Tensor:
    """beta_w(s') (Q(s', w) - max_v Q(s', v) + margin), not after terminal states: its gradient lowers the
    termination probability where the running option is within ``margin`` of the best and raises it elsewhere."""
    q_next = q_next.detach()
    advantage = q_next.gather(1, options[:, None]).squeeze(1) - q_next.max(1).values
    return (beta_next * (advantage + margin) * (1 - terminated)).mean()


class Options(nn.Module):
    """The intra-option policies of the K options: one network, K x n_actions logits; shared by every task."""

    def __init__(self, n_obs: int, n_actions: int, k: int, hidden: Sequence[int], lr: float, opt: str):
        super().__init__()
        self.k, self.n_actions = k, n_actions
        self.net = mlp(n_obs, hidden, k * n_actions)
        self.optimizer = optimizer(opt, self.parameters(), lr)
        faults.watch_optimizer(self.optimizer, "the intra-option policies")

    def logits(self, obs: th.Tensor, options: th.Tensor) -> th.Tensor:
        out = self.net(obs).view(len(obs), self.k, self.n_actions)
        return out[th.arange(len(obs)), options]


class TaskPart(nn.Module):
    """One task group's critic Q(s, .) with its target network and replay, and its termination functions."""

    def __init__(self, n_obs: int, k: int, c: DictConfig, group: int):
        super().__init__()
        self.critic = mlp(n_obs, c.critic_net_arch, k)
        self.target = mlp(n_obs, c.critic_net_arch, k)
        self.target.load_state_dict(self.critic.state_dict())
        self.target.requires_grad_(False)
        self.terminations = mlp(n_obs, c.termination_net_arch, k)
        self.critic_optimizer = optimizer(c.optimizer, self.critic.parameters(), c.critic_lr)
        self.termination_optimizer = optimizer(c.optimizer, self.terminations.parameters(), c.termination_lr)
        for opt, what in ((self.critic_optimizer, "critic"), (self.termination_optimizer, "terminations")):
            faults.watch_optimizer(opt, f"the option-critic {what} of group {group}")
        size = int(c.replay_size)
        self.replay = {"obs": np.zeros((size, n_obs), np.float32), "next_obs": np.zeros((size, n_obs), np.float32),
                       "option": np.zeros(size, np.int64), "reward": np.zeros(size, np.float32),
                       "terminated": np.zeros(size, np.float32)}
        self.stored = self.pos = 0
        self.steps = self.critic_updates = 0  # primitive steps of this task (per env), critic updates

    def beta(self, obs: th.Tensor) -> th.Tensor:
        return th.sigmoid(self.terminations(obs))

    def add(self, obs: np.ndarray, next_obs: np.ndarray, options: np.ndarray, rewards: np.ndarray,
            terminated: np.ndarray) -> None:
        size = len(self.replay["obs"])
        idx = (self.pos + np.arange(len(obs))) % size
        for key, value in (("obs", obs), ("next_obs", next_obs), ("option", options), ("reward", rewards),
                           ("terminated", terminated)):
            self.replay[key][idx] = value
        self.pos = int((self.pos + len(obs)) % size)
        self.stored = min(size, self.stored + len(obs))

    def live_state(self) -> dict[str, Any]:
        """What ``mlsh.snapshot`` keeps for exact resume (the weights and optimizers are in the checkpoint)."""
        return {"replay": self.replay, "stored": self.stored, "pos": self.pos, "steps": self.steps,
                "critic_updates": self.critic_updates}

    def load_live_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _Live(nn.Module):
    """The learner's per-env state (observations, running options, their ages) for ``mlsh.snapshot``, beside the
    intra-option policies that ``faults.check_model`` looks at."""

    def __init__(self, learner: OptionCriticLearner):
        super().__init__()
        self.options = learner.options
        self._learner = [learner]  # not a submodule

    def live_state(self) -> dict[str, Any]:
        lr = self._learner[0]
        return {"obs": lr.obs, "option": lr.option, "age": lr.age}

    def load_live_state(self, state: dict[str, Any]) -> None:
        lr = self._learner[0]
        lr.obs, lr.option, lr.age = state["obs"], state["option"], state["age"]


class OptionCriticLearner(_Groups):
    """Option-critic over ``schedule.n_groups`` task groups: shared intra-option policies, one ``TaskPart`` per
    group, rebuilt for each of its tasks. One iteration: ``rollout_steps / n_envs`` primitive steps of every env,
    each followed by the updates (module docstring)."""

    def __init__(self, cfg: DictConfig, venv: VecEnv, group_ids: Sequence[int] | None = None):
        super().__init__(cfg, venv, group_ids)
        if not isinstance(venv.action_space, spaces.Discrete):
            raise ValueError(f"algo=option_critic needs a discrete action space (FourRooms, KeyDoor's grid ...), "
                             f"{cfg.env.name} has {venv.action_space}")
        if distributed.world().active:
            raise ValueError("algo=option_critic runs in one process: start it without torchrun")
        self.cfg, self.c = cfg, cfg.algo
        self.venv = self.top_env = venv
        self.k, self.n_obs = int(cfg.n_subpolicies), int(np.prod(venv.observation_space.shape))
        self.options = Options(self.n_obs, int(venv.action_space.n), self.k, self.c.policy_net_arch,
                               self.c.policy_lr, self.c.optimizer)
        self.parts: list[TaskPart | None] = [None] * self.n_groups
        self.obs = np.zeros((venv.num_envs, self.n_obs), np.float32)
        self.option = np.full(venv.num_envs, -1, np.int64)  # -1: choose one at the next step
        self.age = np.zeros(venv.num_envs, np.int64)  # steps the running option has run
        self.live = _Live(self)

    # -- the learner interface (mlsh.learners) --------------------------------------------------------------
    def start_task(self, task: Any, group: int = 0, task_index: int | None = None) -> None:
        i = self.local(group)
        idx = self.indices[i]
        self.obs[idx] = self.venv.reset_envs(idx, {"task": task}).reshape(len(idx), -1)
        self.option[idx], self.age[idx] = -1, 0
        self.parts[i] = TaskPart(self.n_obs, self.k, self.c, group)

    def epsilon(self, part: TaskPart) -> float:
        e = self.c.epsilon
        frac = min(1.0, part.steps / max(1, int(e.decay_steps)))
        return float(e.start + frac * (e.end - e.start))

    def _pick(self, part: TaskPart, obs_t: th.Tensor, epsilon: float) -> np.ndarray:
        """Options for the observations ``obs_t``: greedy over ``part``'s Q, each uniform with prob. ``epsilon``."""
        with th.no_grad():
            best = part.critic(obs_t).argmax(1).numpy()
        explore = np.random.random(len(best)) < epsilon
        best[explore] = np.random.randint(self.k, size=int(explore.sum()))
        return best

    def _choose(self, obs_t: th.Tensor, need: np.ndarray) -> None:
        """New options for the envs ``need`` (a boolean mask), epsilon-greedy over their group's Q."""
        for i, sl in enumerate(self.slices):
            envs = np.flatnonzero(need[sl]) + sl.start
            if len(envs):
                self.option[envs] = self._pick(self.parts[i], obs_t[envs], self.epsilon(self.parts[i]))
                self.age[envs] = 0

    def iterate(self, joint: bool | Sequence[bool], train_subs: bool | None = None,
                ) -> tuple[dict[str, float], list[dict[str, float]]]:
        joint = _joint_flags(joint, self.n_groups)
        if any(p is None for p in self.parts):
            raise RuntimeError("start_task() for every group first")
        train_policies = any(joint)
        c = self.c
        n, k = self.venv.num_envs, self.k
        share, beta_sum = np.zeros(k), np.zeros(k)
        ended, ended_age = np.zeros(k), np.zeros(k)  # option executions that ended, and their summed lengths
        sums = {"policy_loss": 0.0, "entropy": 0.0}
        group_sums = [{"termination_loss": 0.0, "critic_loss": 0.0, "q": 0.0, "critic_updates": 0}
                      for _ in range(self.n_groups)]
        # envs of groups in warmup give no policy gradient
        policy_weight = th.as_tensor(np.concatenate([np.full(len(ix), float(j)) for ix, j in
                                                     zip(self.indices, joint, strict=True)]), dtype=th.float32)
        for _ in range(self.per_env):
            obs_t = to_tensor(self.obs)
            self._choose(obs_t, self.option < 0)
            options = th.as_tensor(self.option)
            logits = self.options.logits(obs_t, options)
            with th.no_grad():
                actions = th.multinomial(th.softmax(logits, -1), 1).squeeze(1)
            new_obs, rewards, dones, infos = self.venv.step(actions.numpy())
            new_obs = new_obs.reshape(n, -1).astype(np.float32, copy=False)
            next_obs = new_obs.copy()
            terminated = np.zeros(n, np.float32)
            for e in np.flatnonzero(dones):
                next_obs[e] = np.asarray(infos[e]["terminal_observation"]).reshape(-1)
                terminated[e] = 0.0 if infos[e].get("TimeLimit.truncated", False) else 1.0
            next_t, rew_t, term_t = to_tensor(next_obs), th.as_tensor(rewards, dtype=th.float32), \
                th.as_tensor(terminated)
            advantages, term_losses, betas = [], [], []
            for i, sl in enumerate(self.slices):
                part = self.parts[i]
                beta = part.beta(next_t[sl]).gather(1, options[sl, None]).squeeze(1)
                with th.no_grad():
                    q_now, q_next = part.critic(obs_t[sl]), part.critic(next_t[sl])
                    g = targets(rew_t[sl], term_t[sl], beta.detach(), part.target(next_t[sl]), options[sl],
                                float(c.gamma))
                advantages.append(g - q_now.gather(1, options[sl, None]).squeeze(1))
                term_losses.append(termination_loss(beta, q_next, options[sl], term_t[sl],
                                                    float(c.termination_reg)))
                betas.append(beta.detach())
                group_sums[i]["termination_loss"] += float(term_losses[-1].detach())
                group_sums[i]["q"] += float(q_now.max(1).values.mean())
            p_loss, entropy = policy_loss(logits, actions, th.cat(advantages), float(c.entropy_reg), policy_weight)
            if train_policies:
                self.options.optimizer.zero_grad()
                p_loss.backward()
                nn.utils.clip_grad_norm_(self.options.parameters(), float(c.max_grad_norm))
                self.options.optimizer.step()
            sums["policy_loss"] += float(p_loss.detach())
            sums["entropy"] += float(entropy)
            for i, (part, loss) in enumerate(zip(self.parts, term_losses, strict=True)):
                part.termination_optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(part.terminations.parameters(), float(c.max_grad_norm))
                part.termination_optimizer.step()
                sl = self.slices[i]
                part.add(self.obs[sl], next_obs[sl], self.option[sl], rewards[sl].astype(np.float32),
                         terminated[sl])
                part.steps += 1
                if part.steps % int(c.update_every) == 0 and part.stored >= int(c.batch_size):
                    group_sums[i]["critic_loss"] += self._critic_update(part)
                    group_sums[i]["critic_updates"] += 1
            beta_all = th.cat(betas).numpy()
            np.add.at(share, self.option, 1)
            np.add.at(beta_sum, self.option, beta_all)
            self.age += 1
            ends = (np.random.random(n) < beta_all) | dones
            np.add.at(ended, self.option[ends], 1)
            np.add.at(ended_age, self.option[ends], self.age[ends])
            self.option[ends] = -1
            self.obs = new_obs
        steps = max(1, self.per_env)
        shared: dict[str, float] = {"options/policy_loss": sums["policy_loss"] / steps,
                                    "options/entropy": sums["entropy"] / steps,
                                    "options/trained": float(train_policies)}
        total = max(1.0, share.sum())
        for w in range(k):
            shared[f"option{w}/share"] = float(share[w] / total)
            shared[f"option{w}/termination"] = float(beta_sum[w] / share[w]) if share[w] else float("nan")
            shared[f"option{w}/duration"] = float(ended_age[w] / ended[w]) if ended[w] else float("nan")
        per_group = []
        for part, s in zip(self.parts, group_sums, strict=True):
            per_group.append({"master/termination_loss": s["termination_loss"] / steps,
                              "master/critic_loss": s["critic_loss"] / max(1, s["critic_updates"]),
                              "master/q": s["q"] / steps, "master/epsilon": self.epsilon(part)})
        return shared, per_group

    def _critic_update(self, part: TaskPart) -> float:
        c = self.c
        idx = np.random.randint(part.stored, size=int(c.batch_size))
        b = {key: th.as_tensor(v[idx]) for key, v in part.replay.items()}
        with th.no_grad():
            beta = part.beta(b["next_obs"]).gather(1, b["option"][:, None]).squeeze(1)
            g = targets(b["reward"], b["terminated"], beta, part.target(b["next_obs"]), b["option"], float(c.gamma))
        q = part.critic(b["obs"]).gather(1, b["option"][:, None]).squeeze(1)
        loss = 0.5 * (q - g).pow(2).mean()
        part.critic_optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(part.critic.parameters(), float(c.max_grad_norm))
        part.critic_optimizer.step()
        part.critic_updates += 1
        if part.critic_updates % int(c.target_every) == 0:
            part.target.load_state_dict(part.critic.state_dict())
        return float(loss.detach())

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        th.save({"net": self.options.net.state_dict(), "optimizer": self.options.optimizer.state_dict(),
                 "k": self.k}, folder / OPTIONS_FILE)
        for g, part in zip(self.group_ids, self.parts, strict=True):
            if part is not None:
                th.save({"critic": part.critic.state_dict(), "target": part.target.state_dict(),
                         "terminations": part.terminations.state_dict(),
                         "critic_optimizer": part.critic_optimizer.state_dict(),
                         "termination_optimizer": part.termination_optimizer.state_dict()}, folder / _part_file(g))
        save_obs_stats(self.venv, folder)

    def load(self, folder: Path) -> None:
        """The intra-option policies (and observation filter) of a checkpoint; the task parts: ``load_masters``."""
        path = Path(folder) / OPTIONS_FILE
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {folder} has no {OPTIONS_FILE}: not an option-critic run")
        state = _load(path)
        if int(state.get("k", -1)) != self.k:
            raise ValueError(f"checkpoint {folder} has {state.get('k')} options, the config asks for "
                             f"n_subpolicies={self.k}")
        try:
            self.options.net.load_state_dict(state["net"])
        except RuntimeError as err:
            raise ValueError(f"{path} does not fit this env's spaces: {str(err).splitlines()[0]}") from err
        self.options.optimizer.load_state_dict(state["optimizer"])
        load_obs_stats(self.venv, folder)

    def load_masters(self, folder: Path, groups: Sequence[int]) -> None:
        """Each of ``groups``' critic, target and terminations (after ``start_task`` built them): resume mid-task."""
        for g in groups:
            path = Path(folder) / _part_file(g)
            if not path.exists():
                raise FileNotFoundError(f"checkpoint {folder} has no {path.name} (schedule.n_groups changed?)")
            state, part = _load(path), self.parts[self.local(g)]
            part.critic.load_state_dict(state["critic"])
            part.target.load_state_dict(state["target"])
            part.terminations.load_state_dict(state["terminations"])
            part.critic_optimizer.load_state_dict(state["critic_optimizer"])
            part.termination_optimizer.load_state_dict(state["termination_optimizer"])

    def live_models(self, groups: Sequence[int]) -> dict[str, Any]:
        return {"options": self.live, **{f"task_part_g{g}": self.parts[self.local(g)] for g in groups}}

    def shared_modules(self) -> dict[str, nn.Module]:
        return {"the intra-option policies": self.options}

    # -- acting without learning (diagnostics, benchmarks) ----------------------------------------------------
    @th.no_grad()
    def act(self, obs: np.ndarray, option: np.ndarray, group: int = 0, epsilon: float | None = None,
            greedy_actions: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(actions, options) for ``obs`` of envs of ``group`` whose running options are ``option`` (-1: choose
        one, epsilon-greedy over Q with ``epsilon``, default the task's current one), without learning; actions
        drawn from the intra-option policies, or their most likely with ``greedy_actions``."""
        part = self.parts[self.local(group)]
        obs_t = to_tensor(np.asarray(obs, np.float32).reshape(len(obs), -1))
        option = np.array(option)
        need = option < 0
        if need.any():
            option[need] = self._pick(part, obs_t[need], self.epsilon(part) if epsilon is None else epsilon)
        logits = self.options.logits(obs_t, th.as_tensor(option))
        actions = logits.argmax(1) if greedy_actions else th.multinomial(th.softmax(logits, -1), 1).squeeze(1)
        return actions.numpy(), option

    @th.no_grad()
    def terminate(self, next_obs: np.ndarray, option: np.ndarray, group: int = 0) -> np.ndarray:
        """Whether each running option ends in ``next_obs`` (drawn with its termination probability)."""
        part = self.parts[self.local(group)]
        beta = part.beta(to_tensor(np.asarray(next_obs, np.float32).reshape(len(next_obs), -1)))
        beta = beta.gather(1, th.as_tensor(option)[:, None]).squeeze(1).numpy()
        return np.random.random(len(option)) < beta


def _part_file(group: int) -> str:
    return f"task_part_g{group}.pt"


def _load(path: Path) -> dict[str, Any]:
    try:
        return th.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file: name it
        raise ValueError(f"{path} is corrupt or not an option-critic checkpoint file: {err}") from err
