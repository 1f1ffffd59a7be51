"""The learners that the meta-training loop drives: MLSH and the paper's two baselines (option-critic, the
third, is ``mlsh.option_critic``).

Each learner serves ``schedule.n_groups`` task groups (``mlsh.groups``) and exposes the same calls:
``start_task(task, group, task_index)`` (set the group's task on its envs and reset them; ``task_index``, the
task's number in the run, seeds what is random per task), ``iterate(joint)`` (every group
collects one rollout of ``schedule.rollout_steps`` primitive steps, then the updates; ``joint[g]`` says whether
group g is in its joint phase) and ``save(folder)`` / ``load(folder)``. ``iterate`` returns the metrics shared by
all groups and one dict per group. Episode returns are read from the ``EpisodeStats`` wrapper by the loop.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

import envs  # noqa: F401  (registers mlsh/* envs)
from envs.batch import MujocoBatchVecEnv
from mlsh import distributed, faults, sb3_adapter
from mlsh.groups import EpisodeStats, GroupView, TaskVecEnv, TaskVecNormalize, TrackedRMS, group_slices
from mlsh.master import MasterPolicy
from mlsh.selection import SubPolicySelectionVecEnv
from mlsh.subpolicies import SubPolicyLearner

# SB3 warns when the rollout is not a multiple of the minibatch size; it then trains on a shorter last minibatch,
# which is what MLSH's variable-size batches do by design.
warnings.filterwarnings("ignore", message="You have specified a mini-batch size")


def make_task_env(cfg: DictConfig, seed: int, n_groups: int | None = None) -> EpisodeStats:
    """The envs of every task group (``schedule.n_envs`` per group, ``n_groups`` groups, default
    ``schedule.n_groups``) in one ``VecEnv``, seeded ``seed``, ``seed + 1``, ...

    With ``env.batched`` (the MuJoCo envs), the envs are one ``envs.batch.MujocoBatchVecEnv``: stepped together in
    MuJoCo's C code on ``env.batch_threads`` threads, transition for transition as the ``DummyVecEnv`` of
    ``gym.make`` envs that is used otherwise.

    With ``env.normalize_obs``, observations go through a running mean/std filter shared by every policy of every
    group (SB3's ``VecNormalize``, clipped to +-5 as the original's filter; rewards untouched). Its statistics are
    kept across tasks and saved with every checkpoint.
    """
    n_groups = cfg.schedule.get("n_groups", 1) if n_groups is None else n_groups
    kwargs = OmegaConf.to_container(cfg.env.kwargs, resolve=True) if cfg.env.get("kwargs") else {}
    n_envs = cfg.schedule.n_envs * n_groups
    if cfg.env.get("batched", False):
        venv = MujocoBatchVecEnv(cfg.env.id, n_envs, env_kwargs=kwargs, nthread=cfg.env.get("batch_threads", 1))
        venv.seed(seed)
    else:
        venv = make_vec_env(cfg.env.id, n_envs=n_envs, seed=seed, env_kwargs=kwargs, vec_env_cls=TaskVecEnv)
    if cfg.env.get("normalize_obs", False):
        venv = TaskVecNormalize(venv, track=distributed.world().active, norm_obs=True, norm_reward=False,
                                clip_obs=5.0, gamma=0.99)
    return EpisodeStats(venv)


OBS_STATS = "obs_normalizer.pkl"


def normalizer(venv: VecEnv) -> VecNormalize | None:
    """The observation filter of an env stack (None without one)."""
    while isinstance(venv, VecEnvWrapper):
        if isinstance(venv, VecNormalize):
            return venv
        venv = venv.venv
    return None


def freeze_obs_stats(venv: VecEnv) -> None:
    """Stop updating the observation filter (evaluation of policies trained behind it)."""
    norm = normalizer(venv)
    if norm is not None:
        norm.training = False


def save_obs_stats(venv: VecEnv, folder: Path) -> None:
    norm = normalizer(venv)
    if norm is not None:
        norm.save(str(Path(folder) / OBS_STATS))


def load_obs_stats(venv: VecEnv, folder: Path) -> None:
    """Restore the observation filter saved with a checkpoint (when this env uses one)."""
    norm, path = normalizer(venv), Path(folder) / OBS_STATS
    if norm is None:
        return
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {folder} has no {OBS_STATS}, but env.normalize_obs is on: the "
                                f"policies there were trained without that observation filter")
    saved = VecNormalize.load(str(path), norm.venv)
    norm.obs_rms = TrackedRMS.of(saved.obs_rms, track=distributed.world().active)
    norm.clip_obs, norm.epsilon = saved.clip_obs, saved.epsilon


def sample_task(venv: VecEnv, rng: np.random.Generator) -> Any:
    """A task drawn with ``rng`` by the env class's ``sample_task``."""
    return venv.get_attr("unwrapped", indices=[0])[0].sample_task(rng)


def task_set(venv: VecEnv) -> list:
    """Every task the env class can draw: ``range(n_tasks)``, or FourRooms' goal cells."""
    env = venv.get_attr("unwrapped", indices=[0])[0]
    return list(range(int(env.n_tasks))) if hasattr(env, "n_tasks") else [int(g) for g in env.goals]


def shuffled_task(tasks: list, seed: int, index: int) -> Any:
    """Task number ``index`` of a run with ``schedule.task_order=shuffled``: the tasks dealt as decks, each deck
    every task once in its own random order, so that any ``len(tasks)`` consecutive numbers of one deck cover
    every task. A function of the seed and the number alone: every process, and a resumed run, deals alike."""
    n = len(tasks)
    order = np.random.default_rng([seed, 2, index // n]).permutation(n)
    return tasks[int(order[index % n])]


def task_rng(seed: int, stream: str, rank: int = 0) -> np.random.Generator:
    """The task stream for training or held-out evaluation: disjoint streams of one seed; process ``rank`` of a
    distributed run draws the tasks of its own groups from its own stream (rank 0: the single-process one)."""
    key = [seed, {"train": 0, "heldout": 1}[stream]]
    return np.random.default_rng(key if rank == 0 else [*key, rank])


def build_ppo(section: DictConfig, env: VecEnv, n_steps: int, policy: Any = "MlpPolicy", **extra) -> PPO:
    """A PPO model from a config section with ``net_arch`` and ``ppo`` (keyword arguments of ``PPO``)."""
    ppo_kwargs = OmegaConf.to_container(section.ppo, resolve=True)
    policy_kwargs = {"net_arch": list(section.net_arch), **extra.pop("policy_kwargs", {})}
    if "optimizer_class" not in policy_kwargs and "optimizer_kwargs" not in policy_kwargs:
        # SB3's default Adam with its eps, as one fused kernel: 72 against 220 us per step for a MovementBandits
        # policy as one multi-tensor step, 310 as SB3's loop (the same update to float rounding)
        policy_kwargs["optimizer_kwargs"] = {"eps": 1e-5, "fused": True}
    try:
        model = PPO(policy, env, n_steps=n_steps, policy_kwargs=policy_kwargs, device="cpu", verbose=0,
                    **ppo_kwargs, **extra)
    except TypeError as err:
        raise ValueError(f"invalid PPO settings {sorted(ppo_kwargs)}: {err}") from err
    sb3_adapter.capture_logger(model)
    return model


def _set_parameters(model: PPO, path: Path) -> None:
    """Load a saved model's weights (and optimizer state) into ``model``; explain a space mismatch."""
    try:
        model.set_parameters(str(path), exact_match=True, device="cpu")
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit this env's observation/action spaces "
                         f"({model.observation_space}, {model.action_space}): {str(err).splitlines()[0]}") from err


def _load_group_models(models: list[PPO | None], folder: Path, groups: Sequence[int], local, name) -> None:
    """Weights of the per-group models of the run's groups ``groups`` (at ``local(g)``) from ``folder / name(g)``."""
    for g in groups:
        path = Path(folder) / name(g)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {folder} has no {path.name} (schedule.n_groups changed?)")
        _set_parameters(models[local(g)], path)


def _joint_flags(joint: bool | Sequence[bool], n_groups: int) -> list[bool]:
    flags = [bool(joint)] * n_groups if isinstance(joint, bool | np.bool_) else [bool(j) for j in joint]
    if len(flags) != n_groups:
        raise ValueError(f"joint has {len(flags)} flags for {n_groups} task groups")
    return flags


class _Groups:
    """The task-group layout that every learner shares: this process's task groups, ``group_ids`` of the run's
    ``schedule.n_groups`` (all of them in one process; ``mlsh.distributed`` spreads them), as slices of
    ``n_envs`` envs of ``venv``. Groups are named by their number in the run everywhere (``start_task``,
    ``load_masters``, ``live_models``); ``iterate`` takes the flags of this process's groups, in order.

    ``top_env`` is the outermost env of the learner's stack (what ``mlsh.snapshot`` captures for exact resume)."""

    def __init__(self, cfg: DictConfig, venv: VecEnv, group_ids: Sequence[int] | None = None):
        self.total_groups = int(cfg.schedule.get("n_groups", 1))
        self.group_ids = list(range(self.total_groups)) if group_ids is None else [int(g) for g in group_ids]
        self.n_groups = len(self.group_ids)
        if venv.num_envs % self.n_groups:
            raise ValueError(f"{venv.num_envs} envs cannot be split into {self.n_groups} task groups")
        self.group_envs = venv.num_envs // self.n_groups
        self.slices = group_slices(self.n_groups, self.group_envs)
        self.indices = [np.arange(s.start, s.stop) for s in self.slices]
        self.per_env = cfg.schedule.rollout_steps // self.group_envs
        self._local = {g: i for i, g in enumerate(self.group_ids)}

    def local(self, group: int) -> int:
        """The position of the run's task group ``group`` among this process's."""
        if group not in self._local:
            raise ValueError(f"task group {group} is not one of this process's ({self.group_ids})")
        return self._local[group]


class MLSHLearner(_Groups):
    """K shared sub-policies, one selection wrapper over every group's envs, and one master per group, rebuilt with
    fresh weights for each of its tasks."""

    def __init__(self, cfg: DictConfig, venv: VecEnv, group_ids: Sequence[int] | None = None):
        super().__init__(cfg, venv, group_ids)
        self.cfg = cfg
        self.macro_steps = self.per_env // cfg.macro_duration
        sub = cfg.algo.subpolicy
        self.subs = [build_ppo(sub, venv, self.per_env, rollout_buffer_class=sb3_adapter.VariableRolloutBuffer)
                     for _ in range(cfg.n_subpolicies)]
        for k, model in enumerate(self.subs):
            faults.watch(model, f"sub-policy {k}")
        distributed.broadcast_parameters(m.policy for m in self.subs)  # the same sub-policies in every process
        self.sub_learner = SubPolicyLearner(self.subs, sub.ppo.gamma, sub.ppo.gae_lambda, sub.advantage_norm,
                                            sub.get("group_weighting", "groups"), sub.get("minibatches"),
                                            seed=cfg.seed, n_groups=self.total_groups,
                                            switch_bootstrap=sub.get("switch_bootstrap", "next"),
                                            min_share=sub.get("min_share", 0.0),
                                            update=cfg.get("distributed", {}).get("subpolicy_update", "auto"))
        self.env = SubPolicySelectionVecEnv(venv, self.sub_learner.policies, cfg.macro_duration, sub.ppo.gamma,
                                            segment_values=self.sub_learner.switch_bootstrap == "own")
        self.top_env = self.env
        self.masters: list[PPO | None] = [None] * self.n_groups
        self.tasks_started = 0
        # several processes, "gather": the processes that train no sub-policy train some masters of those that do
        self.balancer = MasterBalancer(self) if distributed.world().active and self.sub_learner.update == "gather" \
            and cfg.get("distributed", {}).get("balance_masters", True) else None

    def _build_master(self, indices: np.ndarray) -> PPO:
        m = self.cfg.algo.master
        return build_ppo(m, GroupView(self.env, indices), self.macro_steps, policy=MasterPolicy,
                         policy_kwargs={"random_pick_prob": m.random_pick_prob},
                         rollout_buffer_class=sb3_adapter.SeededRolloutBuffer)

    def start_task(self, task: Any, group: int = 0, task_index: int | None = None) -> None:
        """A fresh master for group ``group``'s new ``task``; ``task_index`` (the task's number in the run; default:
        the tasks this learner started before) seeds the master's minibatch order with the run seed and the
        group."""
        i = self.local(group)
        first_obs = self.env.reset_envs(self.indices[i], {"task": task})
        self.masters[i] = master = self._build_master(self.indices[i])
        index = self.tasks_started if task_index is None else int(task_index)
        master.minibatch_key = (int(self.cfg.seed), MASTER_STREAM, int(group), index)
        self.tasks_started += 1
        faults.watch(master, f"the master of group {group}")
        sb3_adapter.begin_collection(master, first_obs)

    def iterate(self, joint: bool | Sequence[bool], train_subs: bool | None = None,
                ) -> tuple[dict[str, float], list[dict[str, float]]]:
        """``train_subs``: whether any group of the run is in its joint phase (default: any of ``joint``); in a
        distributed run a process whose own groups are all in warmup still takes part in the update."""
        joint = _joint_flags(joint, self.n_groups)
        if any(m is None for m in self.masters):
            raise RuntimeError("start_task() for every group first")
        self.env.choice_counts[:] = 0
        sb3_adapter.collect_groups(self.masters, self.env, self.slices, self.macro_steps)
        traj = self.env.pop_trajectory()
        per_group = []
        for sl in self.slices:
            counts = self.env.choice_counts[sl].sum(axis=0)
            per_group.append({f"master/share_sub{k}": float(s) for k, s in enumerate(counts / max(1, counts.sum()))})
        chosen = [i for i, j in enumerate(joint) if j]
        groups, ids = [self.indices[i] for i in chosen], [self.group_ids[i] for i in chosen]
        shared: dict[str, float] = {}
        if not (any(joint) if train_subs is None else train_subs):
            records = [self.train_master(master) for master in self.masters]
        elif self.balancer is not None:
            shared, records = self.balancer.iterate(traj, groups, ids)
        else:
            records = [self.train_master(master) for master in self.masters]
            shared = self.sub_learner.train(traj, groups, ids)
        for metrics, rec in zip(per_group, records, strict=True):
            metrics.update({f"master/{k.removeprefix('train/')}": v for k, v in rec.items()})
            metrics["master/entropy"] = -float(rec["train/entropy_loss"])
        return shared, per_group

    @staticmethod
    def train_master(master: PPO) -> dict[str, Any]:
        """One update of a master on its rollout; its minibatches drawn from its own generator (``start_task``)."""
        sb3_adapter.seed_minibatches(master, master.minibatch_key)
        return sb3_adapter.train(master)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for k, model in enumerate(self.subs):
            model.save(folder / f"sub{k}.zip")
        for g, master in zip(self.group_ids, self.masters, strict=True):
            if master is not None:
                master.save(folder / f"master_g{g}.zip")
        save_obs_stats(self.env, folder)

    def load(self, folder: Path) -> None:
        """The sub-policies (and observation filter) of a checkpoint; the masters are per task (``load_masters``)."""
        found = len(list(Path(folder).glob("sub*.zip")))
        if found != len(self.subs):
            raise ValueError(f"checkpoint {folder} has {found} sub-policies (sub*.zip), the config asks for "
                             f"n_subpolicies={len(self.subs)}")
        for k, model in enumerate(self.subs):
            path = Path(folder) / f"sub{k}.zip"
            if not path.exists():
                raise FileNotFoundError(f"checkpoint {folder} has no {path.name} (n_subpolicies={len(self.subs)})")
            _set_parameters(model, path)
        load_obs_stats(self.env, folder)

    def load_masters(self, folder: Path, groups: Sequence[int]) -> None:
        """Each of ``groups``' master weights from a checkpoint (after ``start_task`` built them): resume mid-task."""
        _load_group_models(self.masters, folder, groups, self.local, lambda g: f"master_g{g}.zip")

    def live_models(self, groups: Sequence[int]) -> dict[str, PPO]:
        """The models whose state carries over to the next iteration: the sub-policies and ``groups``' masters."""
        return {**{f"sub{k}": m for k, m in enumerate(self.subs)},
                **{f"master_g{g}": self.masters[self.local(g)] for g in groups}}

    def shared_modules(self) -> dict[str, th.nn.Module]:
        """What every process of a distributed run holds identical."""
        return {f"sub-policy {k}": m.policy for k, m in enumerate(self.subs)}


MASTER_STREAM = 0x6D617374  # in the masters' minibatch seeds, apart from the sub-policies' (SubPolicyLearner)


class MasterBalancer:
    """Several processes, ``distributed.subpolicy_update=gather``: while some processes train the sub-policies,
    the others train some of their masters, so that every process's updates take about as long.

    A master's update needs only its weights, optimizer state and rollout, and its minibatches come from its own
    generator (``MLSHLearner.start_task``), so it is the same update, bit for bit, in whichever process it runs:
    moving masters changes how long an iteration takes and nothing else. Which ones move is decided the same way
    in every process, from what each measured and said in the sub-policy update's first message: its seconds per
    master update and per sub-policy optimizer step (smoothed over iterations). Greedy: while the busiest process
    has a master of its own left and handing it to the least busy one lowers the busiest's load, hand it over.
    Then one message takes the moved masters to their helpers and one brings them back trained.
    """

    def __init__(self, learner: MLSHLearner, smoothing: float = 0.5):
        self.learner, self.world, self.smoothing = learner, distributed.world(), smoothing
        self.master_s: float | None = None  # this process's seconds per master update
        self.step_s: float | None = None  # its seconds per sub-policy optimizer step
        self.helper: PPO | None = None  # the model that trains other processes' masters here

    def _smooth(self, old: float | None, new: float | None) -> float | None:
        if new is None:
            return old
        return new if old is None else self.smoothing * old + (1 - self.smoothing) * new

    def iterate(self, traj, groups: list[np.ndarray], ids: list[int]) -> tuple[dict[str, float], list[dict]]:
        learner, sub = self.learner, self.learner.sub_learner
        plan = sub.gather_data(traj, groups, ids, info=(learner.group_ids, self.master_s, self.step_s))
        moves = self.plan(plan)
        records: dict[int, dict] = {}
        guests: list[tuple[int, dict]] = []  # (group, its exported update) of the masters this process trains
        if moves:  # every process knows the plan, so all of them meet in this collective or none
            out = {}
            for g in learner.group_ids:
                if g in moves:
                    master = learner.masters[learner.local(g)]
                    sb3_adapter.seed_minibatches(master, master.minibatch_key)  # the generator travels with it
                    out[g] = sb3_adapter.export_update(master)
            guests = [(g, state) for part in distributed.gather(out) for g, state in part.items()
                      if moves[g] == self.world.rank]
        shared = sub.train_gathered(plan)
        self.step_s = self._smooth(self.step_s, plan.seconds_per_step)
        start, n = time.perf_counter(), 0
        for g in learner.group_ids:
            if g not in moves:
                records[g] = learner.train_master(learner.masters[learner.local(g)])
                n += 1
        done = {}
        for g, state in guests:
            done[g] = self._train_guest(g, state)
            n += 1
        if n:
            self.master_s = self._smooth(self.master_s, (time.perf_counter() - start) / n)
        if moves:
            for part in distributed.gather(done):
                for g, result in part.items():
                    if g in learner.group_ids:
                        sb3_adapter.import_result(learner.masters[learner.local(g)], result)
                        records[g] = result["records"]
        sub.share_gathered(plan)
        shared["dist/masters_moved"] = float(len(moves))  # over all processes
        return shared, [records[g] for g in learner.group_ids]

    def plan(self, plan) -> dict[int, int]:
        """{group: process} for the masters whose update moves this iteration (the same in every process)."""
        groups = [info[0] for info in plan.infos]
        master_s = [info[1] for info in plan.infos if info[1] is not None]
        step_s = [info[2] for info in plan.infos if info[2] is not None]
        if not master_s or not step_s:
            return {}  # nothing measured yet
        subs = [0.0] * self.world.size
        for k in plan.held:
            subs[plan.trainer[k]] += plan.steps[k] * float(np.mean(step_s))
        return balance(subs, groups, float(np.mean(master_s)))

    def _train_guest(self, group: int, state: dict) -> dict:
        """Another process's master ``group``, trained here; returns what its owner loads back."""
        learner = self.learner
        if self.helper is None:
            with th.random.fork_rng(devices=[]):  # building it draws initial weights: not from the run's stream
                self.helper = learner._build_master(learner.indices[0])
            self.helper_name = _Name("a master of another process")
            faults.watch(self.helper, self.helper_name)
        self.helper_name.text = f"the master of group {group} (trained in process {self.world.rank})"
        sb3_adapter.import_update(self.helper, state)
        records = sb3_adapter.train(self.helper)
        return {**sb3_adapter.export_result(self.helper), "records": records}


class _Name:
    """A name that can change (a model that stands for several in turn)."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


def balance(subs: Sequence[float], groups: Sequence[Sequence[int]], master_s: float) -> dict[int, int]:
    """Greedy: process r trains sub-policies for ``subs[r]`` seconds and its masters ``groups[r]`` for ``master_s``
    each; while the busiest process has one of its own masters left and handing it to the least busy lowers the
    busiest's load, hand over its last. Returns {group: process it moves to}; ties go to the lowest rank."""
    load = [s + len(g) * master_s for s, g in zip(subs, groups, strict=True)]
    left = [list(g) for g in groups]
    moves: dict[int, int] = {}
    while True:
        hi = max(range(len(load)), key=load.__getitem__)
        lo = min(range(len(load)), key=load.__getitem__)
        if not left[hi] or load[lo] + master_s >= load[hi]:
            return moves
        moves[left[hi].pop()] = lo
        load[hi] -= master_s
        load[lo] += master_s


class SharedLearner(_Groups):
    """The shared-policy baseline: one PPO policy trained across all tasks of all groups (never reset)."""

    def __init__(self, cfg: DictConfig, venv: VecEnv, group_ids: Sequence[int] | None = None):
        super().__init__(cfg, venv, group_ids)
        self.cfg, self.venv = cfg, venv
        self.top_env = venv
        self.model = build_ppo(cfg.algo.policy, venv, self.per_env)
        faults.watch(self.model, "the shared policy")
        self.mean = None
        if distributed.world().active:  # one policy over every process's groups: their gradients' mean, weight 1
            distributed.broadcast_parameters([self.model.policy])
            self.mean = distributed.GradientMean(self.model.policy, "the shared policy")
            self.model.policy.optimizer.register_step_pre_hook(self.mean.pre_step)
        sb3_adapter.begin_collection(self.model, np.zeros((venv.num_envs, *venv.observation_space.shape),
                                                          dtype=venv.observation_space.dtype))

    def start_task(self, task: Any, group: int = 0, task_index: int | None = None) -> None:
        i = self.local(group)
        first_obs = self.venv.reset_envs(self.indices[i], {"task": task})
        sb3_adapter.reset_some(self.model, self.indices[i], first_obs)

    def iterate(self, joint: bool | Sequence[bool], train_subs: bool | None = None,
                ) -> tuple[dict[str, float], list[dict[str, float]]]:
        _joint_flags(joint, self.n_groups)
        sb3_adapter.collect_groups([self.model], self.venv, [slice(None)], self.per_env)
        if self.mean is not None:
            self.mean.weight = 1.0
        try:
            records = sb3_adapter.train(self.model)
        finally:
            if self.mean is not None:
                self.mean.weight = None
        return {f"policy/{k.removeprefix('train/')}": v for k, v in records.items()}, [{}] * self.n_groups

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "policy.zip")
        save_obs_stats(self.venv, folder)

    def load(self, folder: Path) -> None:
        path = folder / "policy.zip"
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {folder} has no policy.zip")
        _set_parameters(self.model, path)
        load_obs_stats(self.venv, folder)

    def load_masters(self, folder: Path, groups: Sequence[int]) -> None:
        """Nothing is per task."""

    def live_models(self, groups: Sequence[int]) -> dict[str, PPO]:
        return {"policy": self.model}

    def shared_modules(self) -> dict[str, th.nn.Module]:
        return {"the shared policy": self.model.policy}


class ScratchLearner(_Groups):
    """The single-policy-from-scratch baseline: a fresh PPO policy for every task of every group."""

    def __init__(self, cfg: DictConfig, venv: VecEnv, group_ids: Sequence[int] | None = None):
        super().__init__(cfg, venv, group_ids)
        self.cfg, self.venv = cfg, venv
        self.top_env = venv
        self.models: list[PPO | None] = [None] * self.n_groups

    def start_task(self, task: Any, group: int = 0, task_index: int | None = None) -> None:
        i = self.local(group)
        first_obs = self.venv.reset_envs(self.indices[i], {"task": task})
        self.models[i] = model = build_ppo(self.cfg.algo.policy, GroupView(self.venv, self.indices[i]), self.per_env)
        faults.watch(model, f"the policy of group {group}")
        sb3_adapter.begin_collection(model, first_obs)

    def iterate(self, joint: bool | Sequence[bool], train_subs: bool | None = None,
                ) -> tuple[dict[str, float], list[dict[str, float]]]:
        _joint_flags(joint, self.n_groups)
        if any(m is None for m in self.models):
            raise RuntimeError("start_task() for every group first")
        sb3_adapter.collect_groups(self.models, self.venv, self.slices, self.per_env)
        per_group = [{f"policy/{k.removeprefix('train/')}": v for k, v in sb3_adapter.train(m).items()}
                     for m in self.models]
        return {}, per_group

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for g, model in zip(self.group_ids, self.models, strict=True):
            if model is not None:
                model.save(folder / self._file(g))
        save_obs_stats(self.venv, folder)

    def load(self, folder: Path) -> None:
        """Only the observation filter: a policy from scratch starts from nothing."""
        load_obs_stats(self.venv, folder)

    def load_masters(self, folder: Path, groups: Sequence[int]) -> None:
        """Each of ``groups``' policy of its current task (resume mid-task)."""
        _load_group_models(self.models, folder, groups, self.local, self._file)

    def live_models(self, groups: Sequence[int]) -> dict[str, PPO]:
        return {self._file(g): self.models[self.local(g)] for g in groups}

    def shared_modules(self) -> dict[str, th.nn.Module]:
        return {}

    @staticmethod
    def _file(group: int) -> str:
        return "policy.zip" if group == 0 else f"policy_g{group}.zip"  # group 0 as the shared policy's


LEARNERS = {"mlsh": MLSHLearner, "shared": SharedLearner, "scratch": ScratchLearner}


def make_learner(cfg: DictConfig, venv: VecEnv, group_ids: Sequence[int] | None = None):
    if cfg.algo.name == "option_critic":
        from mlsh.option_critic import OptionCriticLearner  # it builds on this module

        return OptionCriticLearner(cfg, venv, group_ids)
    return LEARNERS[cfg.algo.name](cfg, venv, group_ids)

