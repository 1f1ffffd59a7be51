"""Task distributions for MLSH, registered with gymnasium as ``mlsh/<Name>-v0`` on import."""

from gymnasium.envs.registration import register, registry

from envs.movement_bandits import MovementBanditsEnv

ENVS = {
    "mlsh/MovementBandits-v0": dict(entry_point="envs.movement_bandits:MovementBanditsEnv", max_episode_steps=50),
    "mlsh/FourRooms-v0": dict(entry_point="envs.four_rooms:FourRoomsEnv", max_episode_steps=100),
    "mlsh/KeyDoor-v0": dict(entry_point="envs.key_door:KeyDoorEnv", max_episode_steps=100),
    "mlsh/AntTwoWalk-v0": dict(entry_point="envs.ant:AntTwoWalkEnv", max_episode_steps=1000),
    "mlsh/AntMaze-v0": dict(entry_point="envs.ant:AntMazeEnv", max_episode_steps=1000),
    "mlsh/AntObstacle-v0": dict(entry_point="envs.ant:AntObstacleEnv", max_episode_steps=2000),
    "mlsh/HumanoidWalkCrawl-v0": dict(entry_point="envs.humanoid:HumanoidWalkCrawlEnv", max_episode_steps=1000),
    "mlsh/HumanoidCourse-v0": dict(entry_point="envs.humanoid:HumanoidCourseEnv", max_episode_steps=3000),
}

for _id, _kwargs in ENVS.items():
    if _id not in registry:
        register(id=_id, **_kwargs)

__all__ = ["ENVS", "MovementBanditsEnv"]
