"""Validation of a composed run config, before any work starts."""

from __future__ import annotations

import inspect
import warnings

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

import envs  # noqa: F401  (registers mlsh/* envs)
from mlsh.groups import STAGGERS
from mlsh.subpolicies import GROUP_WEIGHTINGS, SWITCH_BOOTSTRAPS

ALGOS = ("mlsh", "shared", "scratch", "option_critic")
OC_OPTIMIZERS = ("rmsprop", "adam", "sgd")
ADVANTAGE_NORMS = ("share", "minibatch")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and what is allowed."""


def _int(cfg: DictConfig, key: str, minimum: int) -> int:
    value = cfg
    for part in key.split("."):
        if part not in value:
            raise ConfigError(f"{key} is missing from the config")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _ppo(cfg: DictConfig, key: str) -> None:
    ppo = OmegaConf.select(cfg, key)
    lr = ppo.get("learning_rate", 3e-4)  # SB3's default when unset
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr <= 1:
        raise ConfigError(f"{key}.learning_rate must be a number in (0, 1], got {lr!r} (Adam steps of that size "
                          "diverge or do nothing)")
    for name in ("n_epochs", "batch_size"):
        if name in ppo:
            _int(cfg, f"{key}.{name}", 1)
    for name in ("gamma", "gae_lambda"):
        value = ppo.get(name, 0.99)
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"{key}.{name} must be in [0, 1], got {value!r}")
    for name in ("clip_range", "ent_coef", "vf_coef", "max_grad_norm"):
        value = ppo.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{key}.{name} must be a number >= 0, got {value!r}")
    _optional_number(cfg, f"{key}.target_kl", 0.0, low_open=True)


def _number(cfg: DictConfig, key: str, low: float, high: float, low_open: bool = False) -> float:
    value = OmegaConf.select(cfg, key)
    ok = not isinstance(value, bool) and isinstance(value, int | float) and (value > low if low_open else value >= low)
    if not ok or value > high:
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise ConfigError(f"{key} must be a number in {bounds}, got {value!r}")
    return float(value)


def _optional_number(cfg: DictConfig, key: str, low: float = -float("inf"), low_open: bool = False) -> None:
    """``key`` is null (or absent), or a number above ``low`` (or at it, unless ``low_open``)."""
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, int | float) and (value > low if low_open else value >= low)
    if not ok:
        bound = "" if low == -float("inf") else f" {'>' if low_open else '>='} {low:g}"
        raise ConfigError(f"{key} must be a number{bound} or null, got {value!r}")


def _bool(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")


def _arch(cfg: DictConfig, key: str) -> None:
    """A network's hidden layers: a list of widths >= 1 ([]: no hidden layer)."""
    arch = OmegaConf.select(cfg, key)
    if not isinstance(arch, ListConfig | list) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in arch):
        raise ConfigError(f"{key} must be a list of layer widths >= 1 (e.g. [64, 64]; [] for none), got {arch!r}")


def _option_critic(cfg: DictConfig, processes: int) -> None:
    if processes > 1:
        raise ConfigError("algo=option_critic runs in one process: start it without torchrun")
    if cfg.algo.optimizer not in OC_OPTIMIZERS:
        raise ConfigError(f"algo.optimizer must be one of {list(OC_OPTIMIZERS)}, got {cfg.algo.optimizer!r}")
    for key in ("policy_lr", "termination_lr", "critic_lr"):
        _number(cfg, f"algo.{key}", 0.0, 100.0, low_open=True)
    _number(cfg, "algo.gamma", 0.0, 1.0)
    for key in ("termination_reg", "entropy_reg", "max_grad_norm"):
        _number(cfg, f"algo.{key}", 0.0, float("inf"))
    for key in ("epsilon.start", "epsilon.end"):
        _number(cfg, f"algo.{key}", 0.0, 1.0)
    for key in ("replay_size", "batch_size", "update_every", "target_every", "epsilon.decay_steps"):
        _int(cfg, f"algo.{key}", 1)
    if cfg.algo.batch_size > cfg.algo.replay_size:
        raise ConfigError(f"algo.batch_size ({cfg.algo.batch_size}) must be <= algo.replay_size "
                          f"({cfg.algo.replay_size})")
    for key in ("policy_net_arch", "termination_net_arch", "critic_net_arch"):
        _arch(cfg, f"algo.{key}")
    env = gym.make(cfg.env.id, **(OmegaConf.to_container(cfg.env.kwargs) if cfg.env.get("kwargs") else {}))
    action_space = env.action_space
    obs, _ = env.reset(seed=0)
    env.close()
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"algo=option_critic needs discrete actions (as FourRooms'); env={cfg.env.name} has "
                          f"{action_space}")
    obs = np.asarray(obs, dtype=np.float64)
    one_hot = bool(np.isin(obs, (0.0, 1.0)).all() and obs.sum() == 1.0)
    linear = [key for key in ("policy_net_arch", "termination_net_arch", "critic_net_arch") if not cfg.algo[key]]
    if linear and not one_hot:
        warnings.warn(f"algo=option_critic on env={cfg.env.name}: {', '.join('algo.' + k for k in linear)} = [] "
                      "makes bias-free linear maps of the observation, a table only on one-hot observations such as "
                      f"FourRooms'; {cfg.env.name}'s are not one-hot: set hidden layers (e.g. "
                      f"algo.{linear[0]}=[64,64]) and smaller learning rates", stacklevel=2)


def _env_kwargs(cfg: DictConfig) -> None:
    """Every key of ``env.kwargs`` must be a constructor argument of the env class."""
    kwargs = cfg.env.get("kwargs") or {}
    if not kwargs:
        return
    entry = gym.registry[cfg.env.id].entry_point
    env_cls = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    params = inspect.signature(env_cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        allowed = sorted(k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)
        raise ConfigError(f"env.kwargs: {unknown} not arguments of {env_cls.__name__}; allowed: {allowed}")


def _batched(cfg: DictConfig) -> None:
    """``env.batched`` needs an env class with a batched implementation (``envs.batch``)."""
    batched = cfg.env.get("batched", False)
    if not isinstance(batched, bool):
        raise ConfigError(f"env.batched must be true or false, got {batched!r}")
    if cfg.env.get("batch_threads") is not None:
        _int(cfg, "env.batch_threads", 1)
    if batched:
        entry = gym.registry[cfg.env.id].entry_point
        env_cls = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
        if not hasattr(env_cls, "batch_step"):
            raise ConfigError(f"env.batched=true: {cfg.env.id} has no batched implementation (the MuJoCo envs "
                              f"have one); set env.batched=false")


def _media(cfg: DictConfig) -> None:
    """``media``: the sub-policy maps and the episode video (``mlsh.media``); run folders from before lack keys."""
    media = cfg.get("media") or {}
    for key, minimum in (("maps_every", 0), ("video_size", 32), ("video_every", 1)):
        if key in media:
            _int(cfg, f"media.{key}", minimum)
    if "video" in media and not isinstance(media.video, bool):
        raise ConfigError(f"media.video must be true or false, got {media.video!r}")
    if media.get("video_steps") is not None:
        _int(cfg, "media.video_steps", 1)


def env_spaces(observation_space, action_space) -> dict[str, str]:
    """What a checkpoint's policies need of an env: its observation shape and its action space."""
    return {"observation": str(tuple(observation_space.shape)), "action": str(action_space)}


def _init_from(cfg: DictConfig) -> None:
    """``init_from`` must be a good checkpoint whose policies fit this env's spaces, with the same K."""
    from mlsh.checkpoint import CheckpointError, read_state, resolve

    try:
        ckpt = resolve(cfg.init_from)
    except (FileNotFoundError, CheckpointError) as err:
        raise ConfigError(f"init_from: {err}") from None
    state = read_state(ckpt)
    run_cfg = ckpt.parent.parent / ".hydra" / "config.yaml"
    saved = OmegaConf.load(run_cfg) if run_cfg.exists() else None
    k = state.get("config", {}).get("n_subpolicies") or (saved.n_subpolicies if saved is not None else None)
    if state.get("spaces"):  # another env is the point of transfer; its spaces must fit the policies
        env = gym.make(cfg.env.id, **(OmegaConf.to_container(cfg.env.kwargs) if cfg.env.get("kwargs") else {}))
        here = env_spaces(env.observation_space, env.action_space)
        env.close()
        if here != state["spaces"]:
            raise ConfigError(f"init_from: {ckpt} was trained on env {state['config'].get('env.name')!r} with spaces "
                              f"{state['spaces']}; env={cfg.env.name} has {here}")
    source = state.get("config", {})
    if cfg.algo.name != "scratch":  # scratch takes only the observation filter; the others a checkpoint's networks
        if source.get("algo.name", cfg.algo.name) != cfg.algo.name:
            raise ConfigError(f"init_from: {ckpt} is of algo={source['algo.name']}, whose networks algo="
                              f"{cfg.algo.name} cannot start from")
        for key in sorted(k for k in source if k.startswith("algo.") and k.endswith("net_arch")
                          and k != "algo.master.net_arch"):  # the masters start fresh for every task
            here = OmegaConf.select(cfg, key)
            here = OmegaConf.to_container(here) if isinstance(here, ListConfig) else here
            if here != source[key]:
                raise ConfigError(f"init_from: {ckpt} has {key}={source[key]}, this run asks for {here}")
    if cfg.env.get("normalize_obs", False) and source.get("env.normalize_obs") is False:
        raise ConfigError(f"init_from: {ckpt} has no observation filter (its run had env.normalize_obs=false), "
                          f"this run asks for env.normalize_obs=true")
    if cfg.algo.name == "mlsh" and k is not None and int(k) != int(cfg.n_subpolicies):
        raise ConfigError(f"init_from: {ckpt} has {k} sub-policies, this run asks for n_subpolicies="
                          f"{cfg.n_subpolicies}")


def _positive_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def distributed_timeout(cfg: DictConfig) -> float:
    """``distributed.timeout_s`` for joining the process group, which comes before ``validate`` can know the number
    of processes: a bad value gives the default 300 here, and ``validate`` then names it."""
    value = (cfg.get("distributed") or {}).get("timeout_s", 300)
    return float(value) if _positive_number(value) else 300.0


def _distributed(cfg: DictConfig, processes: int) -> None:
    node = cfg.get("distributed")
    if node is not None:
        _int(cfg, "distributed.check_every", 1)
        if node.get("subpolicy_update", "auto") not in ("auto", "gather", "allreduce"):
            raise ConfigError(f"distributed.subpolicy_update must be 'auto', 'gather' or 'allreduce', got "
                              f"{node.get('subpolicy_update')!r}")
        if not isinstance(node.get("balance_masters", True), bool):
            raise ConfigError(f"distributed.balance_masters must be true or false, got {node.get('balance_masters')!r}")
        if not _positive_number(node.get("timeout_s")):
            raise ConfigError(f"distributed.timeout_s must be a number > 0, got {node.get('timeout_s')!r}")
    if processes == 1:
        return
    groups = int(cfg.schedule.get("n_groups", 1))
    if groups % processes:
        raise ConfigError(f"schedule.n_groups={groups} task groups cannot be spread evenly over {processes} "
                          f"processes: give a multiple of {processes} (each process runs n_groups / processes)")
    if cfg.algo.name == "mlsh" and cfg.algo.subpolicy.get("group_weighting", "groups") != "groups":
        raise ConfigError("algo.subpolicy.group_weighting=samples is single-process only; several processes "
                          "average the groups' gradients (group_weighting=groups)")
    update = (cfg.get("distributed") or {}).get("subpolicy_update", "auto")
    gathered = update == "gather" or update == "auto" and processes <= int(cfg.get("n_subpolicies", 1))
    # the updates whose optimizer steps every process takes together: the shared policy's, and the sub-policies'
    # unless each is trained on one process (gather); scratch's policies are each their own process's
    together = (["algo.policy"] if cfg.algo.name == "shared" else []) + ([] if gathered else ["algo.subpolicy"])
    for section in together:
        kl = OmegaConf.select(cfg, section + ".ppo.target_kl")
        if kl is not None:
            raise ConfigError(f"{section}.ppo.target_kl={kl} stops PPO's epochs early on a process's own KL, "
                              f"which would leave the other processes waiting: set it to null with several processes")


def validate(cfg: DictConfig, processes: int = 1, started: bool = False) -> None:
    """Raise ``ConfigError`` for the first value that cannot work (``processes``: of a distributed run;
    ``started``: the config of a run that holds its own checkpoints, resumed or evaluated, whose ``init_from`` was
    read when it began and need not be there any more)."""
    if cfg.env.id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("mlsh/"))
        raise ConfigError(f"env.id: unknown env {cfg.env.id!r}; registered MLSH envs: {known}")
    if cfg.algo.name not in ALGOS:
        raise ConfigError(f"algo.name must be one of {list(ALGOS)}, got {cfg.algo.name!r}")
    _int(cfg, "n_subpolicies", 1)
    n = _int(cfg, "macro_duration", 1)
    _int(cfg, "seed", 0)
    if "torch_threads" in cfg:
        _int(cfg, "torch_threads", 1)
    _bool(cfg, "progress_bar")
    _int(cfg, "schedule.n_tasks", 1)
    w = _int(cfg, "schedule.warmup_iters", 0)
    u = _int(cfg, "schedule.joint_iters", 0)
    if w + u < 1:
        raise ConfigError("schedule.warmup_iters + schedule.joint_iters must be >= 1")
    if "n_groups" in cfg.schedule:  # run folders from before task groups have none: one group
        _int(cfg, "schedule.n_groups", 1)
    if cfg.schedule.get("stagger", "original") not in STAGGERS:
        raise ConfigError(f"schedule.stagger must be one of {list(STAGGERS)}, got {cfg.schedule.stagger!r}")
    if cfg.schedule.get("task_order", "iid") not in ("iid", "shuffled"):
        raise ConfigError(f"schedule.task_order must be 'iid' or 'shuffled', got {cfg.schedule.task_order!r}")
    n_envs = _int(cfg, "schedule.n_envs", 1)
    d = _int(cfg, "schedule.rollout_steps", 1)
    if d % n_envs:
        raise ConfigError(f"schedule.rollout_steps ({d}) must be a multiple of schedule.n_envs ({n_envs})")
    if (d // n_envs) % n:
        raise ConfigError(
            f"schedule.rollout_steps per env ({d} / {n_envs} = {d // n_envs}) must be a multiple of "
            f"macro_duration ({n}); allowed: rollout_steps = n_envs * macro_duration * m for an integer m >= 1"
        )
    episode = cfg.env.get("episode_steps")
    if episode is not None:
        _int(cfg, "env.episode_steps", 1)
    _bool(cfg, "env.normalize_obs")
    if episode is not None and episode % n:
        raise ConfigError(
            f"env.episode_steps ({episode}) must be a multiple of macro_duration ({n}) so that episodes end on "
            f"macro boundaries, as in the original"
        )
    _optional_number(cfg, "schedule.max_minutes", 0.0, low_open=True)
    _optional_number(cfg, "schedule.target_return")
    if cfg.schedule.get("target_return") is not None:
        _int(cfg, "schedule.target_window", 1)
    if cfg.algo.name == "mlsh":
        _number(cfg, "algo.master.random_pick_prob", 0.0, 1.0)
        weighting = cfg.algo.subpolicy.get("group_weighting", "groups")
        if weighting not in GROUP_WEIGHTINGS:
            raise ConfigError(f"algo.subpolicy.group_weighting must be one of {list(GROUP_WEIGHTINGS)}, "
                              f"got {weighting!r}")
        if cfg.algo.subpolicy.get("minibatches") is not None:
            _int(cfg, "algo.subpolicy.minibatches", 1)
        switch = cfg.algo.subpolicy.get("switch_bootstrap", "next")
        if switch not in SWITCH_BOOTSTRAPS:
            raise ConfigError(f"algo.subpolicy.switch_bootstrap must be one of {list(SWITCH_BOOTSTRAPS)}, "
                              f"got {switch!r}")
        share = cfg.algo.subpolicy.get("min_share", 0.0)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
            raise ConfigError(f"algo.subpolicy.min_share must be a number in [0, 1], got {share!r}")
        if cfg.algo.subpolicy.advantage_norm not in ADVANTAGE_NORMS:
            raise ConfigError(f"algo.subpolicy.advantage_norm must be one of {list(ADVANTAGE_NORMS)}, "
                              f"got {cfg.algo.subpolicy.advantage_norm!r}")
    if cfg.algo.name == "mlsh" and cfg.schedule.joint_iters == 0 and not cfg.get("init_from"):
        raise ConfigError("schedule.joint_iters=0 never trains the sub-policies: give init_from=<run folder or "
                          "checkpoints/task_* folder> whose sub-policies the master should use, or joint_iters >= 1")
    keep = cfg.get("checkpoint", {}).get("keep_last")
    if keep is not None:
        _int(cfg, "checkpoint.keep_last", 1)
    for section in ("algo.master", "algo.subpolicy", "algo.policy"):
        node = OmegaConf.select(cfg, section)
        if node is not None and "ppo" in node:
            _ppo(cfg, section + ".ppo")
        if node is not None and "net_arch" in node:
            _arch(cfg, section + ".net_arch")
    _env_kwargs(cfg)
    if cfg.algo.name == "option_critic":
        _option_critic(cfg, processes)
    _batched(cfg)
    _media(cfg)
    _distributed(cfg, processes)
    if cfg.get("init_from") and not started:
        _init_from(cfg)
    mode = cfg.logger.mode
    if mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.mode must be one of ['online', 'offline', 'disabled'], got {mode!r}")
