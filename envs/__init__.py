"""Task distributions for MLSH, registered with gymnasium as ``mlsh/<Name>-v0`` on import."""

from gymnasium.envs.registration import register, registry

from envs.movement_bandits import MovementBanditsEnv

ENVS = {
    "mlsh/MovementBandits-v0": dict(entry_point="envs.movement_bandits:MovementBanditsEnv", max_episode_steps=50),
}

for _id, _kwargs in ENVS.items():
    if _id not in registry:
        register(id=_id, **_kwargs)

__all__ = ["ENVS", "MovementBanditsEnv"]
