"""The three learners that the meta-training loop drives: MLSH and the paper's two baselines.

Each learner exposes the same three calls: ``start_task(task)`` (set the task on the envs and reset them),
``iterate(joint)`` (collect one rollout of ``schedule.rollout_steps`` primitive steps, then update) and
``save(folder)`` / ``load(folder)``. Episode returns are read from the ``EpisodeStats`` wrapper by the loop.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize

import envs  # noqa: F401  (registers mlsh/* envs)
from mlsh import sb3_adapter
from mlsh.master import MasterPolicy
from mlsh.selection import SubPolicySelectionVecEnv
from mlsh.subpolicies import SubPolicyLearner

# SB3 warns when the rollout is not a multiple of the minibatch size; it then trains on a shorter last minibatch,
# which is what MLSH's variable-size batches do by design.
warnings.filterwarnings("ignore", message="You have specified a mini-batch size")


class EpisodeStats(VecEnvWrapper):
    """Records the return and length of every episode that finishes; ``pop()`` hands them over."""

    def __init__(self, venv: VecEnv):
        super().__init__(venv)
        self._running = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self.returns: list[float] = []
        self.lengths: list[int] = []

    def reset(self):
        self._running[:] = 0
        self._lengths[:] = 0
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self._running += rewards
        self._lengths += 1
        for i in np.flatnonzero(dones):
            self.returns.append(float(self._running[i]))
            self.lengths.append(int(self._lengths[i]))
            self._running[i] = 0
            self._lengths[i] = 0
        return obs, rewards, dones, infos

    def pop(self) -> list[float]:
        returns, self.returns, self.lengths = self.returns, [], []
        return returns


def make_task_env(cfg: DictConfig, seed: int) -> EpisodeStats:
    """``schedule.n_envs`` copies of the env in one ``DummyVecEnv``, seeded ``seed``, ``seed + 1``, ...

    With ``env.normalize_obs``, observations go through a running mean/std filter shared by every policy (SB3's
    ``VecNormalize``, clipped to +-5 as the original's filter; rewards untouched). Its statistics are kept across
    tasks and saved with every checkpoint.
    """
    kwargs = OmegaConf.to_container(cfg.env.kwargs, resolve=True) if cfg.env.get("kwargs") else {}
    venv = make_vec_env(cfg.env.id, n_envs=cfg.schedule.n_envs, seed=seed, env_kwargs=kwargs,
                        vec_env_cls=DummyVecEnv)
    if cfg.env.get("normalize_obs", False):
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False, clip_obs=5.0, gamma=0.99)
    return EpisodeStats(venv)


OBS_STATS = "obs_normalizer.pkl"


def _normalizer(venv: VecEnv) -> VecNormalize | None:
    while isinstance(venv, VecEnvWrapper):
        if isinstance(venv, VecNormalize):
            return venv
        venv = venv.venv
    return None


def freeze_obs_stats(venv: VecEnv) -> None:
    """Stop updating the observation filter (evaluation of policies trained behind it)."""
    norm = _normalizer(venv)
    if norm is not None:
        norm.training = False


def save_obs_stats(venv: VecEnv, folder: Path) -> None:
    norm = _normalizer(venv)
    if norm is not None:
        norm.save(str(Path(folder) / OBS_STATS))


def load_obs_stats(venv: VecEnv, folder: Path) -> None:
    """Restore the observation filter saved with a checkpoint (when this env uses one)."""
    norm, path = _normalizer(venv), Path(folder) / OBS_STATS
    if norm is None:
        return
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {folder} has no {OBS_STATS}, but env.normalize_obs is on: the "
                                f"policies there were trained without that observation filter")
    saved = VecNormalize.load(str(path), norm.venv)
    norm.obs_rms, norm.clip_obs, norm.epsilon = saved.obs_rms, saved.clip_obs, saved.epsilon


def sample_task(venv: VecEnv, rng: np.random.Generator) -> Any:
    """A task drawn with ``rng`` by the env class's ``sample_task``."""
    return venv.get_attr("unwrapped", indices=[0])[0].sample_task(rng)


def task_rng(seed: int, stream: str) -> np.random.Generator:
    """The task stream for training or held-out evaluation: disjoint streams of one seed."""
    return np.random.default_rng([seed, {"train": 0, "heldout": 1}[stream]])


def build_ppo(section: DictConfig, env: VecEnv, n_steps: int, policy: Any = "MlpPolicy", **extra) -> PPO:
    """A PPO model from a config section with ``net_arch`` and ``ppo`` (keyword arguments of ``PPO``)."""
    ppo_kwargs = OmegaConf.to_container(section.ppo, resolve=True)
    policy_kwargs = {"net_arch": list(section.net_arch), **extra.pop("policy_kwargs", {})}
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


def _start(env: VecEnv, task: Any) -> np.ndarray:
    env.set_options({"task": task})
    return env.reset()


class MLSHLearner:
    """K shared sub-policies, a selection wrapper, and a master rebuilt with fresh weights for each task."""

    def __init__(self, cfg: DictConfig, venv: VecEnv):
        self.cfg = cfg
        self.n_envs = venv.num_envs
        per_env = cfg.schedule.rollout_steps // self.n_envs
        self.macro_steps = per_env // cfg.macro_duration
        sub = cfg.algo.subpolicy
        self.subs = [build_ppo(sub, venv, per_env, rollout_buffer_class=sb3_adapter.VariableRolloutBuffer)
                     for _ in range(cfg.n_subpolicies)]
        self.sub_learner = SubPolicyLearner(self.subs, sub.ppo.gamma, sub.ppo.gae_lambda, sub.advantage_norm)
        self.env = SubPolicySelectionVecEnv(venv, self.sub_learner.policies, cfg.macro_duration, sub.ppo.gamma)
        self.master: PPO | None = None

    def start_task(self, task: Any) -> None:
        first_obs = _start(self.env, task)
        m = self.cfg.algo.master
        self.master = build_ppo(m, self.env, self.macro_steps, policy=MasterPolicy,
                                policy_kwargs={"random_pick_prob": m.random_pick_prob})
        sb3_adapter.begin_collection(self.master, first_obs)

    def iterate(self, joint: bool) -> dict[str, float]:
        assert self.master is not None, "start_task() first"
        self.env.choice_counts[:] = 0
        sb3_adapter.collect(self.master, self.macro_steps)
        traj = self.env.pop_trajectory()
        shares = self.env.choice_counts / max(1, self.env.choice_counts.sum())
        metrics = {f"master/share_sub{k}": float(s) for k, s in enumerate(shares)}
        records = sb3_adapter.train(self.master)
        metrics.update({f"master/{k.removeprefix('train/')}": v for k, v in records.items()})
        metrics["master/entropy"] = -float(records["train/entropy_loss"])
        if joint:
            metrics.update(self.sub_learner.train(traj))
        return metrics

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for k, model in enumerate(self.subs):
            model.save(folder / f"sub{k}.zip")
        if self.master is not None:
            self.master.save(folder / "master.zip")
        save_obs_stats(self.env, folder)

    def load(self, folder: Path) -> None:
        """The sub-policies of a checkpoint (the master is per task and never restored)."""
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


class SharedLearner:
    """The shared-policy baseline: one PPO policy trained across all tasks (never reset)."""

    fresh_per_task = False

    def __init__(self, cfg: DictConfig, venv: VecEnv):
        self.cfg, self.venv = cfg, venv
        self.per_env = cfg.schedule.rollout_steps // venv.num_envs
        self.model = self._build()

    def _build(self) -> PPO:
        return build_ppo(self.cfg.algo.policy, self.venv, self.per_env)

    def start_task(self, task: Any) -> None:
        first_obs = _start(self.venv, task)
        if self.fresh_per_task:
            self.model = self._build()
        sb3_adapter.begin_collection(self.model, first_obs)

    def iterate(self, joint: bool) -> dict[str, float]:
        sb3_adapter.collect(self.model, self.per_env)
        return {f"policy/{k.removeprefix('train/')}": v for k, v in sb3_adapter.train(self.model).items()}

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


class ScratchLearner(SharedLearner):
    """The single-policy-from-scratch baseline: a fresh PPO policy for every task."""

    fresh_per_task = True


LEARNERS = {"mlsh": MLSHLearner, "shared": SharedLearner, "scratch": ScratchLearner}


def make_learner(cfg: DictConfig, venv: VecEnv):
    return LEARNERS[cfg.algo.name](cfg, venv)

