"""What a checkpoint's SB3 zips leave out and a resumed run needs to continue exactly as if never stopped.

The zips hold every model's weights and optimizer state. ``capture`` adds, at an iteration boundary:

- the global random states of torch, numpy and Python (sampling, the masters' random picks, minibatch order);
- every model's live attributes (update counter, last observation and episode starts, step counter; a model
  with ``live_state()`` / ``load_live_state()``, such as option-critic's parts, gives its own);
- the state of every layer of the env stack: the vector wrappers (selection wrapper, episode statistics,
  observation filter, ``DummyVecEnv`` buffers) and, for each env, every gymnasium wrapper and the env itself,
  including its random generator, its task and, for MuJoCo envs, its whole ``MjData``; a batched env
  (``envs.batch``) gives its own state: every simulation's state row, generator and task.

Env layers are captured generically: each layer's instance attributes, minus references to other layers and
static parts (spaces, spec, the MuJoCo model and renderer). ``restore`` writes them back into a stack built from
the same config (``MjData`` is copied into the existing one, so views and renderers stay valid). The result is
pickled, compressed, into the checkpoint as ``resume.pkl``.
"""

from __future__ import annotations

import pickle
import random
import zlib
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

FILE = "resume.pkl"
FORMAT = 1

# PPO attributes that change while training and are not restored by loading weights (``set_parameters``)
MODEL_LIVE = ("num_timesteps", "_n_updates", "_last_obs", "_last_episode_starts", "_last_original_obs",
              "_current_progress_remaining", "_episode_num", "_num_timesteps_at_start", "_total_timesteps",
              "ep_info_buffer", "ep_success_buffer")
# references to other layers, models or static parts, never captured
_SKIP = {"env", "venv", "envs", "subpolicies", "model", "mujoco_renderer", "spec", "_cached_spec",
         "metadata", "_metadata", "observation_space", "action_space", "_observation_space", "_action_space",
         "_ezpickle_args", "_ezpickle_kwargs", "render_mode", "class_attributes"}

try:  # MuJoCo envs: their MjData is state, their MjModel is static
    import mujoco

    _MJ_DATA, _MJ_STATIC = (mujoco.MjData,), (mujoco.MjModel,)
except ImportError:  # pragma: no cover - mujoco is a dependency
    _MJ_DATA, _MJ_STATIC = (), ()
_STATIC = (gym.Env, spaces.Space, VecEnv, th.nn.Module, *_MJ_STATIC)


def _layer_state(layer: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(layer).items() if k not in _SKIP and not isinstance(v, _STATIC)}


def _set_layer_state(layer: Any, state: dict[str, Any]) -> None:
    for key, value in state.items():
        current = getattr(layer, key, None)
        if _MJ_DATA and isinstance(current, _MJ_DATA):
            mujoco.mj_copyData(current, layer.model, value)
        else:
            setattr(layer, key, value)


def _env_layers(env: gym.Env) -> list[Any]:
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def _vec_layers(venv: VecEnv) -> list[VecEnv]:
    layers = [venv]
    while isinstance(layers[-1], VecEnvWrapper):
        layers.append(layers[-1].venv)
    if not isinstance(layers[-1], DummyVecEnv) and not hasattr(layers[-1], "get_state"):
        raise TypeError(f"exact resume needs a DummyVecEnv or a batched env (envs.batch) at the bottom of the env "
                        f"stack, got {type(layers[-1])}")
    return layers


def _vec_state(layer: VecEnv) -> dict[str, Any]:
    """A vector layer's state; a batched env (``envs.batch``) gives its own, every simulation's included."""
    return _layer_state(layer) if isinstance(layer, VecEnvWrapper | DummyVecEnv) else layer.get_state()


def _model_state(model: Any) -> dict[str, Any]:
    """A PPO model's ``MODEL_LIVE`` attributes; another learner's parts give their own (``live_state``)."""
    if hasattr(model, "live_state"):
        return model.live_state()
    return {k: getattr(model, k) for k in MODEL_LIVE if hasattr(model, k)}


def capture(models: dict[str, PPO], venv: VecEnv) -> dict[str, Any]:
    """The live state of ``models`` (by name) and of the env stack ``venv``, plus the global random states."""
    vec = _vec_layers(venv)
    return {
        "format": FORMAT,
        "rng": {"torch": th.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "models": {name: _model_state(m) for name, m in models.items()},
        "vec_layers": [(type(v).__name__, _vec_state(v)) for v in vec],
        "envs": [[(type(x).__name__, _layer_state(x)) for x in _env_layers(e)] for e in getattr(vec[-1], "envs", [])],
    }


def restore(state: dict[str, Any], models: dict[str, PPO], venv: VecEnv) -> None:
    """Write a ``capture`` back into a learner and env stack built from the same config."""
    if state.get("format") != FORMAT:
        raise ValueError(f"resume state format {state.get('format')!r}, this code reads {FORMAT}")
    vec = _vec_layers(venv)
    _check_layout("env stack", [n for n, _ in state["vec_layers"]], [type(v).__name__ for v in vec])
    if set(state["models"]) != set(models):
        raise ValueError(f"resume state has models {sorted(state['models'])}, the learner {sorted(models)}")
    envs = getattr(vec[-1], "envs", [])
    if len(state["envs"]) != len(envs):
        raise ValueError(f"resume state has {len(state['envs'])} envs, the env stack {len(envs)}")
    for layer, (_, values) in zip(vec, state["vec_layers"], strict=True):
        if isinstance(layer, VecEnvWrapper | DummyVecEnv):
            _set_layer_state(layer, values)
        else:
            layer.set_state(values)
    for env, saved in zip(envs, state["envs"], strict=True):
        layers = _env_layers(env)
        _check_layout("env wrappers", [n for n, _ in saved], [type(x).__name__ for x in layers])
        for layer, (_, values) in zip(layers, saved, strict=True):
            _set_layer_state(layer, values)
    for name, values in state["models"].items():
        if hasattr(models[name], "load_live_state"):
            models[name].load_live_state(values)
        else:
            models[name].__dict__.update(values)
    th.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])


def _check_layout(what: str, saved: list[str], built: list[str]) -> None:
    if saved != built:
        raise ValueError(f"resume state's {what} is {saved}, this config builds {built}")


def save(state: dict[str, Any], folder: Path, name: str = FILE) -> None:
    (Path(folder) / name).write_bytes(zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 1))


def load(folder: Path, name: str = FILE) -> dict[str, Any] | None:
    """The state saved in checkpoint ``folder``, None for a checkpoint from before exact resume."""
    path = Path(folder) / name
    if not path.exists():
        return None
    try:
        return pickle.loads(zlib.decompress(path.read_bytes()))
    except (zlib.error, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise ValueError(f"{path} is corrupt: {err}") from err
