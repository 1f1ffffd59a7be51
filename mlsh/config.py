"""Validation of a composed run config, before any work starts."""

from __future__ import annotations

import gymnasium as gym
from omegaconf import DictConfig

import envs  # noqa: F401  (registers mlsh/* envs)
from mlsh.groups import STAGGERS
from mlsh.subpolicies import GROUP_WEIGHTINGS

ALGOS = ("mlsh", "shared", "scratch")
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


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first value that cannot work."""
    if cfg.env.id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("mlsh/"))
        raise ConfigError(f"env.id: unknown env {cfg.env.id!r}; registered MLSH envs: {known}")
    if cfg.algo.name not in ALGOS:
        raise ConfigError(f"algo.name must be one of {list(ALGOS)}, got {cfg.algo.name!r}")
    _int(cfg, "n_subpolicies", 1)
    n = _int(cfg, "macro_duration", 1)
    _int(cfg, "seed", 0)
    _int(cfg, "schedule.n_tasks", 1)
    w = _int(cfg, "schedule.warmup_iters", 0)
    u = _int(cfg, "schedule.joint_iters", 0)
    if w + u < 1:
        raise ConfigError("schedule.warmup_iters + schedule.joint_iters must be >= 1")
    if "n_groups" in cfg.schedule:  # run folders from before task groups have none: one group
        _int(cfg, "schedule.n_groups", 1)
    if cfg.schedule.get("stagger", "original") not in STAGGERS:
        raise ConfigError(f"schedule.stagger must be one of {list(STAGGERS)}, got {cfg.schedule.stagger!r}")
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
    if episode is not None and episode % n:
        raise ConfigError(
            f"env.episode_steps ({episode}) must be a multiple of macro_duration ({n}) so that episodes end on "
            f"macro boundaries, as in the original"
        )
    if cfg.schedule.get("max_minutes") is not None and not cfg.schedule.max_minutes > 0:
        raise ConfigError(f"schedule.max_minutes must be > 0 or null, got {cfg.schedule.max_minutes!r}")
    if cfg.schedule.get("target_return") is not None:
        _int(cfg, "schedule.target_window", 1)
    if cfg.algo.name == "mlsh":
        p = cfg.algo.master.random_pick_prob
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"algo.master.random_pick_prob must be in [0, 1], got {p!r}")
        weighting = cfg.algo.subpolicy.get("group_weighting", "groups")
        if weighting not in GROUP_WEIGHTINGS:
            raise ConfigError(f"algo.subpolicy.group_weighting must be one of {list(GROUP_WEIGHTINGS)}, "
                              f"got {weighting!r}")
        if cfg.algo.subpolicy.get("minibatches") is not None:
            _int(cfg, "algo.subpolicy.minibatches", 1)
        if cfg.algo.subpolicy.advantage_norm not in ADVANTAGE_NORMS:
            raise ConfigError(f"algo.subpolicy.advantage_norm must be one of {list(ADVANTAGE_NORMS)}, "
                              f"got {cfg.algo.subpolicy.advantage_norm!r}")
    if cfg.algo.name == "mlsh" and cfg.schedule.joint_iters == 0 and not cfg.get("init_from"):
        raise ConfigError("schedule.joint_iters=0 never trains the sub-policies: give init_from=<run folder or "
                          "checkpoints/task_* folder> whose sub-policies the master should use, or joint_iters >= 1")
    if cfg.get("init_from"):
        from mlsh.checkpoint import resolve

        try:
            resolve(cfg.init_from)
        except FileNotFoundError as err:
            raise ConfigError(f"init_from: {err}") from None
    mode = cfg.logger.mode
    if mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.mode must be one of ['online', 'offline', 'disabled'], got {mode!r}")
